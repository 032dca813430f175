//! Where a run's processes go and how they are started: the herd and its launchers.
//!
//! - [`hosts`]: launchers (`ssh`, `ip netns exec`, or none) and the hosts file that places a
//!   run's processes.
//! - [`wan`]: a WAN herd on one machine (members in network namespaces, links through delaying
//!   relays).
//! - [`herd`]: the herd launcher: the places backend and the servers as child processes.

pub mod herd;
pub mod hosts;
pub mod wan;
