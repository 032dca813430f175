//! `harness run --hosts` (issue 18, part 2): a herd split over two hosts — this machine and a
//! network namespace the test makes, reached with `ip netns exec {name}` — with a generator on
//! each, their results merged into the run's. Each host keeps its processes' files in a folder of
//! its own, so the herd key, the workload and every result file cross a launcher both ways.
//!
//! Needs root (a namespace and a veth pair): CI runs as root. Anyone else sees it skipped, loudly.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use common::{read_result, skipped, temp_dir};
use harness::env::wan::netns::{self, Namespaces};
use herd_record::result::RunResult;

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

/// `harness run` of `style` at 400/s for 2 s placed by `hosts`: its result (in `dir`) and stderr.
fn run_on_hosts(style: &str, hosts: &Path, dir: &Path) -> (RunResult, String) {
    let output = dir.join("result.json");
    let out = common::harness_command()
        .args(["run", "--impl", style, "--load", "400", "--duration", "2s", "--warmup", "500ms"])
        .arg("--hosts")
        .arg(hosts)
        .arg("--output")
        .arg(&output)
        .output()
        .expect("harness runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    (read_result(&output), stderr)
}

#[test]
fn a_herd_on_two_hosts_with_a_generator_on_each() {
    if !netns::can_create() {
        skipped(
            "a_herd_on_two_hosts_with_a_generator_on_each",
            "it makes a network namespace for its second host, which needs root and iproute2 (CI runs as root)",
        );
        return;
    }
    let dir = temp_dir("hosts");
    let net = Namespaces::create(&["host2".to_owned()]).expect("a namespace");
    let m = net.members()[0].clone();
    let hosts = hosts_file(&dir, &m.ns, &m.root_ip.to_string(), &m.member_ip.to_string());
    let (r, stderr) = run_on_hosts("threadpool", &hosts, &dir);

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

/// An sshd of the test's own on a free loopback port, with keys made for it, and an ssh client
/// config that reaches it as host `loop` (root, key only, no host-key prompt). Stopped on drop.
struct Sshd {
    child: std::process::Child,
    config: PathBuf,
}

impl Sshd {
    /// `None` where this machine has no sshd or the test is not root (CI installs openssh-server
    /// and runs as root).
    fn start(dir: &Path) -> Option<Self> {
        let sshd = Path::new("/usr/sbin/sshd");
        if !sshd.exists() || !netns::can_create() {
            return None;
        }
        std::fs::create_dir_all(dir).expect("sshd folder");
        for key in ["host_key", "client_key"] {
            let _ = std::fs::remove_file(dir.join(key));
            let made = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", ""])
                .arg("-f")
                .arg(dir.join(key))
                .status()
                .expect("ssh-keygen runs");
            assert!(made.success(), "ssh-keygen made {key}");
        }
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).expect("authorized_keys");
        // The privilege separation folder sshd insists on (made by the package's service, which
        // does not run in a container).
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a port").local_addr().expect("addr").port();
        let d = dir.display();
        let server_config = dir.join("sshd_config");
        std::fs::write(
            &server_config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 UsePAM no\nStrictModes no\nPidFile {d}/sshd.pid\nLogLevel ERROR\n"
            ),
        )
        .expect("sshd_config");
        let config = dir.join("ssh_config");
        std::fs::write(
            &config,
            format!(
                "Host loop\n  HostName 127.0.0.1\n  Port {port}\n  User root\n  IdentityFile {d}/client_key\n  \
                 IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  BatchMode yes\n  \
                 LogLevel ERROR\n"
            ),
        )
        .expect("ssh_config");
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(&server_config)
            .stderr(std::fs::File::create(dir.join("sshd.log")).expect("sshd.log"))
            .spawn()
            .expect("sshd starts");
        let sshd = Self { child, config };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !Command::new("ssh")
            .arg("-F")
            .arg(&sshd.config)
            .args(["loop", "true"])
            .status()
            .is_ok_and(|s| s.success())
        {
            assert!(std::time::Instant::now() < deadline, "sshd did not let us in within 10 s: see {d}/sshd.log");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Some(sshd)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(needle))
        .collect()
}

#[test]
fn a_member_and_a_generator_over_ssh() {
    // The launcher the README shows, through a real sshd on loopback: `ssh -tt` hands a shell one
    // joined command line (words must be quoted) and gives the command a terminal (no end of stdin,
    // CR LF on the way back), and ending the local ssh must stop the server there.
    let dir = temp_dir("ssh");
    let Some(sshd) = Sshd::start(&dir.join("sshd")) else {
        skipped(
            "a_member_and_a_generator_over_ssh",
            "it runs an sshd of its own, which needs root and /usr/sbin/sshd (.ci/run installs openssh-server; CI runs as root)",
        );
        return;
    };
    let remote_dir = dir.join("over ssh");
    let hosts = dir.join("hosts.toml");
    std::fs::write(
        &hosts,
        format!(
            r#"
places = "here"
generators = ["loop"]
base_port = 17500

[[host]]
name = "here"
address = "127.0.0.1"
dir = "{here}"

[[host]]
name = "loop"
address = "127.0.0.1"
launcher = "ssh -tt -F {config} {{host}}"
dir = "{remote}"

[members]
Alford = "loop"
Ball = "here"
Hamilton = "here"
Holiday = "here"
Welsh = "here"
"#,
            here = dir.join("here").display(),
            config = sshd.config.display(),
            remote = remote_dir.display(),
        ),
    )
    .expect("hosts file");
    let (r, stderr) = run_on_hosts("event-handler", &hosts, &dir);

    // The generator's result file crossed the terminal back intact, and its load was answered.
    assert_eq!(r.summary.errors, 0, "{stderr}");
    assert!(r.summary.requests >= 700, "about 800 requests in 2 s: {}", r.summary.requests);
    assert_eq!(r.merged.as_ref().expect("merged from the generator").files, ["generator-0.json"]);
    // Alford ran behind ssh (the pid the harness holds is ssh's) and got the herd key through it:
    // its authenticated links carried floods both ways, and its counters came back.
    let placed = r.parameters.hosts.as_ref().expect("hosts recorded");
    let alford = placed.iter().find(|h| h.process == "Alford").expect("Alford placed");
    assert_eq!((alford.host.as_str(), alford.local_process), ("loop", false));
    let counters = r.servers.iter().find(|s| s.name == "Alford").and_then(|s| s.counters.as_ref()).expect("counters");
    assert!(counters.counters.values().sum::<u64>() > 0, "{counters:?}");
    assert!(r.propagation_us.as_ref().is_some_and(|p| p.count > 0), "floods crossed");
    // Ending the local ssh hung up Alford's terminal: no server is left behind on the host.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let needle = remote_dir.display().to_string();
    while !processes_with(&needle).is_empty() {
        assert!(std::time::Instant::now() < deadline, "left running: {:?}", processes_with(&needle));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    drop(sshd);
    let _ = std::fs::remove_dir_all(dir);
}
