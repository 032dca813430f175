//! `harness run --hosts FILE`: each part of a run on a host of its own — herd members, the places
//! backend, the load generators — reached through a launcher the user already has (`ssh`, `ip netns
//! exec`), running the same `harness` binary there. No agent protocol: a launcher is a command put
//! before a command line, and everything the harness does on a host is a command line.
//!
//! ```toml
//! [[host]]
//! name = "db1"                  # `{name}` (or `{host}`) in the launcher
//! address = "192.0.2.10"        # where the other hosts (and this one) reach its processes
//! launcher = "ssh -tt {host}"   # put before `harness …`; "" (the default) runs it here
//! dir = "/tmp/herdbench"        # its processes' files: each run makes a folder inside
//! harness = "/usr/local/bin/harness"  # the binary there (default: this binary's path)
//!
//! [[host]]
//! name = "db2"
//! address = "192.0.2.11"
//! launcher = "ssh -tt {host}"
//!
//! places = "db1"                # the places backend's host
//! generators = ["db1", "db2"]   # one generator per entry, each a slice of one schedule (default:
//!                               # the generator runs inside this process)
//! base_port = 7400              # places on it, the members on the ports after it
//!
//! [members]                     # every member of the topology, on a host
//! Alford = "db1"
//! Ball = "db2"
//! ```
//!
//! What runs where, for one run labelled `<label>` (the logs folder's name):
//!
//! ```text
//!  <launcher> sh -c 'mkdir -p … | base64 -d > …' … <base64>   ◄─ the herd key, the workload
//!  <launcher> <harness> places --listen <address>:<base_port>
//!  <launcher> <harness> serve … --listen <address>:<port> --peer …  --log/--stats in <dir>/<label>
//!  <launcher> <harness> load --slice k/n --start-at T --output <dir>/<label>/generator-k.json
//!  <launcher> base64 <dir>/<label>/<file>                  ─► the local logs folder, then merged
//! ```
//!
//! Files cross as base64 in arguments and output, never on stdin: `ssh -tt` gives the command a
//! terminal, which never passes on the end of stdin, reads control characters and turns newlines
//! into CR LF. A launcher whose program is `ssh` hands the rest of its command line to a shell
//! there, joined by spaces, so every word after it is quoted for that shell ([`Remote::shell`]).
//!
//! Processes are stopped by signalling the launcher's process: `ip netns exec` execs the command,
//! so the signal reaches the server itself; `ssh -tt` gives the remote command a terminal, which
//! hangs up (SIGHUP, a graceful stop for `serve`) when the local ssh ends. What the harness reads
//! from `/proc` — CPU, memory, threads, context switches, `--syscalls` — is of the local process:
//! the server's own with an exec launcher on this kernel, the launcher's otherwise, and the result
//! says which ([`HostRecord::local_process`]).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use herd_record::hosts::HostRecord;

/// The hosts file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostsFile {
    #[serde(rename = "host")]
    hosts: Vec<Host>,
    places: String,
    #[serde(default)]
    generators: Vec<String>,
    #[serde(default = "default_base_port")]
    base_port: u16,
    members: BTreeMap<String, String>,
}

fn default_base_port() -> u16 {
    7400
}

fn default_dir() -> PathBuf {
    PathBuf::from("/tmp/herdbench")
}

/// One host: where it is and how to run a command there.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    pub name: String,
    pub address: IpAddr,
    /// A command template put before `harness …` (`{name}`, `{host}`, `{address}` filled in);
    /// empty: this machine.
    #[serde(default)]
    pub launcher: String,
    /// Its processes' files go in a folder inside (one per run).
    #[serde(default = "default_dir")]
    pub dir: PathBuf,
    /// The `harness` binary there (default: this binary's path).
    pub harness: Option<PathBuf>,
}

/// A hosts file, checked against the herd it places.
#[derive(Debug, Clone)]
pub struct Placement {
    hosts: Vec<Host>,
    places: usize,
    generators: Vec<usize>,
    base_port: u16,
    members: BTreeMap<String, usize>,
}

