//! Mechanism counters: what the kernel counts for a process over the measured window.
//!
//! Time on a shared two-core machine moves by tens of percent between runs; the counts behind it
//! barely move. So every result carries, per server process and for the generator, the difference
//! between two readings of /proc taken at the window's start and end (warm-up, start-up and
//! shutdown excluded):
//!
//! | field                 | source                                          |
//! |-----------------------|-------------------------------------------------|
//! | `cpu_user_s/sys_s`    | `/proc/<pid>/stat` utime, stime (clock ticks)   |
//! | `syscr`, `syscw`     | `/proc/<pid>/io` syscr, syscw: read(2)/write(2)-family calls only; recv, send, epoll, futex… are not in them |
//! | `*_switches`          | `/proc/<pid>/task/*/status`, summed over threads |
//! | `minor_faults`        | `/proc/<pid>/stat` minflt                       |
//! | `task_clock_s`        | perf's `task-clock` (`run --syscalls` only)     |
//!
//! CPU, syscalls and faults include threads that exited during the window; context switches do
//! not (the kernel keeps them per thread only), which matters for a style that ends threads inside
//! the window (thread-per-request under connection churn).
//!
//! Every system call, by name, needs perf's tracepoints: [`SyscallCount`] (`run --syscalls`) runs
//! `perf stat` attached to each server, disabled, and switches it on and off through its control
//! FIFO at the window's edges, so the count covers the window exactly. The same perf counts each
//! server's `task-clock`: its CPU time in nanoseconds, every thread's, those started or ended in
//! the window too. /proc's utime and stime come in clock ticks of 10 ms: at the gate's 300
//! requests/s a 3 s window holds about 30 ticks over five servers, so one tick more or less moves
//! CPU per request by 3 %; `task-clock` does not round.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read as _, Write as _};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use herd_record::counters::Counters;

/// One reading of a process: its totals, and each live thread's context switches (the kernel
/// keeps those per thread only, so a window's switches are summed thread by thread).
#[derive(Debug, Clone, Default)]
pub struct Reading {
    totals: Counters,
    /// Thread id → (voluntary, involuntary) switches so far.
    threads: BTreeMap<u64, (u64, u64)>,
}

impl Reading {
    /// Process `pid` now.
    pub fn take(pid: i32) -> io::Result<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let io_text = std::fs::read_to_string(format!("/proc/{pid}/io"))?;
        let mut threads = BTreeMap::new();
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
            let task = task?;
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else { continue };
            // A thread that exits between the listing and the read is simply not counted.
            if let Ok(status) = std::fs::read_to_string(task.path().join("status")) {
                threads.insert(tid, parse_switches(&status));
            }
        }
        let (user_ticks, sys_ticks, minor_faults) = parse_stat(&stat)?;
        let (syscr, syscw) = parse_io(&io_text)?;
        let tick = clock_tick();
        let totals = Counters {
            cpu_user_s: user_ticks as f64 * tick,
            cpu_sys_s: sys_ticks as f64 * tick,
            syscr,
            syscw,
            minor_faults,
            ..Counters::default()
        };
        Ok(Self { totals, threads })
    }

    /// What happened between `start` and `self`. Switches are summed over the threads alive now,
    /// from their count at `start` (or from zero, for a thread started since); a thread that
    /// exited inside the window takes its switches with it.
    pub fn since(&self, start: &Self) -> Counters {
        let (a, b) = (&self.totals, &start.totals);
        let mut window = Counters {
            cpu_user_s: (a.cpu_user_s - b.cpu_user_s).max(0.0),
            cpu_sys_s: (a.cpu_sys_s - b.cpu_sys_s).max(0.0),
            syscr: a.syscr.saturating_sub(b.syscr),
            syscw: a.syscw.saturating_sub(b.syscw),
            minor_faults: a.minor_faults.saturating_sub(b.minor_faults),
            ..Counters::default()
        };
        for (tid, &(voluntary, involuntary)) in &self.threads {
            let (v0, i0) = start.threads.get(tid).copied().unwrap_or_default();
            window.voluntary_switches += voluntary.saturating_sub(v0);
            window.involuntary_switches += involuntary.saturating_sub(i0);
        }
        window
    }
}

