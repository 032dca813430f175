//! The fixture: one places backend and five herd servers of a style, as child processes of the
//! real `harness` binary, on free loopback ports of their own.
//!
//! ```text
//! harness places --listen 127.0.0.1:P0
//! harness serve --impl <style> --name Alford --listen 127.0.0.1:P1 \
//!     --peer Hamilton=127.0.0.1:P3 --peer Welsh=127.0.0.1:P5 --places 127.0.0.1:P0 --mode herd
//! … one `serve` for each of Ball, Hamilton, Holiday, Welsh …
//! ```
//!
//! Every process is killed (SIGKILL) and reaped when the [`Herd`] is dropped, also when a test
//! panics half-way, so no test leaves a process behind. Each child's stderr and event log go to a
//! directory of its own under `CARGO_TARGET_TMPDIR`, removed after a passing test and kept (and
//! named on stderr) after a failing one.

use std::fs::OpenOptions;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::client::Client;

/// The default topology (DESIGN.md; `harness/topology.toml`).
pub const SERVERS: [&str; 5] = ["Alford", "Ball", "Hamilton", "Holiday", "Welsh"];
pub const LINKS: [(&str, &str); 5] =
    [("Alford", "Hamilton"), ("Alford", "Welsh"), ("Ball", "Holiday"), ("Ball", "Welsh"), ("Hamilton", "Holiday")];

/// How long a freshly spawned process may take to accept its first connection.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// Attempts at starting a whole herd when a port picked free was taken before the child bound it.
const START_ATTEMPTS: usize = 3;
/// Interval between connection attempts while waiting for a child to listen.
const START_POLL: Duration = Duration::from_millis(10);

/// Where the WHATSAT upstream lives.
#[derive(Debug, Clone)]
pub enum Upstream {
    /// `harness places` with these extra flags (e.g. `--latency 20ms`).
    Backend(Vec<String>),
    /// A loopback port nobody listens on: every places request fails to connect.
    Dead,
}

/// One child process of the `harness` binary, restartable with the same arguments.
#[derive(Debug)]
struct Proc {
    label: String,
    addr: SocketAddr,
    args: Vec<String>,
    stderr: PathBuf,
    child: Option<Child>,
}

impl Proc {
    fn spawn(label: &str, addr: SocketAddr, args: Vec<String>, dir: &Path) -> Result<Self, String> {
        let mut proc =
            Self { label: label.to_owned(), addr, args, stderr: dir.join(format!("{label}.stderr")), child: None };
        proc.launch()?;
        Ok(proc)
    }

    /// Starts the process (again) and waits until it accepts on its address.
    fn launch(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "{} is already running", self.label);
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr)
            .map_err(|e| format!("opening {}: {e}", self.stderr.display()))?;
        let child = Command::new(env!("CARGO_BIN_EXE_harness"))
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", self.label))?;
        self.child = Some(child);
        self.wait_accepting()
    }

    fn wait_accepting(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            let child = self.child.as_mut().expect("launched");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Err(format!(
                    "{} exited ({status}) before accepting on {}; args {:?}; stderr:\n{}",
                    self.label,
                    self.addr,
                    self.args,
                    read_lossy(&self.stderr)
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} did not accept on {} within {START_DEADLINE:?}; stderr:\n{}",
                    self.label,
                    self.addr,
                    read_lossy(&self.stderr)
                ));
            }
            thread::sleep(START_POLL);
        }
    }

    /// SIGKILL and reap; a process already gone is fine.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

/// Free loopback ports, all distinct: every listener is held until all are picked, then dropped.
fn free_ports(n: usize) -> Vec<SocketAddr> {
    let listeners: Vec<TcpListener> =
        (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("binding an ephemeral loopback port")).collect();
    listeners.iter().map(|l| l.local_addr().expect("local address of a bound listener")).collect()
}

/// A running herd of one style; dropping it kills every process.
#[derive(Debug)]
pub struct Herd {
    style: String,
    dir: PathBuf,
    places: Option<Proc>,
    servers: Vec<Proc>,
}

impl Herd {
    /// Five servers of `style` and a well-behaved places backend.
    pub fn start(style: &str) -> Self {
        Self::start_with(style, &Upstream::Backend(Vec::new()))
    }

