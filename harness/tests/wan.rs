//! A WAN herd on one machine (issue 18, part 4): five members in network namespaces of their own,
//! every flood link through a 10 ms relay, driven by two generators that share one schedule; their
//! results merge, and the flood propagation the servers measured shows the links' delay.
//!
//! Needs root (namespaces and veth pairs): CI runs as root. Anyone else sees it skipped, loudly.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

mod common;

use common::{read_result, skipped, temp_dir};
use harness::env::herd::{Herd, HerdSpec};
use harness::env::wan::{WanSpec, netns};
use herd_record::result::{Latency, ServerCounters};

const LINK_DELAY: Duration = Duration::from_millis(10);

fn namespaces() -> String {
    let out = Command::new(netns::ip_path().expect("ip")).args(["netns", "list"]).output().expect("ip netns list");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_wan_herd_driven_by_two_generators_merges_and_shows_the_link_delay() {
    if !netns::can_create() {
        skipped(
            "a_wan_herd_driven_by_two_generators_merges_and_shows_the_link_delay",
            "it puts herd members in network namespaces, which needs root and iproute2 (CI runs as root)",
        );
        return;
    }
    let dir = temp_dir("wan");
    let logs = dir.join("logs");
    let spec = HerdSpec {
        wan: Some(WanSpec::links(LINK_DELAY)),
        ..HerdSpec::new(env!("CARGO_BIN_EXE_harness"), "threadpool", &logs)
    };
    let mut herd = Herd::start(spec, &AtomicBool::new(false)).expect("a WAN herd starts");
    let made: Vec<String> = herd.wan_record().expect("a WAN herd").0.namespaces;
    let listed = namespaces();
    assert!(made.iter().all(|ns| listed.contains(ns.as_str())), "{made:?} in {listed}");
    for s in herd.servers() {
        assert!(s.addr.ip().to_string().starts_with("10.201."), "{} listens in its namespace: {}", s.name, s.addr);
    }
    herd.wait_linked(Duration::from_secs(2)).expect("the flood links come up through the relays");

    // Two generators, each half of one 400 requests/s schedule, from one start time.
    let addrs: Vec<String> = herd.servers().iter().map(|s| s.addr.to_string()).collect();
    let start_at = (chrono::Utc::now() + chrono::Duration::milliseconds(1500)).to_rfc3339();
    let generator = |slice: &str, out: &Path| -> std::io::Result<Output> {
        let mut cmd = common::harness_command();
        cmd.args(["load", "--workload", "herd-update", "--connections", "5", "--load", "400"]);
        for a in &addrs {
            cmd.args(["--addr", a]);
        }
        cmd.args(["--slice", slice, "--start-at", &start_at, "--duration", "2s", "--warmup", "500ms"]);
        cmd.arg("--output").arg(out).output()
    };
    let (a, b, merged) = (dir.join("a.json"), dir.join("b.json"), dir.join("merged.json"));
    let (first, second) = std::thread::scope(|scope| {
        let first = scope.spawn(|| generator("0/2", &a));
        let second = generator("1/2", &b);
        (first.join().expect("thread").expect("runs"), second.expect("runs"))
    });
    for out in [&first, &second] {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let out = common::harness_command()
        .args(["merge", a.to_str().expect("utf-8"), b.to_str().expect("utf-8"), "--output"])
        .arg(&merged)
        .output()
        .expect("merge runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stopped = herd.stop(Duration::from_secs(3));
    assert!(stopped.iter().all(|(_, r)| r.exit == "exited 0"), "graceful stop: {stopped:?}");
    let relay = herd.wan_record().expect("a WAN herd").1;
    drop(herd);
    let listed = namespaces();
    assert!(made.iter().all(|ns| !listed.contains(ns.as_str())), "{made:?} removed, left: {listed}");

    let (ra, rb, m) = (read_result(&a), read_result(&b), read_result(&merged));
    assert_eq!(ra.summary.errors + rb.summary.errors + m.summary.errors, 0);
    assert!(ra.summary.requests > 0 && rb.summary.requests > 0);
    assert_eq!(m.summary.requests, ra.summary.requests + rb.summary.requests, "merged counts are the sum");
    assert_eq!(m.commands["iamat"].count, ra.commands["iamat"].count + rb.commands["iamat"].count);
    assert_eq!(m.summary.offered_rps, Some(400.0), "two halves of one load");

    // Every member measured the floods it received: each crossed at least one 10 ms link.
    let mut parts = Vec::new();
    for name in ["Alford", "Ball", "Hamilton", "Holiday", "Welsh"] {
        let path = logs.join(format!("{name}.stats.json"));
        let counters: ServerCounters =
            serde_json::from_slice(&std::fs::read(&path).expect("stats written at exit")).expect("counters");
        parts.push(counters.propagation_us.unwrap_or_else(|| panic!("{name} measured no flood")));
    }
    let propagation = Latency::sum(parts.iter()).expect("same bounds");
    let p = &propagation.percentiles_us;
    let floor = LINK_DELAY.as_micros() as u64;
    assert!(p.p50 >= floor, "propagation p50 {} µs under the 10 ms link delay: {p:?}", p.p50);
    let least = propagation.histogram().expect("histogram").min();
    assert!(least >= floor, "every flood crossed a link of 10 ms; the quickest took {least} µs");
    assert!(relay.chunks > 0 && relay.held_as_lost == 0, "{relay:?}");
    let o = relay.overhead.expect("measured at start");
    eprintln!(
        "WAN herd, 10 ms links: propagation µs p50 {} p99 {} (n {}); relay at 0 ms: round trip p50 {:.1} µs \
         (direct {:.1}), CPU {:.1} µs per relayed round trip; relays used {:.3} s CPU for {} chunks",
        p.p50,
        p.p99,
        propagation.count,
        o.relayed_p50_us,
        o.direct_p50_us,
        o.relay_cpu_us_per_round_trip,
        relay.cpu_s,
        relay.chunks
    );
    let _ = std::fs::remove_dir_all(dir);
}