/// Reads a set of processes at the window's start and at its end. The load generator calls
/// [`WindowProbe::start`] and [`WindowProbe::end`] from its own timer thread.
#[derive(Debug)]
pub struct WindowProbe {
    pids: Vec<i32>,
    start: Mutex<Vec<Option<Reading>>>,
    end: Mutex<Vec<Option<Reading>>>,
    /// perf, counting the system calls and CPU time of some of `pids` while the window is open.
    syscalls: Option<SyscallCount>,
}

impl WindowProbe {
    pub fn new(pids: Vec<i32>) -> Self {
        Self { pids, start: Mutex::default(), end: Mutex::default(), syscalls: None }
    }

    /// Also counts every system call and the CPU time of the processes `count` is attached to,
    /// over the window (see [`SyscallCount`]).
    pub fn with_syscalls(mut self, count: SyscallCount) -> Self {
        self.syscalls = Some(count);
        self
    }

    pub fn start(&self) {
        *self.start.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = self.read_all();
        if let Some(s) = &self.syscalls {
            s.switch("enable");
        }
    }

    pub fn end(&self) {
        if let Some(s) = &self.syscalls {
            s.switch("disable");
        }
        *self.end.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = self.read_all();
    }

    /// The system calls counted over the window, by name (`all` for every call), summed over the
    /// processes perf counted, if it counted.
    pub fn syscalls(self) -> Option<BTreeMap<String, u64>> {
        let counted = self.syscalls.as_ref()?.counts();
        match counted {
            Ok(per_process) => {
                let mut sum = BTreeMap::new();
                for (name, n) in per_process.iter().flat_map(|c| &c.syscalls) {
                    *sum.entry(name.clone()).or_default() += n;
                }
                Some(sum)
            }
            Err(e) => {
                eprintln!("herdbench: --syscalls: perf cannot count here ({e}); the result has no per-call counts");
                None
            }
        }
    }

    /// Per process (in the order given), its counters over the window, with perf's `task-clock`
    /// for the processes perf counted (this stops perf); `None` if a reading is missing (the
    /// window never started or ended, or the process was gone).
    pub fn deltas(&self) -> Vec<Option<Counters>> {
        let start = self.start.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let end = self.end.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let perf = self.syscalls.as_ref().and_then(|s| Some((s.pids(), s.counts().ok()?)));
        (0..self.pids.len())
            .map(|i| match (start.get(i).and_then(Option::as_ref), end.get(i).and_then(Option::as_ref)) {
                (Some(s), Some(e)) => {
                    let mut window = e.since(s);
                    if let Some((pids, counts)) = &perf {
                        window.task_clock_s =
                            pids.iter().position(|&p| p == self.pids[i]).and_then(|k| counts[k].task_clock_s);
                    }
                    Some(window)
                }
                _ => None,
            })
            .collect()
    }

    fn read_all(&self) -> Vec<Option<Reading>> {
        self.pids.iter().map(|&pid| Reading::take(pid).ok()).collect()
    }
}

/// System calls named one by one, where the kernel has their tracepoints: the calls the styles
/// differ by (readiness waits, futexes, yields, socket I/O).
const SYSCALLS: &[&str] = &[
    "read",
    "write",
    "readv",
    "writev",
    "recvfrom",
    "sendto",
    "recvmsg",
    "sendmsg",
    "epoll_wait",
    "epoll_pwait",
    "epoll_ctl",
    "poll",
    "ppoll",
    "futex",
    "sched_yield",
    "accept4",
    "connect",
    "close",
    "io_uring_enter",
];

/// `perf stat` attached to each of a set of processes (a perf each, so that each process's CPU
/// time stays its own), counting their system calls and CPU time (`task-clock`) while switched on.
#[derive(Debug)]
pub struct SyscallCount {
    perfs: Vec<Perf>,
    /// Per perf, how long it took to acknowledge `enable`, then `disable` (`None`: not within
    /// [`SWITCH_WAIT`]).
    acks: Mutex<Vec<(Option<Duration>, Option<Duration>)>>,
    /// What the perfs counted, in their order, once stopped: by the first of
    /// [`WindowProbe::deltas`] and [`WindowProbe::syscalls`] to ask.
    counted: OnceLock<Result<Vec<PerfCounts>, String>>,
}

/// How long to wait for perf to acknowledge `enable` or `disable`.
const SWITCH_WAIT: Duration = Duration::from_secs(2);

/// How much longer (or shorter) a perf may take to acknowledge `disable` than `enable` before its
/// counts are refused: 1 % of the gate's 3 s window. perf switches its counters one thread and
/// event at a time (a 70-thread threadpool server: ~100 ms), so each counter's window is the
/// window shifted by its place in that sweep, and longer or shorter by the difference of the two
/// sweeps, which is what this bounds.
const SWITCH_SKEW: Duration = Duration::from_millis(30);

