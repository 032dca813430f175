//! The table printed at the end of a run.

use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};

use herd_record::result::{FELL_BEHIND_P99_US, Percentiles, RunResult, SendLag};

/// Prints `r`'s summary to stderr: a headline, the latency by command, errors, and what each
/// process cost.
pub fn print(r: &RunResult) {
    let s = &r.summary;
    let offered = s.offered_rps.map_or("max (closed loop)".to_owned(), |o| format!("{o:.0}/s"));
    eprintln!();
    eprintln!(
        "{} · {} · offered {offered} · achieved {:.0}/s · {} errors",
        r.implementation.name, r.workload.name, s.achieved_rps, s.errors
    );
    eprintln!("{}", latency_table(r));
    if let Some(lag) = r.send_lag.as_ref().filter(|l| l.fell_behind) {
        eprintln!("{}", send_lag_line(lag));
    }

    let errors: Vec<String> = r.errors.iter().filter(|(_, n)| **n > 0).map(|(k, n)| format!("{k} {n}")).collect();
    if !errors.is_empty() {
        eprintln!("errors: {}", errors.join(", "));
    }

    eprintln!("{}", process_table(r));
    if let Some(scenario) = &r.scenario {
        print_scenario(scenario);
    }
}

/// Latency percentiles by command, over all, and of the flood, send lag and connects measured.
fn latency_table(r: &RunResult) -> Table {
    let s = &r.summary;
    let mut latency = Table::new();
    latency.load_style(UTF8_FULL_CONDENSED);
    latency.set_header(["command", "count", "p50 µs", "p90 µs", "p99 µs", "p99.9 µs", "p99.99 µs", "max µs"]);
    let row = |name: &str, count: u64, p: &Percentiles| {
        let mut cells = vec![Cell::new(name), Cell::new(count)];
        for v in [p.p50, p.p90, p.p99, p.p999, p.p9999, p.max] {
            cells.push(Cell::new(v).set_alignment(CellAlignment::Right));
        }
        cells
    };
    for (name, l) in &r.commands {
        latency.add_row(row(name, l.count, &l.percentiles_us));
    }
    latency.add_row(row("all", s.requests, &s.latency_us));
    if let Some(p) = &r.propagation_us {
        latency.add_row(row("flood propagation", p.count, &p.percentiles_us));
    }
    if let Some(lag) = &r.send_lag {
        latency.add_row(row("send lag: generator", lag.own_us.count, &lag.own_us.percentiles_us));
        latency.add_row(row("send lag: socket wait", lag.socket_wait_us.count, &lag.socket_wait_us.percentiles_us));
    }
    if let Some(c) = &r.connect_us {
        latency.add_row(row("connect", c.count, &c.percentiles_us));
    }
    latency
}

/// CPU, memory, threads, requests and floods of every server, and the places backend's.
fn process_table(r: &RunResult) -> Table {
    let mut servers = Table::new();
    servers.load_style(UTF8_FULL_CONDENSED);
    servers.set_header([
        "process",
        "CPU user s",
        "CPU sys s",
        "peak RSS MiB",
        "threads",
        "requests",
        "floods out",
        "floods dropped",
        "evicted",
        "exit",
    ]);
    for srv in &r.servers {
        let c = srv.counters.as_ref().map(|c| &c.counters);
        let get = |k: &str| c.and_then(|c| c.get(k)).copied().unwrap_or(0);
        let requests = get("iamat") + get("whatsat") + get("invalid") + get("echo");
        let res = &srv.resources;
        servers.add_row([
            srv.name.clone(),
            format!("{:.2}", res.cpu_user_s),
            format!("{:.2}", res.cpu_sys_s),
            format!("{:.1}", res.peak_rss_kib as f64 / 1024.0),
            res.max_threads.to_string(),
            requests.to_string(),
            get("floods_out").to_string(),
            get("floods_dropped").to_string(),
            get("store_evictions").to_string(),
            res.exit.clone(),
        ]);
    }
    if let Some(p) = &r.places {
        servers.add_row([
            "places".to_owned(),
            format!("{:.2}", p.cpu_user_s),
            format!("{:.2}", p.cpu_sys_s),
            format!("{:.1}", p.peak_rss_kib as f64 / 1024.0),
            p.max_threads.to_string(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            p.exit.clone(),
        ]);
    }
    servers
}

/// A scenario's phases, what it did when, and how the run recovered from each disturbance.
fn print_scenario(s: &herd_record::scenario::ScenarioRecord) {
    let ms = |v: Option<u64>| v.map_or_else(|| "not done".to_owned(), |v| format!("{:.1} s", v as f64 / 1000.0));
    eprintln!("scenario {}: {}", s.name, s.description);
    for e in &s.events {
        let failed = e.error.as_deref().map(|e| format!(" (failed: {e})")).unwrap_or_default();
        eprintln!(
            "  {} {}: {} … {}{failed}",
            e.action,
            e.member.as_deref().unwrap_or(""),
            ms(e.done_ms[0]),
            ms(e.done_ms[1])
        );
    }
    let objective = format!("goodput (≤ {} ms)/s", s.objective_us as f64 / 1000.0);
    let mut phases = Table::new();
    phases.load_style(UTF8_FULL_CONDENSED);
    phases.set_header(["phase", "from s", "offered/s", "achieved/s", objective.as_str(), "fairness"]);
    for p in &s.phases {
        phases.add_row([
            p.name.clone(),
            format!("{:.1}", p.start_ms as f64 / 1000.0),
            format!("{:.0}", p.offered_rps),
            format!("{:.0}", p.achieved_rps),
            format!("{:.0}", p.goodput_rps),
            p.fairness.map_or_else(String::new, |f| format!("{f:.3}")),
        ]);
    }
    eprintln!("{phases}");
    let mut recovery = Table::new();
    recovery.load_style(UTF8_FULL_CONDENSED);
    recovery.set_header([
        "disturbance",
        "p99 before µs",
        "recovered after",
        "failed",
        "late",
        "goodput/s",
        "RSS before → peak MiB",
        "converged after",
    ]);
    for r in &s.recovery {
        recovery.add_row([
            r.disturbance.clone(),
            r.baseline_p99_us.map_or_else(String::new, |v| v.to_string()),
            r.recovered_after_ms.map_or_else(|| "not in the window".to_owned(), |v| format!("{v} ms")),
            r.failed.to_string(),
            r.late.to_string(),
            format!("{:.0}", r.goodput_rps),
            format!("{:.1} → {:.1}", r.rss_before_kib as f64 / 1024.0, r.rss_peak_kib as f64 / 1024.0),
            r.converged_after_ms.map_or_else(String::new, |v| format!("{v} ms")),
        ]);
    }
    eprintln!("{recovery}");
}

/// One line on how the generator kept its schedule, with a warning when it fell behind.
pub fn send_lag_line(lag: &SendLag) -> String {
    let (own, wait) = (&lag.own_us.percentiles_us, &lag.socket_wait_us.percentiles_us);
    let line = format!(
        "send lag µs: generator's own p50 {} p99 {} max {}; socket wait (back-pressure) p50 {} p99 {} max {}",
        own.p50, own.p99, own.max, wait.p50, wait.p99, wait.max
    );
    if lag.fell_behind {
        format!(
            "{line}\nWARNING: the generator fell behind its own schedule (own lateness p99 {} µs > {} µs): part of \
             this latency is the generator's; knees and compare leave this run out (give it more CPU, \
             --gen-threads, or a lower --load)",
            own.p99, FELL_BEHIND_P99_US
        )
    } else {
        line
    }
}
