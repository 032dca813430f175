//! Blocking building blocks for the thread styles (threadpool, thread-per-request, two-stage).
//!
//! These styles wait by blocking an OS thread, so they share the blocking versions of the two
//! outbound conversations every herd server has: the places upstream and the flood links. Keeping
//! them here means the three styles differ only in how they use threads, which is what they compare.
//!
//! # Layout
//! - [`upstream`]: [`PlacesClient`], one kept-alive HTTP/1.1 connection, blocking with a deadline.
//! - [`links`]: [`FloodLinks`], one sender thread per neighbour that reconnects on its own.
//! - [`wait`]: waiting for a socket to become readable/writable with `poll(2)`.

pub mod links;
pub mod upstream;
pub mod wait;

pub use links::FloodLinks;
pub use upstream::PlacesClient;
