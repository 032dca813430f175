//! The table printed at the end of a run.

use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};

use crate::result::{Percentiles, RunResult};

pub fn print(r: &RunResult) {
    let s = &r.summary;
    let offered = s.offered_rps.map_or("max (closed loop)".to_owned(), |o| format!("{o:.0}/s"));
    eprintln!();
    eprintln!(
        "{} · {} · offered {offered} · achieved {:.0}/s · {} errors",
        r.implementation.name, r.workload.name, s.achieved_rps, s.errors
    );
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
    eprintln!("{latency}");
    if let Some(lag) = r.send_lag.as_ref().filter(|l| l.fell_behind) {
        eprintln!("{}", crate::load::send_lag_line(lag));
    }

    let errors: Vec<String> = r.errors.iter().filter(|(_, n)| **n > 0).map(|(k, n)| format!("{k} {n}")).collect();
    if !errors.is_empty() {
        eprintln!("errors: {}", errors.join(", "));
    }

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
    eprintln!("{servers}");
}
