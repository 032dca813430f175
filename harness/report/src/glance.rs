//! "At a glance": the first section of a generated report — for each experiment, which style did
//! best at what (cost at the lightest load, latency at the heaviest, the capacity knee, memory), by
//! how much the next and the last trailed, from the medians of the runs whose generator kept up.
//! REPORT.md writes its own answer, with its checks; a run's report.md and its HTML page start here.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::collection::{Key, Row};
use crate::knees::Knee;

/// The section's Markdown: one table of needs per experiment (workload, connections, threads,
/// pinning) that two or more styles ran.
pub fn section(rows: &[Row], knees: &[Knee]) -> String {
    let mut groups: BTreeMap<Key, Vec<&Row>> = BTreeMap::new();
    for r in rows {
        groups.entry(r.key.group()).or_default().push(r);
    }
    let mut out = String::new();
    for (group, rows) in &groups {
        let mut lines = Vec::new();
        let mut loads: Vec<f64> = rows.iter().filter_map(|r| r.m.offered_rps).collect();
        loads.sort_by(f64::total_cmp);
        loads.dedup();
        let shared: Vec<f64> = loads.iter().copied().filter(|l| at(rows, Some(*l)).len() >= 2).collect();
        type Metric = fn(&Row) -> f64;
        let needs: [(&str, Option<f64>, Metric, &str); 3] = [
            ("cost: server CPU per request", shared.first().copied(), |r| r.m.cpu_us_per_request, "µs"),
            ("memory: RSS of all servers", shared.first().copied(), |r| r.m.rss_mib, "MiB"),
            ("tail: p99", shared.last().copied(), |r| r.m.p99_us, "µs"),
        ];
        for (need, load, metric, unit) in needs {
            let Some(load) = load else { continue };
            if let Some(line) = ranked(&at(rows, Some(load)), metric, unit, false) {
                lines.push(format!("| {need}, at {} | {line} |", rate(load)));
            }
        }
        if shared.is_empty()
            && let Some(line) = ranked(&at(rows, None), |r| r.m.achieved_rps, "/s", true)
        {
            lines.push(format!("| throughput, closed loop | {line} |"));
        }
        let mut ks: Vec<&Knee> = knees
            .iter()
            .filter(|k| k.workload == group.workload && k.connections == group.connections)
            .filter(|k| (k.threads, k.pinned) == (group.threads, group.pinned))
            .collect();
        if ks.len() >= 2 {
            ks.sort_by(|a, b| b.knee_rps.unwrap_or(0.0).total_cmp(&a.knee_rps.unwrap_or(0.0)));
            let name = |k: &Knee| format!("{} {}", k.implementation, k.knee_rps.map_or("none".into(), rate));
            let (best, next, last) = (ks[0], ks[1], ks[ks.len() - 1]);
            lines.push(format!(
                "| capacity knee (highest load held) | {} | {} | {} |",
                name(best),
                name(next),
                name(last)
            ));
        }
        if lines.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "**{}** ({} connections, threads {}):\n",
            group.workload,
            group.connections,
            group.threads_label()
        );
        let _ = writeln!(out, "| need | best | next | last |\n|---|---|---|---|");
        for line in lines {
            let _ = writeln!(out, "{line}");
        }
        out.push('\n');
    }
    if out.is_empty() {
        return "Fewer than two styles in every experiment: nothing to rank.\n".into();
    }
    out.insert_str(
        0,
        "Medians over rounds, runs whose generator fell behind left out; \"next\" and \"last\" as a multiple of the best. \
         The tables below have every figure.\n\n",
    );
    out
}

/// The rows at offered load `load` (`None`: closed loop).
fn at<'a>(rows: &[&'a Row], load: Option<f64>) -> Vec<&'a Row> {
    rows.iter().copied().filter(|r| r.m.offered_rps == load).collect()
}

/// `best value | next ×r | last ×r`, the lowest first (the highest with `higher`); `None` with
/// fewer than two values.
fn ranked(rows: &[&Row], metric: fn(&Row) -> f64, unit: &str, higher: bool) -> Option<String> {
    let mut v: Vec<(&str, f64)> =
        rows.iter().map(|r| (r.key.implementation.as_str(), metric(r))).filter(|(_, x)| x.is_finite()).collect();
    if v.len() < 2 {
        return None;
    }
    v.sort_by(|a, b| if higher { b.1.total_cmp(&a.1) } else { a.1.total_cmp(&b.1) });
    let (best, next, last) = (v[0], v[1], v[v.len() - 1]);
    let ratio = |x: f64| if best.1 != 0.0 { format!("{:.2}×", x / best.1) } else { "–".into() };
    let value = match unit {
        "µs" if best.1 >= 10_000.0 => format!("{:.1} ms", best.1 / 1000.0),
        "/s" => rate(best.1),
        _ => format!("{} {unit}", number(best.1)),
    };
    Some(format!("{} {value} | {} {} | {} {}", best.0, next.0, ratio(next.1), last.0, ratio(last.1)))
}

fn number(v: f64) -> String {
    if v >= 100.0 { format!("{v:.0}") } else { format!("{v:.1}") }
}

fn rate(v: f64) -> String {
    if v >= 1000.0 { format!("{}k/s", number(v / 1000.0).trim_end_matches(".0")) } else { format!("{v:.0}/s") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collection::Metrics;

    fn row(style: &str, offered: f64, cpu: f64, p99: f64) -> Row {
        let r = Row::example(style, offered);
        let m = Metrics { cpu_us_per_request: cpu, p99_us: p99, p999_us: p99, max_us: p99, rss_mib: 10.0, ..r.m };
        Row { m, spread: m, ..r }
    }

    #[test]
    fn the_cheapest_at_the_lightest_load_and_the_fastest_at_the_heaviest() {
        let rows = [
            row("a", 1000.0, 200.0, 900.0),
            row("b", 1000.0, 300.0, 800.0),
            row("c", 1000.0, 500.0, 700.0),
            row("a", 9000.0, 100.0, 5000.0),
            row("b", 9000.0, 100.0, 2000.0),
        ];
        let text = section(&rows, &[]);
        assert!(text.contains("| cost: server CPU per request, at 1k/s | a 200 µs | b 1.50× | c 2.50× |"), "{text}");
        assert!(text.contains("| tail: p99, at 9k/s | b 2000 µs | a 2.50× | a 2.50× |"), "{text}");
        let closed = |style: &str, achieved: f64| {
            let r = row(style, 0.0, 1.0, 1.0);
            Row { m: Metrics { offered_rps: None, achieved_rps: achieved, ..r.m }, ..r }
        };
        let text = section(&[closed("two-stage", 200_000.0), closed("thread-per-request", 50_000.0)], &[]);
        assert!(text.contains("| throughput, closed loop | two-stage 200k/s | thread-per-request 0.25× |"), "{text}");
        assert_eq!(section(&rows[..1], &[]), "Fewer than two styles in every experiment: nothing to rank.\n");
    }
}
