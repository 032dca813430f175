//! Black-box conformance suite for the proxy herd, over TCP, runnable against any style by name.
//!
//! Every case starts its own herd from the real binary: a places backend (`harness places`) and the
//! five servers of the default topology (`harness serve --impl <style> … --mode herd`), each on a
//! free loopback port, all killed when the case ends (also when it fails). A test client then
//! speaks the protocol of DESIGN.md to them with blocking sockets and checks every byte that comes
//! back: AT replies and their deltas, `?` for every invalid form, newest-wins, flooding within
//! 0.5 s, WHATSAT framing and JSON, pipelining, split lines, 100 concurrent clients, a server killed
//! and restarted, a server hung (SIGSTOP) under a burst of updates, oversized lines, vanishing
//! clients, a dead or faulty places backend, and forged updates, wrong keys and replayed link
//! handshakes, which must change nothing.
//!
//! Run it for one style (test names are `<style>::<case>`):
//!
//! ```text
//! cargo test -p harness --test conformance threadpool
//! cargo test -p harness --test conformance threadpool::flooding   # one case
//! ```
//!
//! A new style adds itself with one line at the bottom of this file, naming the module and the
//! `--impl` name, once `harness serve --impl <name>` knows it:
//!
//! ```text
//! conformance!(future_tokio, "future-tokio");
//! ```
//!
//! # Layout
//! - `conformance/herd.rs`: the fixture, [`herd::Herd`]: the harness's own herd launcher
//!   (`harness::herd`), panicking on failure, with a log directory per herd.
//! - `conformance/client.rs`: [`client::Client`], a blocking line client with 2 s read timeouts, and
//!   the reply shapes ([`client::AtLine`], [`client::WhatsatReply`]).
//! - `conformance/cases.rs`: the cases, each `fn(style: &str)`.

#[path = "conformance/cases.rs"]
mod cases;
#[path = "conformance/client.rs"]
mod client;
#[path = "conformance/herd.rs"]
mod herd;

/// `conformance!(module, "style")`: a module of `#[test]`s, one per case, against `style`.
macro_rules! conformance {
    ($module:ident, $style:literal) => {
        conformance!(@cases $module, $style,
            sample_exchange,
            white_space_is_flexible,
            invalid_forms,
            older_update_ignored,
            flooding_reaches_every_server,
            whatsat_json,
            pipelined_lines_answered_in_order,
            a_late_reader_is_paused_not_dropped,
            pipelined_whatsat_sees_preceding_iamat,
            split_line_reassembled,
            concurrent_clients,
            herd_survives_and_relinks_a_restarted_server,
            oversized_line_closes_only_its_connection,
            abrupt_disconnects_are_harmless,
            dead_upstream_still_framed,
            failing_upstream_still_framed,
            hung_neighbour_drops_bounded_and_recovers,
            forged_updates_change_nothing,
            wrong_key_and_replayed_links_are_refused,
            connections_past_the_cap_are_closed,
        );
    };
    (@cases $module:ident, $style:literal, $($case:ident),+ $(,)?) => {
        mod $module {
            $(
                #[test]
                fn $case() {
                    crate::cases::$case($style);
                }
            )+
        }
    };
}

conformance!(threadpool, "threadpool");
conformance!(thread_per_request, "thread-per-request");
conformance!(two_stage, "two-stage");
conformance!(future_tokio, "future-tokio");
conformance!(coroutine, "coroutine");
conformance!(event_handler, "event-handler");
conformance!(future_async_std, "future-async-std");
conformance!(future_smol, "future-smol");
conformance!(callback, "callback");
conformance!(completion_monoio, "completion-monoio");