impl Placement {
    /// Reads `path` and checks it places exactly the members `servers`.
    pub fn load(path: &Path, servers: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading hosts file {}", path.display()))?;
        let file: HostsFile = toml::from_str(&text).with_context(|| {
            format!("{} is not a hosts file (see `harness run --help` and harness/src/env/hosts.rs)", path.display())
        })?;
        Self::new(file, servers).with_context(|| format!("in {}", path.display()))
    }

    fn new(file: HostsFile, servers: &[String]) -> Result<Self> {
        let mut names = BTreeSet::new();
        for host in &file.hosts {
            if !names.insert(host.name.as_str()) {
                bail!("two hosts are named {:?}: give each its own name", host.name);
            }
            words(&host.launcher, host)?;
        }
        let index = |name: &str, what: &str| {
            file.hosts.iter().position(|h| h.name == name).with_context(|| {
                format!("{what} is placed on host {name:?}, which no [[host]] names (hosts: {})", list(&names))
            })
        };
        let places = index(&file.places, "places")?;
        let generators = file.generators.iter().map(|g| index(g, "a generator")).collect::<Result<Vec<_>>>()?;
        let mut members = BTreeMap::new();
        for (member, host) in &file.members {
            if !servers.contains(member) {
                bail!("[members] places {member}, which is not in the herd's topology ({})", servers.join(", "));
            }
            members.insert(member.clone(), index(host, member)?);
        }
        if let Some(missing) = servers.iter().find(|s| !members.contains_key(*s)) {
            bail!("[members] does not place {missing}: add `{missing} = \"<host>\"`");
        }
        let last = usize::from(file.base_port) + servers.len();
        if file.base_port == 0 || last > usize::from(u16::MAX) {
            bail!(
                "base_port {} leaves no room for places and {} members: pick one in 1024..60000",
                file.base_port,
                servers.len()
            );
        }
        Ok(Self { hosts: file.hosts, places, generators, base_port: file.base_port, members })
    }

    /// The places backend's host and address.
    pub fn places(&self) -> (Remote, SocketAddr) {
        let host = &self.hosts[self.places];
        (self.remote(self.places), SocketAddr::new(host.address, self.base_port))
    }

    /// Member `name` (the `i`-th of the herd's servers): its host and the address it listens on.
    pub fn member(&self, name: &str, i: usize) -> Result<(Remote, SocketAddr)> {
        let &h = self.members.get(name).with_context(|| format!("the hosts file does not place {name}"))?;
        let port = self.base_port + 1 + u16::try_from(i).context("too many members")?;
        Ok((self.remote(h), SocketAddr::new(self.hosts[h].address, port)))
    }

    /// The generators' hosts, in slice order (empty: the generator runs in this process).
    pub fn generators(&self) -> Vec<Remote> {
        self.generators.iter().map(|&h| self.remote(h)).collect()
    }

    fn remote(&self, h: usize) -> Remote {
        let host = &self.hosts[h];
        Remote {
            host: host.name.clone(),
            address: host.address,
            prefix: words(&host.launcher, host).expect("checked when loaded").into_iter().map(OsString::from).collect(),
            harness: host.harness.clone(),
            dir: host.dir.clone(),
        }
    }
}

fn list(names: &BTreeSet<&str>) -> String {
    names.iter().copied().collect::<Vec<_>>().join(", ")
}

/// A launcher template's words with `{name}`, `{host}` and `{address}` filled in. Words are split
/// at whitespace (no quoting: a launcher that needs it belongs in a small script of its own).
fn words(template: &str, host: &Host) -> Result<Vec<String>> {
    template
        .split_whitespace()
        .map(|w| {
            let filled = w
                .replace("{name}", &host.name)
                .replace("{host}", &host.name)
                .replace("{address}", &host.address.to_string());
            if filled.contains(['{', '}']) {
                bail!(
                    "host {}'s launcher {template:?} has a placeholder other than {{name}}, {{host}} and {{address}}",
                    host.name
                );
            }
            Ok(filled)
        })
        .collect()
}

