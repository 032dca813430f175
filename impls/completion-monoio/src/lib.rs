//! Completion style on monoio: thread-per-core runtimes, each submitting I/O to its own io_uring.
//!
//! ```text
//!  core 0 (this thread)                         core 1 … N-1 (one thread each)
//!  ┌────────────────────────────────────────┐   ┌──────────────────────────────────────┐
//!  │ accept loop: accept op ─► Acceptor     │   │                                      │
//!  │   deal round-robin ──────(mailbox)─────┼──►│ door: adopt ─► connection task        │
//!  │ door: adopt ─► connection task …       │   │ connection task …                    │
//!  │ link tasks for neighbours i % N == 0   │   │ link tasks for neighbours i % N == k │
//!  │ ring: SQ ──io_uring_enter──► CQ        │   │ ring: SQ ──io_uring_enter──► CQ      │
//!  └────────────────────────────────────────┘   └──────────────────────────────────────┘
//!  connection task: a receive always submitted (while the OutputBuffer allows reading),
//!    recv completes ─► Session: each line ─► Service::handle ─► OutputBuffer
//!    owed bytes ─► send submitted with the connection's write buffer ─► completion: consumed(n)
//!    WHATSAT ─► upstream::fetch (this core's PlacesPool) ─► Session::complete
//! ```
//!
//! Readiness styles ask the kernel "may I read this socket?" and then make the read themselves: two
//! system calls' worth of work per operation, one of them often an `epoll_wait` shared by a
//! batch. Here the task hands the kernel the operation itself — receive into *this* buffer, send
//! *these* bytes — as a submission queue entry, and later reaps a completion queue entry saying
//! how it went. A runtime pushes every entry its tasks produced during one turn and waits for the
//! next completions in a single `io_uring_enter`, so the system calls per request fall with the
//! number of connections active in a turn, below the two of read + write.
//!
//! The price is ownership. While an operation is in flight the kernel writes into (or reads
//! from) its buffer, so the buffer cannot be a borrow that the task might drop: monoio's
//! "rent" API takes the buffer by value and gives it back with the result. Each connection owns
//! one read buffer and one write buffer for its lifetime, lent to one operation at a time and
//! reused (see `connection`); dropping a future whose operation is in flight cancels it
//! (`IORING_OP_ASYNC_CANCEL`) while the driver keeps the buffer alive until the kernel lets go.
//!
//! Every rule around the protocol is herd-core's policy layer, as in every style: the connection's
//! [`herd_core::policy::Session`] and its `OutputBuffer` decide when replies are written, when
//! input stops being read and when a client is given up on; [`herd_core::policy::FloodLinks`]
//! owns the links, [`herd_core::policy::PlacesBackend`] the places client, and
//! [`herd_core::policy::Acceptor`] the cap on connections and the pause after accept errors.
//! This crate keeps only the monoio parts: rings, owned buffers, `spawn`, and waiting.
//!
//! # Threads and rings
//! `--threads N` (default: available cores) runtimes, one per thread, each with its own ring of
//! [`RING_ENTRIES`] submission entries and its own timer. Nothing moves between them once it is
//! started: a connection, its buffers, its upstream connections (each core has its own
//! `PlacesPool`) and a link's socket stay on one core, so they need no locks and no atomic
//! reference counts. The flood links' machines are shared by every core (any client may flood
//! through any link), behind the policy layer's short mutex; a link task is woken from another
//! core through a channel, which monoio turns into an eventfd write to the sleeping ring.
//!
//! Core 0 accepts (one accept loop, so one cap and one back-off per server) and deals connections
//! round-robin to every core's mailbox, itself included. Sharing the listening socket between N
//! rings instead would let whichever ring wakes first take a whole burst; SO_REUSEPORT would need
//! the harness's already-bound socket bound again with the option set.
//!
//! # Driver
//! io_uring by default. Where the kernel refuses it (older than 5.6, `kernel.io_uring_disabled`, a
//! seccomp filter), `serve` fails with an error that says so: it never switches silently to
//! epoll, which would make this row measure a readiness runtime. `--driver legacy` runs monoio's
//! epoll driver on purpose, and the run records it.
//!
//! # Layout
//! - [`serve`]: check the kernel, build a runtime per core, start accepting.
//! - `connection`: one client's task: receive, handle, send, with owned buffers.
//! - `lent`: an operation in flight that owns its socket half and buffer.
//! - [`links`]: one task per neighbour driving its [`herd_core::policy::FloodLink`].
//! - [`upstream`]: one WHATSAT's [`herd_core::policy::PlacesCall`] on the core's pool.

