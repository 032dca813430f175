//! herd-core: the proxy-herd protocol with no I/O, no threads and no clock.
//!
//! Every concurrency style in herdbench drives this crate and differs only in how bytes move and how
//! it waits. The caller passes the current time; nothing here touches a socket.
//!
//! # Layout
//! - [`framing`]: bounded line framing ([`LineFramer`]).
//! - [`auth`]: the herd key and the link handshake that proves a member holds it.
//! - [`command`]: parsing and formatting IAMAT / WHATSAT / AT / PEER / `?` lines.
//! - [`time`], [`location`]: exact timestamps and ISO 6709 coordinates.
//! - [`store`]: the newest-wins [`LocationStore`]: one compact entry a client, a TTL and a cap.
//! - [`service`]: the [`Service`] trait styles drive; [`Herd`] and [`Echo`]; the flood decision.
//! - [`places`]: HTTP/1.1 request encoder, response decoder and JSON trimming for the places upstream.
//! - [`order`]: [`ReplyOrder`], for styles that finish one connection's requests out of order.
//! - [`policy`]: the policy layer — flood links, the places client, output back-pressure, accept
//!   back-off — as sans-IO state machines, and the [`Limits`] they share.
//! - [`limits`]: [`Limits`], every constant of the policy layer, in one value.
//! - [`options`]: [`ServeOptions`], the wiring every style receives.
//! - [`stats`], [`log`]: counters and structured events; the caller decides where they go.

pub mod auth;
pub mod command;
pub mod framing;
pub mod limits;
pub mod location;
pub mod log;
pub mod options;
pub mod order;
pub mod places;
pub mod policy;
pub mod service;
pub mod stats;
pub mod store;
pub mod time;

pub use auth::HerdKey;
pub use command::{AtRecord, Request, RequestKind};
pub use framing::{DEFAULT_MAX_LINE, Frame, LineFramer};
pub use limits::Limits;
pub use location::Location;
pub use log::{Event, EventLog, EventSink};
pub use options::{IoDriver, ServeOptions, available_cores};
pub use order::ReplyOrder;
pub use places::{Decoded, HttpResponse, PlacesQuery, UpstreamError};
pub use service::{Echo, Flood, Herd, HerdConfig, Link, Outcome, PlacesLookup, Reply, Service};
pub use stats::{ServerStats, StatsSnapshot};
pub use store::LocationStore;
pub use time::{Delta, Timestamp};
