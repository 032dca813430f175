//! herdbench's record: the result file and everything it contains, at the bottom of the harness.
//!
//! A result file is one JSON document per run ([`result::RunResult`], versioned, with a committed
//! JSON Schema). This crate defines it and what it embeds, and nothing that produces it: no
//! sockets, threads, child processes or clocks of a run. The harness's runtime fills these types;
//! `herd-report` reads them; both depend on this crate, and it on serde, schemars, hdrhistogram
//! and herd-core's types only.
//!
//! # Layout (dependency order, lowest first)
//! - [`units`]: command-line units (rates, durations, byte sizes, percentages).
//! - [`counters`]: a process's kernel counters over the measured window.
//! - [`workload`]: [`workload::Mode`] and the workload files (built in, or a path).
//! - [`catalogue`]: the implementations' metadata ([`catalogue::ImplMeta`]), styles and guests.
//! - [`scenario`], [`wan`], [`hosts`]: what a scenario run, a WAN herd and a run over several hosts
//!   record.
//! - [`result`]: the run's record, its parameters, summary, histograms and schema.
//! - [`merge`]: several generators' results of one load as one result.

pub mod catalogue;
pub mod counters;
pub mod hosts;
pub mod merge;
pub mod result;
pub mod scenario;
pub mod units;
pub mod wan;
pub mod workload;