mod connection;
mod lent;
pub mod links;
pub mod upstream;

use std::future::Future;
use std::io;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::{Arc, mpsc};
use std::time::Instant;

use async_channel::{Receiver, Sender};
use herd_core::policy::{Accepted, Admitted, FloodLinks, Session};
use herd_core::{IoDriver, ServeOptions, Service, available_cores};
use monoio::net::{TcpListener, TcpStream};
use monoio::time::TimeDriver;
use monoio::{IoUringDriver, LegacyDriver, Runtime, RuntimeBuilder};

use crate::links::LinkNotify;

/// Submission queue entries per ring (the completion queue gets twice as many). At most one
/// receive and one send per connection are in flight, and a turn submits what its tasks produced,
/// so 1,024 entries carry a turn of 512 busy connections before the runtime must enter the kernel
/// early to make room; the ring's memory (about 100 KiB) stays small next to the connections'.
pub const RING_ENTRIES: u32 = 1024;

/// A connection accepted on core 0, on its way to the core that will serve it.
type Handoff = (std::net::TcpStream, Admitted);

/// What every task of one core shares: the service, the flood links, this core's places pool.
pub(crate) type Shared<S> = herd_core::policy::Shared<S, LinkNotify, TcpStream>;

/// Serves `service` on `listener` until the process exits.
pub fn serve<S: Service>(listener: std::net::TcpListener, service: Arc<S>, options: &ServeOptions) -> io::Result<()> {
    let driver = options.driver.unwrap_or(IoDriver::Uring);
    let flags = match driver {
        IoDriver::Uring => {
            check_uring()?;
            ring_flags()
        }
        IoDriver::Legacy => RingFlags::None,
    };
    // Said once on stderr (the harness keeps it with the server's output): which interface ran.
    eprintln!("completion-monoio: waiting through {} (ring flags: {flags:?})", driver.name());
    let cores = options.threads.unwrap_or_else(available_cores).max(1);
    // The io_uring driver completes operations on blocking sockets (the kernel polls for it); the
    // epoll driver needs non-blocking ones.
    listener.set_nonblocking(driver == IoDriver::Legacy)?;
    let (links, wakes) = links::build(options, &*service);
    let (doors, mailboxes): (Vec<Sender<Handoff>>, Vec<Receiver<Handoff>>) =
        (0..cores).map(|_| async_channel::unbounded()).unzip();
    let doors: Arc<[Sender<Handoff>]> = doors.into();
    let mut wakes = wakes.into_iter().enumerate().collect::<Vec<_>>();
    let mut cores_setup = mailboxes
        .into_iter()
        .enumerate()
        .map(|(index, mailbox)| Core {
            index,
            service: Arc::clone(&service),
            links: Arc::clone(&links),
            links_here: wakes.extract_if(.., |(i, _)| *i % cores == index).collect(),
            options: options.clone(),
            mailbox,
            doors: Arc::clone(&doors),
        })
        .collect::<Vec<_>>();
    let first = cores_setup.remove(0);
    let mut runtime = CoreRuntime::build(driver, flags)?;
    let (ready, started) = mpsc::channel();
    let others = cores_setup.len();
    for core in cores_setup {
        let ready = ready.clone();
        std::thread::Builder::new().name(format!("monoio-{}", core.index)).spawn(move || {
            match CoreRuntime::build(driver, flags) {
                Ok(mut runtime) => {
                    let _ = ready.send(Ok(()));
                    drop(ready);
                    runtime.block_on(core.run(None));
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                }
            }
        })?;
    }
    for result in started.iter().take(others) {
        result?;
    }
    runtime.block_on(first.run(Some(listener)));
    Ok(())
}

