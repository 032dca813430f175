//! `harness run --hosts` (issue 18, part 2): a herd split over two hosts — this machine and a
//! network namespace the test makes, reached with `ip netns exec {name}` — with a generator on
//! each, their results merged into the run's. Each host keeps its processes' files in a folder of
//! its own, so the herd key, the workload and every result file cross a launcher both ways.
//!
//! Needs root (a namespace and a veth pair): CI runs as root. Anyone else sees it skipped, loudly.

use std::path::{Path, PathBuf};
use std::process::Command;

use harness::result::RunResult;
use harness::wan::netns::{self, Namespaces};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("herdbench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn hosts_file(dir: &Path, ns: &str, here_ip: &str, ns_ip: &str) -> PathBuf {
    let text = format!(
        r#"
places = "here"
generators = ["here", "{ns}"]
base_port = 17400

[[host]]
name = "here"
address = "{here_ip}"
dir = "{here_dir}"

[[host]]
name = "{ns}"
address = "{ns_ip}"
launcher = "ip netns exec {{name}}"
dir = "{ns_dir}"

[members]
Alford = "{ns}"
Ball = "{ns}"
Hamilton = "here"
Holiday = "here"
Welsh = "here"
"#,
        here_dir = dir.join("here").display(),
        ns_dir = dir.join("ns").display(),
    );
    let path = dir.join("hosts.toml");
    std::fs::write(&path, text).expect("hosts file");
    path
}

#[test]
fn a_herd_on_two_hosts_with_a_generator_on_each() {
    if !netns::can_create() {
        eprintln!(
            "\n*** SKIPPED a_herd_on_two_hosts_with_a_generator_on_each: it makes a network namespace for its second \
             host, which needs root and iproute2 (CI runs as root) ***\n"
        );
        return;
    }
    let dir = temp_dir("hosts");
    let net = Namespaces::create(&["host2".to_owned()]).expect("a namespace");
    let m = net.members()[0].clone();
    let hosts = hosts_file(&dir, &m.ns, &m.root_ip.to_string(), &m.member_ip.to_string());
    let output = dir.join("result.json");
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["run", "--impl", "threadpool", "--load", "400", "--duration", "2s", "--warmup", "500ms"])
        .arg("--hosts")
        .arg(&hosts)
        .arg("--output")
        .arg(&output)
        .output()
        .expect("harness runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let r: RunResult = serde_json::from_str(&std::fs::read_to_string(&output).expect("a result")).expect("parses");

    // Two generators' halves of one 400/s load, merged into the run's result.
    assert_eq!(r.summary.errors, 0, "{stderr}");
    assert_eq!(r.summary.offered_rps, Some(400.0));
    assert!(r.summary.requests >= 700, "about 800 requests in 2 s: {}", r.summary.requests);
    let merged = r.merged.as_ref().expect("merged from the generators");
    assert_eq!(merged.files, ["generator-0.json", "generator-1.json"]);
    assert!(merged.start_spread_s < 0.5, "one start time: {}", merged.start_spread_s);

    // Where everything ran, as recorded: exec launchers, so the pids were the programs'.
    let placed = r.parameters.hosts.as_ref().expect("hosts recorded");
    let host_of = |process: &str| {
        let h = placed.iter().find(|h| h.process == process).unwrap_or_else(|| panic!("{process} in {placed:?}"));
        assert!(h.local_process, "{process}: ip netns exec and a direct start run the program itself");
        h.host.clone()
    };
    assert_eq!(host_of("Alford"), m.ns);
    assert_eq!(host_of("Welsh"), "here");
    assert_eq!(host_of("places"), "here");
    assert_eq!(host_of("generator-1"), m.ns);
    let alford = placed.iter().find(|h| h.process == "Alford").expect("Alford");
    assert_eq!(alford.launcher, ["ip", "netns", "exec", m.ns.as_str()]);
    assert_eq!(alford.address.to_string(), m.member_ip.to_string());

    // Each server wrote its counters on its host; they came back, floods included (Alford's
    // neighbours Hamilton and Welsh are on the other host).
    assert_eq!(r.servers.len(), 5);
    for s in &r.servers {
        let counters = s.counters.as_ref().unwrap_or_else(|| panic!("{}'s counters fetched", s.name));
        assert!(counters.counters.values().sum::<u64>() > 0, "{}: {counters:?}", s.name);
        assert_eq!(s.resources.exit, "exited 0", "{} stopped gracefully", s.name);
    }
    assert!(r.propagation_us.as_ref().is_some_and(|p| p.count > 0), "floods crossed between the hosts");
    let written_there = std::fs::read_dir(dir.join("ns")).expect("the namespace host's folder").count();
    assert_eq!(written_there, 1, "one run folder on the second host");
    drop(net);
    let _ = std::fs::remove_dir_all(dir);
}
