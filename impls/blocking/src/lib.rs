//! Blocking building blocks for the thread styles (threadpool, thread-per-request, two-stage).
//!
//! These styles wait by blocking an OS thread. What they do around the protocol — link to
//! neighbours, fetch places, write replies under back-pressure — is decided by herd-core's policy
//! machines; this crate only drives them with blocking calls, once for the three styles, so they
//! differ only in how they use threads, which is what they compare.
//!
//! # Layout
//! - [`listener`]: [`Listener`], the accept side of a mio reader loop, under herd-core's `Acceptor`.
//! - [`links`]: one thread per neighbour driving its `FloodLink`.
//! - [`upstream`]: [`PlacesClient`], blocking exchanges under `PlacesCall` / `PlacesPool`.
//! - [`output`]: [`output::flush`], a client's replies under `OutputBuffer`.
//! - [`wait`]: `poll(2)` on a socket: writable, or closed by its peer.

pub mod links;
pub mod listener;
pub mod output;
pub mod upstream;
pub mod wait;

pub use links::FloodLinks;
pub use listener::Listener;
pub use upstream::PlacesClient;