/// One `perf stat`, attached to one process.
#[derive(Debug)]
struct Perf {
    pid: i32,
    child: Mutex<Child>,
    /// Its control FIFO (commands in) and acknowledgement FIFO.
    control: Mutex<(File, File)>,
    output: PathBuf,
}

/// What one perf counted.
#[derive(Debug, Clone, Default, PartialEq)]
struct PerfCounts {
    /// System calls by name, `all` for every call.
    syscalls: BTreeMap<String, u64>,
    /// CPU time, seconds.
    task_clock_s: Option<f64>,
}

impl SyscallCount {
    /// Starts a perf per process, disabled, attached to each of `pids` (its threads, and threads
    /// it starts later). Their FIFOs and output go to `dir`. Fails if perf or its tracepoints are
    /// not available.
    pub fn start(pids: &[i32], dir: &Path) -> io::Result<Self> {
        let tracing = ["/sys/kernel/tracing/events/syscalls", "/sys/kernel/debug/tracing/events/syscalls"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.is_dir())
            .ok_or_else(|| io::Error::other("no syscall tracepoints (is tracefs mounted, are we root?)"))?;
        let mut events = vec!["task-clock".to_owned(), "raw_syscalls:sys_enter".to_owned()];
        events.extend(
            SYSCALLS
                .iter()
                .filter(|n| tracing.join(format!("sys_enter_{n}")).exists())
                .map(|n| format!("syscalls:sys_enter_{n}")),
        );
        std::fs::create_dir_all(dir)?;
        // One group: switching its leader switches every event, one call per thread instead of
        // one per thread and event, so the sweep across a server's threads is over sooner.
        let group = format!("{{{}}}", events.join(","));
        let perfs = pids.iter().map(|&pid| Perf::start(pid, &group, dir)).collect::<io::Result<_>>()?;
        let count = Self { perfs, acks: Mutex::default(), counted: OnceLock::new() };
        // perf reads its control FIFO only once every counter is open, and that can take seconds
        // on a busy machine (seen: a perf that started counting after the window had closed, and
        // counted nothing). So it is told to answer first, and the window waits for that.
        let ready = count.command("ping", Duration::from_secs(15));
        if let Some(late) = ready.iter().position(Option::is_none) {
            return Err(io::Error::other(format!(
                "perf for process {} did not start within 15 s",
                count.perfs[late].pid
            )));
        }
        Ok(count)
    }

    /// The processes counted, in order.
    fn pids(&self) -> Vec<i32> {
        self.perfs.iter().map(|p| p.pid).collect()
    }

    /// Sends `enable` or `disable` to every perf and waits for their acknowledgements, noting how
    /// long each took (see [`SWITCH_SKEW`]).
    fn switch(&self, command: &str) {
        let acked = self.command(command, SWITCH_WAIT);
        let mut acks = self.acks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        acks.resize(self.perfs.len(), (None, None));
        for (ack, took) in acks.iter_mut().zip(acked) {
            match command {
                "enable" => ack.0 = took,
                _ => ack.1 = took,
            }
        }
    }

