//! The policy layer: every rule a server follows besides the protocol, written once.
//!
//! A style decides only how bytes move and how it waits. *When* to connect a flood link, how much
//! to queue for a neighbour, which upstream connection to use, when a client's replies are flushed,
//! when to stop reading a client and when to give up on it, how long to pause after an accept error —
//! those are decided here, by state machines in quinn-proto's manner: the caller passes `now`, feeds
//! events in (`on_connected`, `on_bytes`, `on_closed`, `on_timeout`) and drains work out
//! (`poll_transmit` + `consumed(n)`, `poll_timeout`). No sockets, threads or clocks inside; each
//! type documents the order of its calls.
//!
//! # Layout
//! - [`Limits`] (in [`crate::limits`], below the policy and the options that carry it): every
//!   constant the machines use, documented, overridable, recorded in results.
//! - [`link`]: [`FloodLink`], one per neighbour, and [`FloodLinks`], the set a server floods through.
//! - [`upstream`]: [`PlacesCall`] (one WHATSAT's exchange) and [`PlacesPool`] (kept-alive connections).
//! - [`output`]: [`OutputBuffer`], a client connection's replies and back-pressure.
//! - [`session`]: [`handle_line`], what every style does with one line, and [`Session`], the order a
//!   connection that answers in order uses the machines in.
//! - [`accept`]: [`Acceptor`], the pause after an accept error and the cap on connections.

pub mod accept;
pub mod link;
pub mod output;
pub mod session;
pub mod upstream;

pub use accept::{AcceptBackoff, Accepted, Acceptor, Admission, Admitted};
pub use link::{FloodLink, FloodLinks, LinkSocket, LinkState, LinkWaker, Queued, SharedLink};
pub use output::{Close, OutputBuffer};
pub use session::{Fetch, Handled, Session, Shared, handle_line};
pub use upstream::{PlacesBackend, PlacesCall, PlacesPool, Step};

pub use crate::limits::Limits;
