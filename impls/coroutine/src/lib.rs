//! Co-operative multitasking style: stackful coroutines on `may`, code that reads like blocking code.
//!
//! ```text
//!   may workers (--threads, each with its own epoll loop; coroutines move between them)
//!   ┌───────────────────────────────────────────────────────────────────────────────────────┐
//!   │ accept ──go!──► reader ── Service::handle ──► queue (in request order) ──► writer      │
//!   │   loop            │  └─ WHATSAT ──go!──► fetch: places pool ─► Service::complete ─┘    │
//!   │                   └─ flood ──► may channel ──► link coroutine per neighbour ──► PEER… │
//!   └───────────────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! Every piece is written as if it blocked: `accept()`, `read()`, `write_all()`, `recv()`,
//! `connect_timeout()`. The difference from the thread styles is underneath: may's sockets are
//! non-blocking, and a call that would block saves the coroutine's stack, registers the socket
//! with the worker's epoll, and switches to another coroutine on the same thread. A read tries the
//! socket first and parks only on `WouldBlock`, which is the optimistic read the design asks for.
//! Coroutines are cheap (a pooled stack, a context switch of a few registers), so this style
//! spends them freely: a reader and a writer per connection, one per WHATSAT upstream call, one
//! per neighbour link, and one for the accept loop.
//!
//! Ordering falls out of the structure. The reader runs one connection's lines in arrival order,
//! so a WHATSAT sees the IAMAT before it; it queues each reply (or, for a WHATSAT, the receiving
//! end of the fetch coroutine's answer) on a channel, and the writer writes them in that order,
//! waiting on a pending WHATSAT while later replies queue behind it. A slow upstream therefore
//! delays only the connection that asked, and only from that reply on; other connections, and the
//! reader of this one, keep going.
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
//! - *Blocking calls park the worker thread*: nothing here uses `std::net`, `std::thread::sleep`
//!   or a blocking std channel. herd-core's store and stats take short std mutex sections that
//!   never wait on I/O; the log sink is a non-blocking `try_send`. The upstream pool's idle list is
//!   a may mutex, so contention parks a coroutine rather than a worker.
//! - *Thread-local storage across a yield*: a coroutine may resume on another worker, so a
//!   reference into TLS taken before a yield could point at another thread's data. No code here
//!   keeps a TLS reference (or a std mutex guard) across a call that can yield.
//! - *`go!` is an `unsafe` spawn*: may cannot check the two rules above, nor the stack size, so
//!   `coroutine::spawn` is `unsafe` and `go!` hides the block. Our spawns are sound because every
//!   closure is `Send + 'static` owning its data (the macro checks that), honours the two rules
//!   above, and runs on a stack sized for its worst case.
//! - *Global configuration*: may's scheduler starts on first use with the worker count it sees
//!   then, so [`serve`] configures may before creating any may object. Core pinning is turned off
//!   so the OS places workers like every other style's threads (and `--pin` CPU sets hold).
//!
//! # Layout
//! - [`serve`]: configure may, start the links, run the accept loop in a coroutine.
//! - `connection`: the reader, writer and fetch coroutines of one client connection.
//! - `upstream`: the places client: a pool of kept-alive connections with may socket timeouts.
//! - `links`: flood links, a coroutine per neighbour fed by a may channel.
//! - `tests`: the worst-case request path, guarded at [`MIN_STACK_KIB`] and measured.

mod connection;
mod links;
mod upstream;

use std::io;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use herd_core::{ServeOptions, ServerStats, Service, available_cores};
use may::net::TcpListener;

use crate::links::FloodLinks;
use crate::upstream::PlacesPool;

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
/// Pause after an accept error (e.g. out of descriptors) so the loop does not spin on it.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// What every coroutine of one server shares (all of it `Sync`; may's channel senders are not,
/// so the flood links travel separately, cloned into each connection).
#[derive(Debug)]
struct Shared<S> {
    service: Arc<S>,
    places: Option<PlacesPool>,
    max_line: usize,
    write_timeout: Duration,
    /// How often a reader had to wait for its writer (a client slow to read): a gauge.
    window_waits: Arc<AtomicU64>,
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
    let links = FloodLinks::spawn(&options.name, &options.neighbours, &service, options.write_timeout);
    let shared = Arc::new(Shared {
        places: options.places.map(|addr| PlacesPool::new(addr, options.upstream_timeout, service.stats())),
        max_line: options.max_line,
        write_timeout: options.write_timeout,
        window_waits: service.stats().gauge("reply_window_waits"),
        service,
    });
    may::go!(move || accept_loop(&listener, &links, &shared))
        .join()
        .map_err(|_| io::Error::other("the accept coroutine panicked"))
}

/// Accepts forever, one coroutine per connection. Errors (out of descriptors, most likely) are
/// logged and the loop pauses briefly instead of spinning.
fn accept_loop<S: Service>(listener: &TcpListener, links: &FloodLinks, shared: &Arc<Shared<S>>) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                ServerStats::bump(&shared.service.stats().connections);
                let (links, shared) = (links.clone(), Arc::clone(shared));
                may::go!(move || connection::serve(stream, links, shared));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                shared.service.log().error("accept", e);
                may::coroutine::sleep(ACCEPT_BACKOFF);
            }
        }
    }
}

#[cfg(test)]
mod tests;