    /// Sends `command` to every perf, then waits for their acknowledgements, up to `wait` in all.
    /// Returns, per perf, how long it took to acknowledge, if it did.
    fn command(&self, command: &str, wait: Duration) -> Vec<Option<Duration>> {
        let mut controls: Vec<_> =
            self.perfs.iter().map(|p| p.control.lock().unwrap_or_else(std::sync::PoisonError::into_inner)).collect();
        let began = Instant::now();
        let sent: Vec<bool> = controls.iter_mut().map(|c| writeln!(c.0, "{command}").is_ok()).collect();
        let deadline = began + wait;
        controls
            .iter_mut()
            .zip(sent)
            .map(|(control, sent)| {
                let left = deadline.saturating_duration_since(Instant::now());
                let mut fds = [libc::pollfd { fd: control.1.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
                // SAFETY: one valid pollfd, live for the call.
                let acked = sent && unsafe { libc::poll(fds.as_mut_ptr(), 1, left.as_millis() as i32) } > 0;
                acked.then(|| {
                    let _ = control.1.read(&mut [0_u8; 16]);
                    began.elapsed()
                })
            })
            .collect()
    }

    /// Why the counts would not cover the window, if a perf was not switched on and off in time.
    fn skew(&self) -> Option<String> {
        let acks = self.acks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.perfs.iter().zip(acks.iter().chain(std::iter::repeat(&(None, None)))).find_map(|(p, &ack)| match ack {
            (Some(on), Some(off)) if on.abs_diff(off) <= SWITCH_SKEW => None,
            (Some(on), Some(off)) => Some(format!(
                "perf for process {} took {on:?} to switch on and {off:?} to switch off: its counts would not cover the window",
                p.pid
            )),
            _ => Some(format!("perf for process {} did not acknowledge switching within {SWITCH_WAIT:?}", p.pid)),
        })
    }

    /// What each perf counted; stops them all the first time.
    fn counts(&self) -> Result<&[PerfCounts], &str> {
        self.counted
            .get_or_init(|| {
                if let Some(skew) = self.skew() {
                    return Err(skew);
                }
                for p in &self.perfs {
                    let child = p.child.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    // SAFETY: signalling our own child.
                    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
                }
                self.perfs.iter().map(|p| p.finish().map_err(|e| e.to_string())).collect()
            })
            .as_deref()
            .map_err(String::as_str)
    }
}

impl Perf {
    fn start(pid: i32, events: &str, dir: &Path) -> io::Result<Self> {
        let (ctl, ack, output) = (
            dir.join(format!("perf-{pid}.ctl")),
            dir.join(format!("perf-{pid}.ack")),
            dir.join(format!("perf-{pid}.csv")),
        );
        for fifo in [&ctl, &ack] {
            let _ = std::fs::remove_file(fifo);
            let path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
            // SAFETY: a valid NUL-terminated path.
            if unsafe { libc::mkfifo(path.as_ptr(), 0o600) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        let mut command = Command::new("perf");
        // perf must switch at the window's edges however busy the machine: it runs at a higher
        // priority than everything else there (as root; elsewhere the attempt fails harmlessly).
        // SAFETY: setpriority is async-signal-safe and touches no memory of ours.
        unsafe {
            command.pre_exec(|| {
                libc::setpriority(libc::PRIO_PROCESS, 0, -10);
                Ok(())
            });
        }
        let child = command
            .args(["stat", "-x,", "--no-big-num", "-D", "-1", "-e", events])
            .arg(format!("--control=fifo:{},{}", ctl.display(), ack.display()))
            .args(["-p", &pid.to_string(), "-o"])
            .arg(&output)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        // Read-write opens of a FIFO do not wait for the other end.
        let open = |p: &Path| std::fs::OpenOptions::new().read(true).write(true).open(p);
        let control = (open(&ctl)?, open(&ack)?);
        Ok(Self { pid, child: Mutex::new(child), control: Mutex::new(control), output })
    }

    /// Waits (up to 5 s) for this perf, signalled to stop, to end, and reads its counts.
    fn finish(&self) -> io::Result<PerfCounts> {
        let mut child = self.child.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let deadline = Instant::now() + Duration::from_secs(5);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let counts = parse_perf_csv(&std::fs::read_to_string(&self.output)?);
        if !counts.syscalls.contains_key("all") {
            return Err(io::Error::other(format!("perf counted nothing (see {})", self.output.display())));
        }
        Ok(counts)
    }
}

impl Drop for SyscallCount {
    /// A run that ends early (an error, Ctrl-C) must not leave perf attached to anything.
    fn drop(&mut self) {
        for p in &mut self.perfs {
            let child = p.child.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// `perf stat -x,` lines: `value,unit,event,…`. Uncounted events (`<not counted>`) are left out.
fn parse_perf_csv(text: &str) -> PerfCounts {
    let mut counts = PerfCounts::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let mut f = line.split(',');
        let (Some(value), Some(unit), Some(event)) = (f.next(), f.next(), f.next()) else { continue };
        match (event.trim(), unit.trim()) {
            ("task-clock", "msec") => counts.task_clock_s = value.trim().parse::<f64>().ok().map(|ms| ms / 1e3),
            (event, _) => {
                let name = match event {
                    "raw_syscalls:sys_enter" => "all",
                    e => match e.strip_prefix("syscalls:sys_enter_") {
                        Some(name) => name,
                        None => continue,
                    },
                };
                if let Ok(n) = value.trim().parse::<u64>() {
                    counts.syscalls.insert(name.to_owned(), n);
                }
            }
        }
    }
    counts
}

fn clock_tick() -> f64 {
    // SAFETY: sysconf takes no pointers.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { 1.0 / hz as f64 } else { 0.01 }
}

/// (utime, stime, minflt) from /proc/<pid>/stat. The command name may hold spaces and parentheses,
/// so fields are counted from the last `)`.
fn parse_stat(text: &str) -> io::Result<(u64, u64, u64)> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc/<pid>/stat");
    let rest = &text[text.rfind(')').ok_or_else(bad)? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ppid pgrp session tty_nr tpgid flags minflt(10) cminflt majflt
    // cmajflt utime(14) stime(15), numbered as in proc(5).
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok()).ok_or_else(bad);
    Ok((field(14)?, field(15)?, field(10)?))
}

/// (syscr, syscw) from /proc/<pid>/io.
fn parse_io(text: &str) -> io::Result<(u64, u64)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("no {name} in /proc/<pid>/io")))
    };
    Ok((field("syscr:")?, field("syscw:")?))
}

/// (voluntary, involuntary) context switches from a thread's /proc status.
fn parse_switches(status: &str) -> (u64, u64) {
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse().ok());
    (field("voluntary_ctxt_switches:").unwrap_or(0), field("nonvoluntary_ctxt_switches:").unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let line = "4242 (serve (x) 1) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_stat(line).expect("a stat line"), (250, 75, 1234));
        assert!(parse_stat("4242 (trunc) S 1").is_err());
    }

