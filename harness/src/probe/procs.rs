//! Child processes of a run: spawned so they cannot outlive the harness, measured from outside
//! (rusage at reaping, thread count sampled from /proc), and always reaped.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use herd_record::result::ProcessResources;

/// A running child process.
#[derive(Debug)]
pub struct Child {
    pub name: String,
    pub pid: i32,
    /// Most threads and highest VmHWM (KiB) seen while sampling /proc.
    sampled: Arc<Sampled>,
    reaped: Option<ProcessResources>,
}

/// The children of one run. Dropping it kills and reaps any still alive.
#[derive(Debug, Default)]
pub struct Children {
    list: Vec<Child>,
    sampler: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
}

/// Pins the calling thread (and threads it creates afterwards) to `cpus`.
pub fn pin_current_thread(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET only write inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

impl Children {
    /// Starts `cmd` as child `name`, on `cpus` if given. The child is killed by the kernel if the
    /// thread that started it ends (so if the harness dies), and sits in its own process group so a
    /// Ctrl-C reaches only the harness, which then stops it in order. A child of the same name that
    /// was killed and reaped gives its place to the new one (a restart).
    pub fn spawn(&mut self, name: &str, mut cmd: Command, cpus: Option<Vec<usize>>) -> Result<i32> {
        let earlier = self.list.iter().position(|c| c.name == name);
        if let Some(i) = earlier {
            ensure!(self.list[i].reaped.is_some(), "{name} is already running");
        }
        // SAFETY: the closure only makes async-signal-safe syscalls (prctl, setpgid, sched_setaffinity).
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 || libc::setpgid(0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if let Some(cpus) = &cpus {
                    pin_current_thread(cpus)?;
                }
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        let pid = child.id() as i32;
        // Reaped with wait4 below, which std's Child never learns of; dropping it does not wait.
        drop(child);
        let child = Child { name: name.to_owned(), pid, sampled: Arc::default(), reaped: None };
        match earlier {
            Some(i) => self.list[i] = child,
            None => self.list.push(child),
        }
        Ok(pid)
    }

    /// Child `name`'s process id, while it has not been reaped.
    pub fn pid(&self, name: &str) -> Option<i32> {
        self.list.iter().find(|c| c.name == name && c.reaped.is_none()).map(|c| c.pid)
    }

    /// SIGKILL to child `name` and reaps it (a crash, as a test stages one); `None` if there is no
    /// such child or it was reaped already.
    pub fn kill(&mut self, name: &str) -> Option<ProcessResources> {
        let child = self.list.iter_mut().find(|c| c.name == name && c.reaped.is_none())?;
        // SAFETY: killing and reaping our own child.
        unsafe { libc::kill(child.pid, libc::SIGKILL) };
        child.reaped = reap(child.pid, 0, &child.sampled);
        child.reaped.clone()
    }

    /// Samples each child's thread count and VmHWM every 100 ms until [`Self::stop`] (children
    /// started after this call are not sampled).
    pub fn start_sampling(&mut self) {
        let stop = Arc::new(AtomicBool::new(false));
        let targets: Vec<(i32, Arc<Sampled>)> = self.list.iter().map(|c| (c.pid, Arc::clone(&c.sampled))).collect();
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            while !flag.load(Relaxed) {
                for (pid, sampled) in &targets {
                    sampled.sample(*pid);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        self.sampler = Some((stop, handle));
    }

    /// Waits for child `name` to exit and reaps it; at `deadline`, or once `stop` is set, kills and
    /// reaps it instead and returns `None` (also when there is no such child left to reap).
    pub fn wait(&mut self, name: &str, deadline: Instant, stop: &AtomicBool) -> Option<ProcessResources> {
        let child = self.list.iter_mut().find(|c| c.name == name && c.reaped.is_none())?;
        loop {
            child.sampled.sample(child.pid);
            if let Some(resources) = reap(child.pid, libc::WNOHANG, &child.sampled) {
                child.reaped = Some(resources.clone());
                return Some(resources);
            }
            if stop.load(Relaxed) || Instant::now() >= deadline {
                // SAFETY: killing and reaping our own child.
                unsafe { libc::kill(child.pid, libc::SIGKILL) };
                child.reaped = reap(child.pid, 0, &child.sampled);
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// True while child `name` has not exited.
    pub fn is_running(&self, name: &str) -> bool {
        let Some(child) = self.list.iter().find(|c| c.name == name) else { return false };
        // SAFETY: waitid with WNOWAIT only inspects the child's state and leaves it to be reaped.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
            libc::waitid(libc::P_PID, child.pid as libc::id_t, &mut info, flags) == 0 && info.si_pid() == 0
        }
    }

    /// SIGTERM to all, up to `grace` for them to exit, then SIGKILL; reaps all and returns their
    /// resources by name, in spawn order.
    pub fn stop(&mut self, grace: Duration) -> Vec<(String, ProcessResources)> {
        if let Some((flag, handle)) = self.sampler.take() {
            flag.store(true, Relaxed);
            let _ = handle.join();
        }
        for c in &self.list {
            // The last look before the child goes: its high-water mark is final by now.
            c.sampled.sample(c.pid);
        }
        for c in &self.list {
            if c.reaped.is_none() {
                // SAFETY: signalling our own child.
                unsafe { libc::kill(c.pid, libc::SIGTERM) };
            }
        }
        let deadline = Instant::now() + grace;
        loop {
            for c in &mut self.list {
                if c.reaped.is_none() {
                    c.reaped = reap(c.pid, libc::WNOHANG, &c.sampled);
                }
            }
            if self.list.iter().all(|c| c.reaped.is_some()) || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for c in &mut self.list {
            if c.reaped.is_none() {
                // SAFETY: killing and reaping our own child.
                unsafe { libc::kill(c.pid, libc::SIGKILL) };
                c.reaped = reap(c.pid, 0, &c.sampled);
            }
        }
        self.list.iter().filter_map(|c| c.reaped.clone().map(|r| (c.name.clone(), r))).collect()
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        if self.list.iter().any(|c| c.reaped.is_none()) {
            self.stop(Duration::from_millis(500));
        }
    }
}

/// What sampling /proc saw of a child.
#[derive(Debug, Default)]
struct Sampled {
    max_threads: AtomicU64,
    /// VmHWM in KiB: the peak RSS of the program itself. (wait4's ru_maxrss is not used for this:
    /// it also counts the harness's own pages that the child held between fork and exec, which
    /// grows with whatever the harness held at the time — 200 MB after a 10,000-connection run.)
    hwm_kib: AtomicU64,
}

impl Sampled {
    fn sample(&self, pid: i32) {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        };
        if let Some(n) = field("Threads:") {
            self.max_threads.fetch_max(n, Relaxed);
        }
        if let Some(kib) = field("VmHWM:") {
            self.hwm_kib.fetch_max(kib, Relaxed);
        }
    }
}

fn reap(pid: i32, flags: i32, sampled: &Sampled) -> Option<ProcessResources> {
    // SAFETY: wait4 writes into the status and rusage we own.
    unsafe {
        let mut status = 0;
        let mut usage: libc::rusage = std::mem::zeroed();
        let r = libc::wait4(pid, &mut status, flags, &mut usage);
        if r != pid {
            return None;
        }
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        let exit = if libc::WIFEXITED(status) {
            format!("exited {}", libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            format!("signal {}", libc::WTERMSIG(status))
        } else {
            format!("status {status}")
        };
        Some(ProcessResources {
            pid: pid as u32,
            cpu_user_s: secs(usage.ru_utime),
            cpu_sys_s: secs(usage.ru_stime),
            peak_rss_kib: match sampled.hwm_kib.load(Relaxed) {
                0 => usage.ru_maxrss as u64, // never sampled (it died at once): the best there is
                kib => kib,
            },
            max_threads: sampled.max_threads.load(Relaxed),
            exit,
        })
    }
}