    pub fn start_with(style: &str, upstream: &Upstream) -> Self {
        let mut errors = Vec::new();
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(style, upstream) {
                Ok(herd) => return herd,
                // Another process took a port between our pick and the child's bind: pick again.
                Err(e) if e.contains("Address already in use") => errors.push(e),
                Err(e) => panic!("starting a {style} herd: {e}"),
            }
        }
        panic!("starting a {style} herd: ports kept being taken:\n{}", errors.join("\n"));
    }

    fn try_start(style: &str, upstream: &Upstream) -> Result<Self, String> {
        static HERDS: AtomicUsize = AtomicUsize::new(0);
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("conformance").join(format!(
            "{style}-{}-{}",
            std::process::id(),
            HERDS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        // Built before any child exists, so a failure part-way kills what was started.
        let mut herd = Self { style: style.to_owned(), dir, places: None, servers: Vec::new() };
        let ports = free_ports(1 + SERVERS.len());
        let (places_addr, server_addrs) = (ports[0], &ports[1..]);
        if let Upstream::Backend(extra) = upstream {
            let mut args = vec!["places".to_owned(), "--listen".to_owned(), places_addr.to_string()];
            args.extend(extra.iter().cloned());
            herd.places = Some(Proc::spawn("places", places_addr, args, &herd.dir)?);
        }
        // With `Upstream::Dead` the places port was bound and released above: nobody listens there.
        let addr_of = |name: &str| server_addrs[SERVERS.iter().position(|s| *s == name).expect("a herd server name")];
        for (i, name) in SERVERS.iter().enumerate() {
            let mut args: Vec<String> = ["serve", "--impl", style, "--name", name, "--listen"]
                .iter()
                .map(|s| (*s).to_owned())
                .chain([server_addrs[i].to_string()])
                .collect();
            for peer in neighbours(name) {
                args.push("--peer".to_owned());
                args.push(format!("{peer}={}", addr_of(peer)));
            }
            args.extend(["--places".to_owned(), places_addr.to_string(), "--mode".to_owned(), "herd".to_owned()]);
            args.extend(["--log".to_owned(), herd.dir.join(format!("{name}.log")).display().to_string()]);
            let server = Proc::spawn(name, server_addrs[i], args, &herd.dir)?;
            herd.servers.push(server);
        }
        Ok(herd)
    }

    pub fn style(&self) -> &str {
        &self.style
    }

    pub fn addr(&self, name: &str) -> SocketAddr {
        self.server(name).addr
    }

    /// A new client connection to server `name`.
    pub fn client(&self, name: &str) -> Client {
        Client::connect(self.addr(name))
    }

    fn server(&self, name: &str) -> &Proc {
        self.servers.iter().find(|p| p.label == name).unwrap_or_else(|| panic!("no server named {name}"))
    }

    fn server_mut(&mut self, name: &str) -> &mut Proc {
        self.servers.iter_mut().find(|p| p.label == name).unwrap_or_else(|| panic!("no server named {name}"))
    }

    /// Kills server `name` (SIGKILL) and waits until its port refuses connections.
    pub fn kill(&mut self, name: &str) {
        let server = self.server_mut(name);
        server.kill();
        let addr = server.addr;
        let deadline = Instant::now() + Duration::from_secs(2);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            assert!(Instant::now() < deadline, "{name} still accepts on {addr} after being killed");
            thread::sleep(START_POLL);
        }
    }

    /// Starts server `name` again with the same arguments (so on the same port).
    pub fn restart(&mut self, name: &str) {
        let server = self.server_mut(name);
        if let Err(e) = server.launch() {
            panic!("restarting {name}: {e}");
        }
    }
}

/// `name`'s neighbours in the default topology.
pub fn neighbours(name: &str) -> Vec<&'static str> {
    LINKS
        .iter()
        .filter_map(|&(a, b)| {
            if a == name {
                Some(b)
            } else if b == name {
                Some(a)
            } else {
                None
            }
        })
        .collect()
}

impl Drop for Herd {
    fn drop(&mut self) {
        for server in &mut self.servers {
            server.kill();
        }
        if let Some(places) = &mut self.places {
            places.kill();
        }
        if thread::panicking() {
            eprintln!("conformance: {} herd's stderr and logs kept in {}", self.style, self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
