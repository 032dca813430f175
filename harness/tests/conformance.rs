//! Black-box conformance suite for the proxy herd, over TCP, runnable against any style by name.
//!
//! Every case starts its own herd from the real binary: a places backend (`harness places`) and the
//! five servers of the default topology (`harness serve --impl <style> … --mode herd`), each on a
//! free loopback port, all killed when the case ends (also when it fails). A test client then
//! speaks the protocol of DESIGN.md to them with blocking sockets and checks every byte that comes
//! back: AT replies and their deltas, `?` for every invalid form, newest-wins, flooding within
//! 0.5 s, WHATSAT framing and JSON, pipelining, split lines, 100 concurrent clients, a server killed
//! and restarted, a server hung (SIGSTOP) under a burst of updates, oversized lines, vanishing
//! clients, a dead, faulty or slow places backend, clients that never read their replies, a
//! neighbour that never answers the link hello, echo mode, and forged updates, wrong keys and
//! replayed link handshakes, which must change nothing.
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
//! The cases, the client and the fixture live in the harness library ([`harness::verify`]), so that
//! `harness verify --impl NAME` runs the same cases against any implementation, guests included.
//! Guests are listed here too (`guests/`); their setup runs once, and a machine that cannot set
//! one up says SKIPPED for it (CI installs their runtimes and sets `HERDBENCH_REQUIRE_GUESTS`).

mod common;

use harness::verify;

/// Points the cases at the binary cargo built and their herds' files at cargo's temporary folder;
/// sets up a guest (once, cached). `false` when the case cannot run here: a guest whose setup
/// failed — said loudly, and a failure where `HERDBENCH_REQUIRE_GUESTS` is set (CI sets it).
fn ready(style: &str) -> bool {
    verify::configure(verify::Settings {
        exe: env!("CARGO_BIN_EXE_harness").into(),
        logs: std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("conformance"),
    });
    let guest = harness::server::guest::find(style).unwrap_or_else(|e| panic!("{style}: {e:#}"));
    let Some(guest) = guest else { return true };
    match guest.prepare() {
        Ok(_) => true,
        Err(e) if std::env::var_os("HERDBENCH_REQUIRE_GUESTS").is_some() => panic!("guest {style}: {e:#}"),
        Err(e) => {
            common::skipped(
                &format!("{style}'s conformance case"),
                &format!("guest {style} cannot be set up on this machine ({e:#}); .ci/run installs what it needs"),
            );
            false
        }
    }
}

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
            echo_mode_returns_every_line_unchanged,
            slow_upstream_answered_at_the_timeout,
            a_client_owed_past_max_output_is_closed,
            a_client_that_never_reads_is_closed_after_the_write_stall,
            unanswered_link_hello_is_abandoned_and_retried,
        );
    };
    (@cases $module:ident, $style:literal, $($case:ident),+ $(,)?) => {
        mod $module {
            $(
                #[test]
                fn $case() {
                    if crate::ready($style) {
                        harness::verify::cases::$case($style);
                    }
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
// Guests (guests/<name>): the same cases through `harness serve --impl <guest>`.
conformance!(guest_go, "go");
conformance!(guest_node, "node");
conformance!(guest_asyncio, "asyncio");
conformance!(guest_asyncio_uvloop, "asyncio+uvloop");
conformance!(guest_twisted, "twisted");