    #[test]
    fn io_and_status_fields() {
        let io = "rchar: 10\nwchar: 20\nsyscr: 31\nsyscw: 42\nread_bytes: 0\n";
        assert_eq!(parse_io(io).expect("an io file"), (31, 42));
        assert!(parse_io("rchar: 10\n").is_err());
        let status = "Name:\tworker-1\nvoluntary_ctxt_switches:\t17\nnonvoluntary_ctxt_switches:\t3\n";
        assert_eq!(parse_switches(status), (17, 3));
    }

    #[test]
    fn perf_csv_counts_by_call_and_cpu_time() {
        let csv = "# started on Tue Dec  1 23:17:35 2026\n\n1466.99,msec,task-clock,1466985568,100.00,0.742,CPUs utilized\n\
                   910813,,raw_syscalls:sys_enter,502367150,100.00,,\n\
                   910809,,syscalls:sys_enter_write,502368492,100.00,,Events disabled\n\
                   <not counted>,,syscalls:sys_enter_futex,0,100.00,,\n";
        let counts = parse_perf_csv(csv);
        assert_eq!(counts.syscalls.get("all"), Some(&910_813));
        assert_eq!(counts.syscalls.get("write"), Some(&910_809));
        assert_eq!(counts.syscalls.len(), 2, "{counts:?}");
        assert!(counts.task_clock_s.is_some_and(|s| (s - 1.46699).abs() < 1e-12), "{counts:?}");
        let idle = parse_perf_csv("<not counted>,msec,task-clock,0,100.00,,\n");
        assert_eq!(idle, PerfCounts::default(), "a process that never ran has no CPU time, not zero");
    }

    #[test]
    fn a_window_is_the_difference_and_switches_go_thread_by_thread() {
        let reading = |cpu, syscr, threads: &[(u64, (u64, u64))]| Reading {
            totals: Counters { cpu_user_s: cpu, syscr, ..Counters::default() },
            threads: threads.iter().copied().collect(),
        };
        // Thread 1 ran through the window, thread 2 exited in it, thread 3 started in it.
        let start = reading(1.0, 10, &[(1, (50, 5)), (2, (1000, 7))]);
        let end = reading(1.5, 25, &[(1, (60, 6)), (3, (4, 1))]);
        let d = end.since(&start);
        assert_eq!((d.cpu_user_s, d.syscr), (0.5, 15));
        assert_eq!(
            (d.voluntary_switches, d.involuntary_switches),
            (10 + 4, 1 + 1),
            "an exited thread is not a negative count"
        );
    }

    #[test]
    fn this_process_counts_its_own_syscalls() {
        let pid = i32::try_from(std::process::id()).expect("a pid");
        let before = Reading::take(pid).expect("our own /proc");
        for _ in 0..50 {
            let _ = std::fs::read_to_string("/proc/self/stat").expect("readable");
        }
        let d = Reading::take(pid).expect("our own /proc").since(&before);
        assert!(d.syscr >= 50, "50 file reads, {} read-class syscalls counted", d.syscr);
    }
}