/// Fails with the reason when this kernel will not run what the io_uring driver submits: rings
/// refused (too old, disabled, filtered) or an operation it uses missing.
fn check_uring() -> io::Result<()> {
    let unavailable = |why: String| {
        io::Error::other(format!(
            "io_uring is unavailable: {why}. completion-monoio does not fall back to epoll silently; \
             pass --driver legacy to run monoio's epoll driver (a different row, recorded as such)"
        ))
    };
    let ring = io_uring::IoUring::new(8).map_err(|e| {
        unavailable(format!(
            "io_uring_setup failed ({e}); the kernel may predate io_uring, have it disabled \
             (sysctl kernel.io_uring_disabled) or a seccomp filter may refuse it"
        ))
    })?;
    let mut probe = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| unavailable(format!("the kernel cannot list its io_uring operations ({e}): older than 5.6")))?;
    use io_uring::opcode::{Accept, AsyncCancel, Connect, Read, Recv, Send, Timeout};
    let needed = [
        ("accept", Accept::CODE),
        ("connect", Connect::CODE),
        ("recv", Recv::CODE),
        ("send", Send::CODE),
        ("async_cancel", AsyncCancel::CODE),
        ("timeout", Timeout::CODE),
        ("read", Read::CODE),
    ];
    let missing: Vec<&str> = needed.iter().filter(|(_, code)| !probe.is_supported(*code)).map(|(n, _)| *n).collect();
    if !missing.is_empty() {
        return Err(unavailable(format!("the kernel's io_uring lacks {}", missing.join(", "))));
    }
    Ok(())
}

/// How each ring is set up. `IORING_SETUP_COOP_TASKRUN`: the kernel finishes an operation that
/// had to wait (a receive whose data came later) as task work run when this thread next enters
/// the kernel, instead of interrupting it at once; `SINGLE_ISSUER` + `DEFER_TASKRUN` (Linux 6.1):
/// only this thread submits, and that work waits for its `io_uring_enter` to ask for completions,
/// so a turn takes them in one batch. Measured here (echo 100k/s, one core, 2 rounds): CPU per
/// request 7.1 µs without the flags, 5.5 µs with COOP_TASKRUN, 5.5 µs with all three.
/// Kernels that refuse the later flags get the ones they take ([`ring_flags`]).
fn ring_setup(flags: RingFlags) -> io_uring::Builder {
    let mut builder = io_uring::IoUring::builder();
    if flags >= RingFlags::CoopTaskrun {
        builder.setup_coop_taskrun();
    }
    if flags >= RingFlags::DeferTaskrun {
        builder.setup_single_issuer().setup_defer_taskrun();
    }
    builder
}

/// The ring set-up flags a kernel takes, from none to all this crate uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RingFlags {
    None,
    /// `IORING_SETUP_COOP_TASKRUN` (Linux 5.19).
    CoopTaskrun,
    /// Also `IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN` (Linux 6.1).
    DeferTaskrun,
}

/// The most of [`RingFlags`] this kernel accepts (a ring set up with fewer is still io_uring).
fn ring_flags() -> RingFlags {
    [RingFlags::DeferTaskrun, RingFlags::CoopTaskrun]
        .into_iter()
        .find(|&flags| ring_setup(flags).build(8).is_ok())
        .unwrap_or(RingFlags::None)
}

/// One core's runtime, on the driver the server was asked for.
enum CoreRuntime {
    Uring(Runtime<TimeDriver<IoUringDriver>>),
    Legacy(Runtime<TimeDriver<LegacyDriver>>),
}

