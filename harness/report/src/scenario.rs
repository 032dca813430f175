//! REPORT.md's section on scenario runs: how each style went through each disturbance.

use herd_record::scenario::{RECOVERED_WITHIN, RECOVERY_HOLD};

use crate::collection::Loaded;

/// REPORT.md's section on scenario runs: one row per run and disturbance, styles in registry order
/// within each scenario.
pub fn report_section(runs: &[Loaded]) -> String {
    use std::fmt::Write as _;
    if runs.is_empty() {
        return "No scenario runs in these results (`scripts/scenarios.sh` makes them).\n".to_owned();
    }
    let order: Vec<String> =
        herd_record::catalogue::styles().map(|all| all.into_iter().map(|m| m.name).collect()).unwrap_or_default();
    let rank = |name: &str| order.iter().position(|n| n == name).unwrap_or(order.len());
    let mut runs: Vec<&Loaded> = runs.iter().collect();
    runs.sort_by_key(|l| {
        let s = l.result.scenario.as_ref().map(|s| (s.name.clone(), s.base_rps.map(|b| b as u64)));
        (s, rank(&l.result.implementation.name))
    });
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Each disturbance: the p99 of the 2 s before it, the worst 100 ms step's p99 from its start until recovered, \
         the time from its end until p99 was back within {RECOVERED_WITHIN}× the level before and stayed there \
         {} ms, requests failed and replies late (over the scenario's objective) from its start until then, \
         goodput (replies within the objective per second) while it lasted, and the servers' RSS summed, before \
         and at its peak. `overload`: offered and achieved in the overload phase, and Jain's fairness over \
         connections there. `crash`: failures on connections to the other members, and the time from the restart \
         until the restarted member's connections had no failure for 1 s.\n",
        RECOVERY_HOLD.as_millis()
    );
    let _ = writeln!(
        out,
        "| scenario | style | --load | disturbance | offered → achieved/s | p99 before | worst p99 | recovered after | failed | late | goodput/s | fairness | RSS MiB before → peak | other members' failures | converged after | generator behind |"
    );
    let _ = writeln!(out, "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    let us = |v: u64| {
        if v >= 1_000_000 {
            format!("{:.2} s", v as f64 / 1e6)
        } else if v >= 1000 {
            format!("{:.1} ms", v as f64 / 1e3)
        } else {
            format!("{v} µs")
        }
    };
    for l in runs {
        let Some(s) = &l.result.scenario else { continue };
        let behind = l.result.send_lag.as_ref().is_some_and(|lag| lag.fell_behind);
        for r in &s.recovery {
            let phase = s.phases.iter().find(|p| p.start_ms == r.start_ms && r.disturbance.starts_with("overload"));
            let until = r.end_ms + r.recovered_after_ms.unwrap_or(u64::MAX / 2);
            let worst =
                s.steps.iter().filter(|st| st.at_ms >= r.start_ms && st.at_ms < until).map(|st| st.p99_us).max();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {} | {:.0} → {:.0} | {} | {} | {} |",
                s.name,
                l.result.implementation.name,
                l.result.parameters.load,
                r.disturbance,
                phase.map_or_else(|| "–".to_owned(), |p| format!("{:.0} → {:.0}", p.offered_rps, p.achieved_rps)),
                r.baseline_p99_us.map_or_else(|| "–".to_owned(), us),
                worst.map_or_else(|| "–".to_owned(), us),
                r.recovered_after_ms
                    .map_or_else(|| "not in the window".to_owned(), |v| format!("{:.1} s", v as f64 / 1e3)),
                r.failed,
                r.late,
                r.goodput_rps,
                r.fairness.map_or_else(|| "–".to_owned(), |f| format!("{f:.3}")),
                r.rss_before_kib as f64 / 1024.0,
                r.rss_peak_kib as f64 / 1024.0,
                r.errors_on_others.map_or_else(|| "–".to_owned(), |v| v.to_string()),
                r.converged_after_ms.map_or_else(|| "–".to_owned(), |v| format!("{:.1} s", v as f64 / 1e3)),
                if behind { "yes" } else { "no" },
            );
        }
    }
    out
}