/// A host as a run uses it: how to start a command there and where its files go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub host: String,
    pub address: IpAddr,
    /// The launcher's words (empty: this machine).
    pub prefix: Vec<OsString>,
    /// The `harness` binary there (`None`: this binary's path).
    pub harness: Option<PathBuf>,
    /// The host's folder for runs.
    pub dir: PathBuf,
}

/// `<prefix…> words…` (just `words…` without a prefix): the command line `words` run through a
/// launcher. A launcher whose program is `ssh` hands the rest of its command line to a shell on
/// the host, joined by spaces (`ip netns exec` execs its arguments as they are): each word is then
/// quoted for that shell.
pub fn command(prefix: &[OsString], words: impl IntoIterator<Item = OsString>) -> Command {
    let shell = prefix.first().is_some_and(|program| Path::new(program).ends_with("ssh"));
    let words = words.into_iter().map(|w| if shell { shell_quote(&w) } else { w });
    let mut all = prefix.iter().cloned().chain(words);
    let mut cmd = Command::new(all.next().unwrap_or_default());
    cmd.args(all);
    cmd
}

/// `word` as one word for a POSIX shell: as it is if it holds nothing the shell would read, else in
/// single quotes (each `'` inside written `'\''`).
fn shell_quote(word: &std::ffi::OsStr) -> OsString {
    let text = word.to_string_lossy();
    let plain = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        return word.to_owned();
    }
    format!("'{}'", text.replace('\'', "'\\''")).into()
}

/// What a failed command said: its stderr, or its stdout when a terminal merged the two.
fn said(out: &std::process::Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    if err.is_empty() { String::from_utf8_lossy(&out.stdout).trim().to_owned() } else { err }
}

/// How long a fetched file may take to appear (a process stopped through `ssh` writes its counters
/// after the local ssh has already exited).
const FETCH_WAIT: Duration = Duration::from_secs(3);

impl Remote {
    /// `<prefix…> words…`: the command line `words` run on the host.
    pub fn command(&self, words: impl IntoIterator<Item = OsString>) -> Command {
        command(&self.prefix, words)
    }

    /// This run's folder on the host.
    pub fn run_dir(&self, label: &str) -> PathBuf {
        self.dir.join(label)
    }