impl CoreRuntime {
    fn build(driver: IoDriver, flags: RingFlags) -> io::Result<Self> {
        Ok(match driver {
            IoDriver::Uring => Self::Uring(
                RuntimeBuilder::<IoUringDriver>::new()
                    .with_entries(RING_ENTRIES)
                    .uring_builder(ring_setup(flags))
                    .enable_timer()
                    .build()
                    .map_err(|e| {
                        io::Error::new(e.kind(), format!("building an io_uring of {RING_ENTRIES} entries: {e}"))
                    })?,
            ),
            IoDriver::Legacy => {
                Self::Legacy(RuntimeBuilder::<LegacyDriver>::new().with_entries(RING_ENTRIES).enable_timer().build()?)
            }
        })
    }

    fn block_on<F: Future>(&mut self, future: F) -> F::Output {
        match self {
            Self::Uring(runtime) => runtime.block_on(future),
            Self::Legacy(runtime) => runtime.block_on(future),
        }
    }
}

/// What one core starts with.
struct Core<S> {
    index: usize,
    service: Arc<S>,
    links: Arc<FloodLinks<LinkNotify>>,
    /// The link tasks this core runs: neighbour `i` and its wake-ups, for `i % cores == index`.
    links_here: Vec<(usize, links::Wakes)>,
    options: ServeOptions,
    mailbox: Receiver<Handoff>,
    doors: Arc<[Sender<Handoff>]>,
}

impl<S: Service> Core<S> {
    /// The core's tasks: its links, (core 0) the accept loop, and its door, which adopts the
    /// connections dealt to it for as long as the process runs.
    async fn run(self, listener: Option<std::net::TcpListener>) {
        let shared = Rc::new(Shared::new(self.service, Arc::clone(&self.links), &self.options));
        for (i, wakes) in self.links_here {
            if let Some(&(_, addr)) = self.options.neighbours.get(i) {
                monoio::spawn(links::drive(Arc::clone(&self.links), i, addr, wakes));
            }
        }
        if let Some(listener) = listener {
            match TcpListener::from_std(listener) {
                Ok(listener) => drop(monoio::spawn(accept_loop(listener, Rc::clone(&shared), self.doors))),
                Err(e) => shared.service.log().error("listen", e),
            }
        }
        while let Ok((stream, admitted)) = self.mailbox.recv().await {
            match TcpStream::from_std(stream) {
                Ok(stream) => {
                    let session = Session::new(&shared.limits, admitted);
                    monoio::spawn(connection::serve(stream, session, Rc::clone(&shared)));
                }
                Err(e) => shared.service.log().error("adopt", e),
            }
        }
    }
}

/// Core 0's accept loop: one accept operation at a time, each connection judged by the server's
/// one [`herd_core::policy::Acceptor`] and dealt to the next core.
async fn accept_loop<S: Service>(listener: TcpListener, shared: Rc<Shared<S>>, doors: Arc<[Sender<Handoff>]>) {
    let mut acceptor = shared.acceptor();
    for dealt in 0.. {
        match acceptor.on_accept(listener.accept().await, Instant::now) {
            Accepted::Serve((stream, _), admitted) => {
                let _ = stream.set_nodelay(true);
                // The descriptor changes rings: the stream's driver state stays here, the fd goes.
                // SAFETY: `into_raw_fd` gives up the only owner of an open socket descriptor.
                let stream = unsafe { std::net::TcpStream::from_raw_fd(stream.into_raw_fd()) };
                if doors[dealt % doors.len()].try_send((stream, admitted)).is_err() {
                    shared.service.log().error("hand-off", "a core has stopped");
                }
            }
            Accepted::Refused => {}
            Accepted::Pause(resume) => monoio::time::sleep_until(monoio::time::Instant::from_std(resume)).await,
        }
    }
}

/// Sleeps until `deadline` on the core's timer; never returns without one.
pub(crate) async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => monoio::time::sleep_until(monoio::time::Instant::from_std(deadline)).await,
        None => std::future::pending().await,
    }
}
