//! Where each process of a run went (several hosts), as the result file records it.

use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where one process of a run went, as the result file records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostRecord {
    /// `places`, a member's name, or `generator-<k>`.
    pub process: String,
    pub host: String,
    pub address: IpAddr,
    /// The launcher's command words, filled in (empty: this machine).
    pub launcher: Vec<String>,
    /// Whether the process the harness started is the program itself on this kernel (an exec
    /// launcher such as `ip netns exec`), so that CPU, memory and system calls read from `/proc`
    /// are its own; `false` (`ssh`): they are the launcher's.
    pub local_process: bool,
}