    /// Writes `bytes` to `path` on the host (its folder made first; readable by the owner only).
    /// The bytes travel base64-encoded in an argument, not on stdin: a launcher that gives the
    /// command a terminal (`ssh -tt`) would never pass on the end of stdin, and would read
    /// control characters in it.
    pub fn put(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        use base64::Engine;
        let dir = path.parent().context("a file in a folder")?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
        let script = "mkdir -p \"$1\" && umask 077 && printf %s \"$3\" | base64 -d > \"$2\"";
        let words = ["sh", "-c", script, "sh"].map(OsString::from).into_iter();
        let out = self
            .command(words.chain([dir.into(), path.into(), encoded.into()]))
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("starting {} to write {} on host {}", self.shown(), path.display(), self.host))?;
        if !out.status.success() {
            bail!("writing {} on host {} through `{}` failed: {}", path.display(), self.host, self.shown(), said(&out));
        }
        Ok(())
    }

    /// Reads `path` on the host, waiting up to a few seconds for it to appear. The file comes back
    /// base64-encoded: a terminal (`ssh -tt`) turns each newline it passes into CR LF.
    pub fn fetch(&self, path: &Path) -> Result<Vec<u8>> {
        use base64::Engine;
        let deadline = Instant::now() + FETCH_WAIT;
        loop {
            let out =
                self.command(["base64".into(), path.into()]).stdin(Stdio::null()).output().with_context(|| {
                    format!("starting {} to read {} on host {}", self.shown(), path.display(), self.host)
                })?;
            if out.status.success() {
                let text: Vec<u8> = out.stdout.into_iter().filter(|b| !b.is_ascii_whitespace()).collect();
                return base64::engine::general_purpose::STANDARD.decode(text).with_context(|| {
                    format!("reading {} on host {}: not what base64 writes", path.display(), self.host)
                });
            }
            if Instant::now() >= deadline {
                bail!(
                    "reading {} on host {} through `{}` failed: {}",
                    path.display(),
                    self.host,
                    self.shown(),
                    said(&out)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Copies `name` from this run's folder on the host to `local` (a missing file is an error).
    pub fn fetch_into(&self, label: &str, name: &str, local: &Path) -> Result<()> {
        let bytes = self.fetch(&self.run_dir(label).join(name))?;
        std::fs::write(local.join(name), bytes).with_context(|| format!("writing {}", local.join(name).display()))
    }

    fn shown(&self) -> String {
        if self.prefix.is_empty() {
            return "this machine".into();
        }
        self.prefix.iter().map(|w| w.to_string_lossy()).collect::<Vec<_>>().join(" ")
    }

    /// What the result records for process `process` placed here, started as `pid`.
    pub fn record(&self, process: &str, pid: Option<i32>, exe: &Path) -> HostRecord {
        HostRecord {
            process: process.to_owned(),
            host: self.host.clone(),
            address: self.address,
            launcher: self.prefix.iter().map(|w| w.to_string_lossy().into_owned()).collect(),
            local_process: pid.is_some_and(|pid| runs(pid, self.harness.as_deref().unwrap_or(exe))),
        }
    }
}

/// Whether process `pid` on this kernel runs `exe` (so the pid is the program's, not a launcher's).
fn runs(pid: i32, exe: &Path) -> bool {
    let target = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    let exe = std::fs::canonicalize(exe).ok();
    target.is_some() && target == exe
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers() -> Vec<String> {
        ["Alford", "Ball"].map(String::from).into()
    }

    fn parse(text: &str) -> Result<Placement> {
        Placement::new(toml::from_str(text)?, &servers())
    }

    const GOOD: &str = r#"
        places = "a"
        generators = ["a", "b"]
        [[host]]
        name = "a"
        address = "127.0.0.1"
        [[host]]
        name = "b"
        address = "10.0.0.2"
        launcher = "ssh -tt -o BatchMode=yes {host}"
        dir = "/srv/hb"
        [members]
        Alford = "a"
        Ball = "b"
    "#;

    #[test]
    fn a_hosts_file_places_every_process_and_fills_in_its_launcher() {
        let p = parse(GOOD).expect("a placement");
        let (places, addr) = p.places();
        assert_eq!((places.host.as_str(), addr), ("a", "127.0.0.1:7400".parse().expect("addr")));
        assert!(places.prefix.is_empty());
        let (ball, addr) = p.member("Ball", 1).expect("Ball");
        assert_eq!(addr, "10.0.0.2:7402".parse().expect("addr"));
        assert_eq!(ball.prefix, ["ssh", "-tt", "-o", "BatchMode=yes", "b"].map(OsString::from));
        assert_eq!(ball.run_dir("run-1"), PathBuf::from("/srv/hb/run-1"));
        assert_eq!(p.generators().iter().map(|g| g.host.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        let here = places.command(["harness".into(), "a run".into()]);
        assert_eq!(here.get_args().collect::<Vec<_>>(), ["a run"], "no launcher: words as they are");
        let cmd = ball.command(["harness".into(), "--log".into(), "/srv/hb/a run/Ball.log".into()]);
        assert_eq!(cmd.get_program(), "ssh");
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(args[args.len() - 3..], ["harness", "--log", "'/srv/hb/a run/Ball.log'"]);
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            (GOOD.replace("Ball = \"b\"", "Ball = \"c\""), "no [[host]] names"),
            (GOOD.replace("Ball = \"b\"", ""), "does not place Ball"),
            (GOOD.replace("Ball = \"b\"", "Ball = \"b\"\nWelsh = \"a\""), "not in the herd's topology"),
            (GOOD.replace("{host}", "{user}"), "placeholder other than"),
            (GOOD.replace("name = \"b\"", "name = \"a\""), "two hosts are named"),
            (GOOD.replace("places = \"a\"", "places = \"a\"\nbase_port = 65535"), "base_port"),
            (GOOD.replace("dir = ", "folder = "), "unknown field"),
        ];
        for (text, says) in cases {
            let err = format!("{:#}", parse(&text).expect_err(says));
            assert!(err.contains(says), "{says:?} not in {err:?}");
        }
    }

    #[test]
    fn every_workload_reaches_a_generator_unchanged() {
        // The generators on other hosts read the workload from the file run_generators writes.
        for name in herd_record::workload::available() {
            let w = herd_record::workload::Workload::load(&name).expect("a committed workload");
            let text = toml::to_string(&w).expect("serialises");
            let back = herd_record::workload::Workload::parse(&text, &name)
                .unwrap_or_else(|e| panic!("{name}: {e:#}\n{text}"));
            assert_eq!(serde_json::to_value(&back).expect("json"), serde_json::to_value(&w).expect("json"), "{name}");
        }
    }

    #[test]
    fn put_and_fetch_go_through_the_launcher() {
        let dir = std::env::temp_dir().join(format!("herdbench-hosts-{}", std::process::id()));
        // A launcher that is a real command line: `env` runs what follows it.
        let remote = Remote {
            host: "here".into(),
            address: "127.0.0.1".parse().expect("ip"),
            prefix: vec!["env".into(), "HERDBENCH_TEST=1".into()],
            harness: None,
            dir: dir.clone(),
        };
        let file = remote.run_dir("r").join("herd.key");
        remote.put(&file, b"secret\n").expect("written through env");
        assert_eq!(remote.fetch(&file).expect("read back"), b"secret\n");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).expect("there").permissions().mode() & 0o077, 0, "owner only");
        let local = dir.join("local");
        std::fs::create_dir_all(&local).expect("local");
        remote.fetch_into("r", "herd.key", &local).expect("copied");
        assert_eq!(std::fs::read(local.join("herd.key")).expect("copied"), b"secret\n");
        let err = format!("{:#}", remote.fetch(&dir.join("absent")).expect_err("no such file"));
        assert!(err.contains("on host here through `env HERDBENCH_TEST=1`"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn words_reach_a_remote_shell_intact() {
        assert_eq!(shell_quote("--listen".as_ref()), "--listen");
        assert_eq!(shell_quote("[::1]:7400".as_ref()), "'[::1]:7400'");
        assert_eq!(shell_quote("it's".as_ref()), "'it'\\''s'");
        assert_eq!(shell_quote("".as_ref()), "''");
        // A launcher that does what ssh does with its arguments: joins them with spaces and hands
        // the line to a shell. A path with a space and bytes a shell or terminal would read
        // (quotes, `$`, control characters, no final newline) must arrive as they were.
        let dir = std::env::temp_dir().join(format!("herdbench-shell {}", std::process::id()));
        // `ssh` here is a link to sh (a link, not a script written now: exec of a file another
        // test thread may hold open for writing fails with ETXTBSY).
        let fake_ssh = dir.join("bin").join("ssh");
        std::fs::create_dir_all(fake_ssh.parent().expect("bin")).expect("bin folder");
        std::os::unix::fs::symlink("/bin/sh", &fake_ssh).expect("ssh as a link to sh");
        let remote = Remote {
            host: "here".into(),
            address: "127.0.0.1".parse().expect("ip"),
            prefix: vec![fake_ssh.into(), "-c".into(), "exec sh -c \"$*\"".into(), "fake-ssh".into()],
            harness: None,
            dir: dir.clone(),
        };
        let file = remote.run_dir("a run").join("it's.toml");
        let bytes = b"name = \"x $HOME `id`\"\n\x03\x04\x00'\\";
        remote.put(&file, bytes).expect("written through a shell");
        assert_eq!(std::fs::read(&file).expect("there"), bytes);
        assert_eq!(remote.fetch(&file).expect("read back"), bytes);
        let _ = std::fs::remove_dir_all(dir);
    }
}
