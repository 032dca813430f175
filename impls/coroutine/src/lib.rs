//! Co-operative multitasking style: stackful coroutines on `may`, code that reads like blocking code.
//!
//! ```text
//!   may workers (--threads, each with its own epoll loop; coroutines move between them)
//!   ┌─────────────────────────────────────────────────────────────────────────────────────────┐
//!   │ accept ──go!──► reader ── handle_line ──► OutputBuffer ──wake──► writer ──► client      │
//!   │   loop            │  └─ WHATSAT ──go!──► fetch ────┘ (PlacesCall, PlacesPool)           │
//!   │ Acceptor          └─ flood ──► FloodLinks::send ──wake──► link driver + watcher         │
//!   └─────────────────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! Every piece is written as if it blocked: `accept()`, `read()`, `write()`, `connect_timeout()`,
//! a semaphore's `wait_timeout()`. The difference from the thread styles is underneath: may's
//! sockets are non-blocking, and a call that would block saves the coroutine's stack, registers the
//! socket with the worker's epoll, and switches to another coroutine on the same thread. A read
//! tries the socket first and parks only on `WouldBlock`. Coroutines are cheap (a pooled stack, a
//! context switch of a few registers), so this style spends them freely: a reader and a writer per
//! connection, one per WHATSAT upstream call, a driver and a watcher per neighbour link, and one for
//! the accept loop.
//!
//! The rules are herd-core's policy machines, driven from here: [`herd_core::policy::OutputBuffer`]
//! (reply order, flushing, when to stop reading, when to give up on a client),
//! [`herd_core::policy::PlacesCall`] and [`herd_core::policy::PlacesPool`] (the upstream exchange
//! and its kept-alive connections), [`herd_core::policy::FloodLinks`] (connect, queue, drop),
//! [`herd_core::policy::handle_line`] (each line: the service, the flood, and whether to reply or
//! fetch) and [`herd_core::policy::Acceptor`] (the cap on connections, the pause after an accept
//! error). This crate owns only the coroutines, the may sockets and the waiting: a `Signal` (a may
//! semaphore) wakes a parked coroutine, and every deadline a machine names becomes a may socket
//! timeout or a semaphore `wait_timeout`.
//!
//! # The stack
//! A stackful coroutine cannot grow its stack. may's default is 0x1000 words (32 KiB on 64-bit)
//! with a guard page below it; a coroutine that runs into the guard page is abandoned mid-call
//! without unwinding (its client hangs, what it held leaks). The request path's deepest point is
//! `Service::complete` on upstream JSON: serde_json recurses once per nesting level, up to its
//! limit of 128, to parse and again to pretty-print. [`DEFAULT_STACK_KIB`] covers that worst case
//! with a wide margin (measured figures and the method are in the README), and `--stack-kib` cannot
//! go below [`MIN_STACK_KIB`], so no input a peer controls can overflow a stack. Every coroutine
//! uses the one configured size, so may recycles all of them from its stack pool; untouched stack
//! pages cost address space, not memory.
//!
//! # may's caveats, and why this crate is clear of them
//! - *Blocking calls park the worker thread*: nothing here uses `std::net`'s blocking calls,
//!   `std::thread::sleep` or a blocking std channel. herd-core's store, stats and policy machines
//!   take short std mutex sections that never wait on I/O; the log sink is a non-blocking `try_send`.
//! - *Thread-local storage across a yield*: a coroutine may resume on another worker, so a
//!   reference into TLS taken before a yield could point at another thread's data. No code here
//!   keeps a TLS reference or a std mutex guard (a machine's lock) across a call that can yield.
//! - *`go!` is an `unsafe` spawn*: may cannot check the two rules above, nor the stack size, so
//!   `coroutine::spawn` is `unsafe` and `go!` hides the block. Our spawns are sound because every
//!   closure is `Send + 'static` owning its data (the macro checks that), honours the two rules
//!   above, and runs on a stack sized for its worst case.
//! - *Timeouts in whole milliseconds*: may truncates park and socket timeouts to milliseconds and
//!   reads 0 as "none", so every deadline goes through `until`, which rounds up.
//! - *Global configuration*: may's scheduler starts on first use with the worker count it sees
//!   then, so [`serve`] configures may before creating any may object. Core pinning is turned off
//!   so the OS places workers like every other style's threads (and `--pin` CPU sets hold).
//!
//! # Layout
//! - [`serve`]: configure may, start the links, run the accept loop in a coroutine.
//! - `Signal`: the one wake-up primitive, also the flood links' [`LinkWaker`].
//! - `connection`: the reader, writer and fetch coroutines of one client connection.
//! - `upstream`: one WHATSAT's places exchange over may sockets.
//! - `links`: a driver and a watcher coroutine per neighbour link.
//! - `tests`: the worst-case request path, guarded at [`MIN_STACK_KIB`] and measured; a stalled
//!   client closed and a closed link reopened.

mod connection;
mod links;
mod upstream;

use std::io;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use herd_core::policy::{Accepted, Acceptor, FloodLinks, LinkWaker, PlacesPool};
use herd_core::{Limits, ServeOptions, Service, available_cores};
use may::net::TcpListener;
use may::sync::Semphore;

/// Coroutine stack when `--stack-kib` is not given. Real traffic touches under 8 KiB; the
/// deepest upstream JSON needs 139 KiB in the project's optimised builds and 372 KiB in an
/// unoptimised one (README, "The stack"), so 512 KiB covers every build with room to spare.
/// Only the pages a coroutine touches cost memory; the rest is address space.
pub const DEFAULT_STACK_KIB: usize = 512;
/// The smallest stack `--stack-kib` may ask for: the worst case measured in the project's builds
/// (139 KiB at opt-level 1) with a margin of 1.8. Smaller requests are raised to it and logged,
/// so no peer input can overflow a stack; `tests::worst_case_request_path_fits_the_smallest_allowed_stack`
/// holds this value to that promise.
pub const MIN_STACK_KIB: usize = 256;

/// A parked coroutine's wake-up call: a may semaphore that holds at most about one permit, so any
/// number of wakes before the wait cost one pass of the waiter's loop. Waking never blocks; waiting
/// parks the coroutine, not the worker thread.
pub(crate) struct Signal(Semphore);

impl Signal {
    pub(crate) fn new() -> Self {
        Self(Semphore::new(0))
    }

    /// Parks until woken or until `deadline` (`None`: no deadline).
    pub(crate) fn wait_until(&self, deadline: Option<Instant>) {
        match deadline {
            None => self.0.wait(),
            Some(due) => _ = self.0.wait_timeout(until(due)),
        }
    }
}

/// The time left until `due` as may must be given it: may keeps park and socket timeouts in whole
/// milliseconds, truncated, and reads 0 as "no timeout", so a wait of 0.7 ms would never end.
/// Rounded up instead: a wait ends at most a millisecond after its deadline, never before it.
pub(crate) fn until(due: Instant) -> Duration {
    let left = due.saturating_duration_since(Instant::now());
    Duration::from_millis(u64::try_from(left.as_millis()).unwrap_or(u64::MAX / 2) + 1)
}

impl LinkWaker for Signal {
    fn wake(&self) {
        if self.0.get_value() == 0 {
            self.0.post();
        }
    }
}

/// What every coroutine of one server shares (all of it `Sync`).
struct Shared<S> {
    service: Arc<S>,
    /// The places backend (`None`: WHATSATs are answered by `handle_line`, never fetched); each
    /// fetch coroutine holds it too.
    places: Option<Arc<upstream::Places>>,
    links: FloodLinks<Signal>,
    limits: Limits,
    /// How often a reader paused for back-pressure (a client slow to read its replies): a gauge.
    read_pauses: Arc<AtomicU64>,
}

/// Serves `service` on `listener` until the process exits.
pub fn serve<S: Service>(listener: std::net::TcpListener, service: Arc<S>, options: &ServeOptions) -> io::Result<()> {
    let requested = options.stack_kib.unwrap_or(DEFAULT_STACK_KIB);
    if requested < MIN_STACK_KIB {
        let why = format!("--stack-kib {requested} is below what the request path needs; using {MIN_STACK_KIB}");
        service.log().error("options", why);
    }
    let stack_words = requested.max(MIN_STACK_KIB) * 1024 / size_of::<usize>();
    serve_with_stack(listener, service, options, stack_words)
}

/// [`serve`] with the coroutine stack given in words, may's unit. An odd size makes may track the
/// whole stack and print each coroutine's peak usage when it ends: the stack-usage tests use that.
fn serve_with_stack<S: Service>(
    listener: std::net::TcpListener,
    service: Arc<S>,
    options: &ServeOptions,
    stack_words: usize,
) -> io::Result<()> {
    // Before anything touches may: the scheduler reads these when it starts.
    let workers = options.threads.unwrap_or_else(available_cores).max(1);
    may::config().set_workers(workers).set_stack_size(stack_words).set_worker_pin(false);

    // SAFETY: `into_raw_fd` hands over the only owner of an open listening socket, which the may
    // listener now owns and closes.
    let listener = unsafe { TcpListener::from_raw_fd(listener.into_raw_fd()) };
    let shared = Arc::new(Shared {
        places: options.places.map(|addr| Arc::new((addr, PlacesPool::new(&options.limits, service.stats())))),
        links: FloodLinks::new(options, Instant::now(), service.stats(), service.log(), |_| Signal::new()),
        limits: options.limits.clone(),
        read_pauses: service.stats().gauge("read_pauses"),
        service,
    });
    for (i, (_, addr)) in options.neighbours.iter().enumerate() {
        let (shared, addr) = (Arc::clone(&shared), *addr);
        may::go!(move || links::drive(&shared, i, addr));
    }
    may::go!(move || accept_loop(&listener, &shared))
        .join()
        .map_err(|_| io::Error::other("the accept coroutine panicked"))
}

/// Accepts forever, one coroutine per connection, as the [`Acceptor`] says. After an error (out of
/// descriptors, most likely) it sleeps as long as the acceptor says instead of spinning.
fn accept_loop<S: Service>(listener: &TcpListener, shared: &Arc<Shared<S>>) {
    let mut acceptor = Acceptor::new(&shared.limits, shared.service.stats(), shared.service.log());
    loop {
        let accepted = listener.accept();
        if accepted.as_ref().is_err_and(|e| e.kind() == io::ErrorKind::Interrupted) {
            continue;
        }
        match acceptor.on_accept(accepted, Instant::now) {
            Accepted::Serve((stream, _), admitted) => {
                let shared = Arc::clone(shared);
                may::go!(move || connection::serve(stream, shared, admitted));
            }
            Accepted::Refused => {} // past the cap: closed
            Accepted::Pause(until) => may::coroutine::sleep(until.saturating_duration_since(Instant::now())),
        }
    }
}

#[cfg(test)]
mod tests;
