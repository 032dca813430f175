//! The conformance cases, each a function of the style's name that starts its own herd.
//! [`super::CASES`] lists them for `harness verify`; `conformance!` in harness/tests/conformance.rs
//! turns every one into a `#[test]` per style.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use herd_core::{HerdKey, Limits, auth};

use super::client::{AtLine, Client, READ_TIMEOUT, WhatsatReply, now_nanos, now_text, time_text};
use super::fixture::{ECHO, Herd, SERVERS, Upstream};

/// The DESIGN.md sample.
const KIWI: &str = "kiwi.cs.ucla.edu";
const UCLA: &str = "+34.068930-118.445127";
const SAMPLE_TIME: &str = "1479413884.392014450";
/// Somewhere else, to tell two updates of one client apart.
const MIT: &str = "+42.360082-071.058880";
/// How soon a flood must be visible at every server of a healthy herd.
const FLOOD_DEADLINE: Duration = Duration::from_millis(500);
/// Interval between two WHATSAT polls of one server.
const POLL: Duration = Duration::from_millis(20);
/// The places backend answers every non-polar query with this many places (harness `places`).
const BACKEND_RESULTS: usize = 20;

const SECOND: i128 = 1_000_000_000;

// ---------------------------------------------------------------------------------------------
// Helpers

/// Where `at_line` (newline included) became visible through WHATSAT at each of `servers`, as time
/// since `since`; polls every server every [`POLL`] until all show it or `within` has passed.
fn visibility(
    herd: &Herd,
    servers: &[&str],
    client: &str,
    at_line: &str,
    since: Instant,
    within: Duration,
) -> Vec<(String, Option<Duration>)> {
    let mut pollers: Vec<(String, Client, Option<Duration>)> =
        servers.iter().map(|s| ((*s).to_owned(), herd.client(s), None)).collect();
    loop {
        for (name, client_conn, seen) in pollers.iter_mut().filter(|p| p.2.is_none()) {
            let reply = client_conn
                .try_whatsat(client, "10", "1")
                .unwrap_or_else(|e| panic!("polling {name} with WHATSAT {client}: {e}"));
            if reply.split_inclusive('\n').next() == Some(at_line) {
                *seen = Some(since.elapsed());
            }
        }
        if pollers.iter().all(|p| p.2.is_some()) || since.elapsed() >= within {
            return pollers.into_iter().map(|(name, _, seen)| (name, seen)).collect();
        }
        thread::sleep(POLL);
    }
}

/// Panics unless `at_line` is visible at every one of `servers` within `within` of `since`.
fn assert_visible(herd: &Herd, servers: &[&str], client: &str, at_line: &str, since: Instant, within: Duration) {
    let seen = visibility(herd, servers, client, at_line, since, within);
    let late: Vec<_> = seen.iter().filter(|(_, t)| t.is_none_or(|t| t > within)).collect();
    assert!(late.is_empty(), "{at_line:?} not visible within {within:?} at: {late:?} (all: {seen:?})");
}

/// Waits until the herd floods: an update at each server is seen at all the others (re-sent newer
/// while links are still being made at start-up). Only tests about flooding need this.
fn wait_linked(herd: &Herd) {
    let deadline = Instant::now() + Duration::from_secs(5);
    for origin in SERVERS {
        let others: Vec<&str> = SERVERS.iter().copied().filter(|s| *s != origin).collect();
        let client = format!("settle-{origin}");
        let mut conn = herd.client(origin);
        loop {
            let at = conn.iamat(&client, UCLA, &now_text());
            let seen = visibility(herd, &others, &client, &at, Instant::now(), Duration::from_millis(300));
            if seen.iter().all(|(_, t)| t.is_some()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the {} herd did not link up within 5 s: {origin}'s update reached {seen:?}",
                herd.style()
            );
        }
    }
}

fn whatsat_reply(reply: &str, context: &str) -> WhatsatReply {
    WhatsatReply::parse(reply).unwrap_or_else(|e| panic!("{context}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// 1. The sample exchange

/// `IAMAT` gets `AT <server> <delta> <client> <location> <time>` with a nanosecond signed delta.
pub fn sample_exchange(style: &str) {
    let herd = Herd::start(style);
    let mut alford = herd.client("Alford");

    let sent = now_nanos();
    let time = time_text(sent);
    let reply = alford.request(&format!("IAMAT {KIWI} {UCLA} {time}"));
    let received = now_nanos();
    let at = AtLine::parse(&reply).expect("the reply to IAMAT is an AT line");
    assert_eq!(reply, format!("AT Alford {} {KIWI} {UCLA} {time}\n", at.delta), "reply fields and order");
    let delta = at.delta_nanos().expect("a signed delta with nine decimals");
    assert!(
        delta.abs() < 5 * SECOND,
        "delta {} is far from the real difference (< {} ms)",
        at.delta,
        (received - sent) / 1_000_000
    );

    let reply = alford.request(&format!("IAMAT {KIWI} {UCLA} {SAMPLE_TIME}"));
    let at = AtLine::parse(&reply).expect("the reply to the DESIGN sample is an AT line");
    assert_eq!(
        reply,
        format!("AT Alford {} {KIWI} {UCLA} {SAMPLE_TIME}\n", at.delta),
        "the time text is echoed exactly"
    );
    assert!(at.delta.starts_with('+'), "a client time in the past gives a positive delta: {reply:?}");
    let expected = now_nanos() - 1_479_413_884_392_014_450;
    let delta = at.delta_nanos().expect("a signed delta with nine decimals");
    assert!((delta - expected).abs() < 5 * SECOND, "delta {} should be about {}", at.delta, time_text(expected));

    // A client clock 100 s ahead: a negative delta, same shape.
    let ahead = time_text(now_nanos() + 100 * SECOND);
    let reply = alford.request(&format!("IAMAT {KIWI} {UCLA} {ahead}"));
    let at = AtLine::parse(&reply).expect("the reply to a future time is an AT line");
    assert_eq!(reply, format!("AT Alford {} {KIWI} {UCLA} {ahead}\n", at.delta));
    let delta = at.delta_nanos().expect("a signed delta with nine decimals");
    assert!(
        at.delta.starts_with('-') && (delta + 100 * SECOND).abs() < 5 * SECOND,
        "delta {} should be about -100 s",
        at.delta
    );
}

/// Runs of spaces and tabs separate fields; leading and trailing white space and a CR are ignored.
pub fn white_space_is_flexible(style: &str) {
    let herd = Herd::start(style);
    let mut ball = herd.client("Ball");
    let time = now_text();
    let reply = ball.request(&format!(" \tIAMAT  {KIWI}\t\t{UCLA} \t {time}  \r"));
    let at = AtLine::parse(&reply).expect("white space variants are a valid IAMAT");
    assert_eq!(reply, format!("AT Ball {} {KIWI} {UCLA} {time}\n", at.delta));
    let answer = ball.whatsat(KIWI, "\t10 ", " 2\t");
    let answer = whatsat_reply(&answer, "WHATSAT with tabs and spaces");
    assert_eq!(answer.at_line, reply);
}

// ---------------------------------------------------------------------------------------------
// 2. Invalid forms

/// Everything the protocol does not accept is answered `? <line as sent>` and the connection lives on.
pub fn invalid_forms(style: &str) {
    let herd = Herd::start(style);
    let mut conn = herd.client("Hamilton");
    // A known client, so the WHATSAT range checks below cannot be passed off as "unknown client".
    conn.iamat(KIWI, UCLA, &now_text());
    let t = SAMPLE_TIME;
    let lines: Vec<Vec<u8>> = [
        format!("IAMTA {KIWI} {UCLA} {t}"),
        format!("IAMAT ghost1 {UCLA}"),
        format!("IAMAT ghost2 {UCLA} {t} extra"),
        "IAMAT".to_owned(),
        format!("IAMAT ghost3 34.068930-118.445127 {t}"),
        format!("IAMAT ghost4 +91.000000-118.445127 {t}"),
        format!("IAMAT ghost5 +34.068930-181.000000 {t}"),
        format!("IAMAT ghost6 {UCLA} -{t}"),
        format!("IAMAT ghost7 {UCLA} abc"),
        format!("IAMAT ghost8 {UCLA} 1479413884.39201445x"),
        format!("WHATSAT {KIWI} 10"),
        format!("WHATSAT {KIWI} 10 5 extra"),
        "WHATSAT".to_owned(),
        format!("WHATSAT {KIWI} 0 5"),
        format!("WHATSAT {KIWI} 51 5"),
        format!("WHATSAT {KIWI} 1000 5"),
        format!("WHATSAT {KIWI} -1 5"),
        format!("WHATSAT {KIWI} abc 5"),
        format!("WHATSAT {KIWI} 10 0"),
        format!("WHATSAT {KIWI} 10 21"),
        format!("WHATSAT {KIWI} 10 1000"),
        "WHATSAT nobody.example 10 5".to_owned(),
        "at Alford +0.1 kiwi +1-2 1".to_owned(),
        String::new(),
        "   \t ".to_owned(),
        "#$%^ garbage !!".to_owned(),
    ]
    .into_iter()
    .map(String::into_bytes)
    .chain([b"\x01\xff\xfe IAMAT".to_vec()])
    .collect();
    for line in &lines {
        let mut sent = line.clone();
        sent.push(b'\n');
        conn.send(&sent);
        let reply = conn.read_line_bytes();
        let mut expected = b"? ".to_vec();
        expected.extend_from_slice(&sent);
        assert_eq!(
            String::from_utf8_lossy(&reply),
            String::from_utf8_lossy(&expected),
            "the reply to {:?} must be `? ` and the line as sent",
            String::from_utf8_lossy(line)
        );
    }
    // None of the rejected IAMATs was stored.
    for ghost in 1..=8 {
        let reply = conn.request(&format!("WHATSAT ghost{ghost} 10 5"));
        assert_eq!(reply, format!("? WHATSAT ghost{ghost} 10 5\n"), "a rejected IAMAT must not be stored");
    }
    // And the connection still works.
    conn.iamat("after.invalid", UCLA, &now_text());
}

// ---------------------------------------------------------------------------------------------
// 3. Older updates are ignored

/// Newer wins, at the server that got both and across the herd.
pub fn older_update_ignored(style: &str) {
    let herd = Herd::start(style);
    wait_linked(&herd);
    let now = now_nanos();
    let (t1, t2) = (time_text(now - SECOND), time_text(now));

    // One server: T2 then T1.
    let mut alford = herd.client("Alford");
    let newer = alford.iamat("lark", UCLA, &t2);
    alford.iamat("lark", MIT, &t1);
    let shown = whatsat_reply(&alford.whatsat("lark", "10", "1"), "WHATSAT lark at Alford");
    assert_eq!(shown.at_line, newer, "an older IAMAT must not replace a newer one");

    // Across servers: T2 at Alford, and at once T1 at Ball (almost always before T2's flood gets
    // there, so Ball stores and floods T1). Everyone must end with T2; Alford must never show T1.
    let mut ball = herd.client("Ball");
    alford.send(format!("IAMAT wren {UCLA} {t2}\n").as_bytes());
    ball.send(format!("IAMAT wren {MIT} {t1}\n").as_bytes());
    let newer = alford.read_line();
    assert!(newer.starts_with("AT Alford "), "IAMAT wren at Alford: {newer:?}");
    let older = ball.read_line();
    assert!(
        older.starts_with("AT Ball ") && older.contains(MIT),
        "IAMAT wren at Ball (older) still gets its AT: {older:?}"
    );
    let started = Instant::now();
    let mut alford_poll = herd.client("Alford");
    while started.elapsed() < Duration::from_millis(200) {
        let shown = whatsat_reply(&alford_poll.whatsat("wren", "10", "1"), "WHATSAT wren at Alford");
        assert_eq!(shown.at_line, newer, "Alford replaced its newer update by Ball's older one");
        thread::sleep(POLL);
    }
    assert_visible(&herd, &SERVERS, "wren", &newer, started, Duration::from_millis(700));
}

// ---------------------------------------------------------------------------------------------
// 4. Flooding

/// An IAMAT at Alford is visible at every other server within [`FLOOD_DEADLINE`].
pub fn flooding_reaches_every_server(style: &str) {
    let herd = Herd::start(style);
    wait_linked(&herd);
    let mut alford = herd.client("Alford");
    for round in 0..3 {
        let client = format!("gull{round}");
        let started = Instant::now();
        let at = alford.iamat(&client, UCLA, &now_text());
        let seen = visibility(&herd, &["Ball", "Hamilton", "Holiday", "Welsh"], &client, &at, started, FLOOD_DEADLINE);
        for (server, took) in &seen {
            let took = took.unwrap_or_else(|| {
                panic!("{client} from Alford not visible at {server} within {FLOOD_DEADLINE:?}: {seen:?}")
            });
            assert!(took <= FLOOD_DEADLINE, "{client} reached {server} after {took:?} (> {FLOOD_DEADLINE:?})");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 5. WHATSAT replies

/// AT line as stored, then the places JSON trimmed to the bound, then exactly two newlines.
pub fn whatsat_json(style: &str) {
    let herd = Herd::start(style);
    wait_linked(&herd);
    let mut holiday = herd.client("Holiday");
    let stored = holiday.iamat(KIWI, UCLA, &now_text());
    for bound in [1usize, 5, 20] {
        let reply = holiday.whatsat(KIWI, "50", &bound.to_string());
        let answer = whatsat_reply(&reply, &format!("WHATSAT {KIWI} 50 {bound}"));
        assert_eq!(answer.at_line, stored, "the first line is the stored AT line, exactly");
        assert_eq!(answer.status(), "OK", "{reply}");
        let results = answer.results().unwrap_or_else(|| panic!("no results array: {reply}"));
        assert!(results <= bound, "{results} results for bound {bound}");
        assert_eq!(results, bound.min(BACKEND_RESULTS), "the backend has {BACKEND_RESULTS} places for this query");
        // Nothing follows the two newlines: the next reply starts right after them.
        assert_eq!(holiday.request("NEXT"), "? NEXT\n", "bytes after the WHATSAT reply's two newlines");
    }
    let json = whatsat_reply(&holiday.whatsat(KIWI, "10", "3"), "WHATSAT radius 10").json;
    let first = &json["results"][0]["geometry"]["location"];
    assert!(first["lat"].is_f64() && first["lng"].is_f64(), "places keep the Nearby Search shape: {json}");
    // Elsewhere in the herd, the flooded line is the origin's, unchanged.
    let started = Instant::now();
    assert_visible(&herd, &["Ball", "Welsh"], KIWI, &stored, started, FLOOD_DEADLINE);
    let mut welsh = herd.client("Welsh");
    let answer = whatsat_reply(&welsh.whatsat(KIWI, "50", "2"), "WHATSAT at Welsh");
    assert_eq!(answer.at_line, stored);
    assert_eq!(answer.results(), Some(2));
}

// ---------------------------------------------------------------------------------------------
// 6. Pipelining and 7. split lines

/// Several lines in one write are all answered, in order.
pub fn pipelined_lines_answered_in_order(style: &str) {
    let herd = Herd::start(style);
    let mut conn = herd.client("Welsh");
    for round in 0..5 {
        let (a, b) = (format!("pipe-a{round}"), format!("pipe-b{round}"));
        let (ta, tb) = (now_text(), now_text());
        conn.send(format!("IAMAT {a} {UCLA} {ta}\nWHATSAT {a} 10 2\nIAMTA junk\nIAMAT {b} {MIT} {tb}\n").as_bytes());
        let first = conn.read_line();
        let at_a = AtLine::parse(&first).unwrap_or_else(|e| panic!("round {round}, reply 1 (IAMAT {a}): {e}"));
        assert_eq!((at_a.client.as_str(), at_a.time.as_str()), (a.as_str(), ta.as_str()), "round {round}, reply 1");
        let second = conn.read_whatsat();
        let answer =
            whatsat_reply(&second, &format!("round {round}, reply 2 (WHATSAT {a} after IAMAT {a} in the same write)"));
        assert_eq!(answer.at_line, first, "round {round}, reply 2");
        assert_eq!(answer.results(), Some(2), "round {round}, reply 2");
        assert_eq!(conn.read_line(), "? IAMTA junk\n", "round {round}, reply 3");
        let fourth = conn.read_line();
        let at_b = AtLine::parse(&fourth).unwrap_or_else(|e| panic!("round {round}, reply 4 (IAMAT {b}): {e}"));
        assert_eq!((at_b.client.as_str(), at_b.time.as_str()), (b.as_str(), tb.as_str()), "round {round}, reply 4");
    }
}

/// A client that pipelines far more than the server may owe it and reads only later is paused,
/// not dropped: once it reads, every reply comes in order, and the connection still answers.
pub fn a_late_reader_is_paused_not_dropped(style: &str) {
    // ~4.8 MB of requests and ~6.8 MB of replies: more than the kernel holds for an unread client
    // (a 4 MiB send buffer at most, and a receive buffer that grows only while it is read).
    const LINES: usize = 80_000;
    // A small `pause_output`, so the server stops reading soon after the sockets are full.
    let limits = Limits { flush_at: 1024, pause_output: 4 * 1024, ..Limits::default() };
    let herd = Herd::start_with_limits(style, &limits);
    let mut conn = herd.client("Alford");
    let times: Vec<String> = (0..LINES).map(|i| time_text(now_nanos() + i as i128)).collect();
    let requests: String = times.iter().map(|t| format!("IAMAT late-reader {UCLA} {t}\n")).collect();
    let mut writer = conn.writer();
    let sender = thread::spawn(move || writer.write_all(requests.as_bytes()));
    // Unread, the replies fill the socket buffers and then the server's output buffer, which
    // stops the server reading; the rest of the requests wait in the kernel.
    thread::sleep(Duration::from_millis(500));
    for (i, time) in times.iter().enumerate() {
        let reply = conn.try_read_line().unwrap_or_else(|e| {
            let errors: Vec<_> = herd.events("Alford").into_iter().filter(|e| e["event"] == "error").collect();
            panic!("reply {i} of {LINES}: {e}; Alford's errors: {errors:?}")
        });
        let at = AtLine::parse(&reply).unwrap_or_else(|e| panic!("reply {i}: {e}"));
        assert_eq!((at.client.as_str(), at.time.as_str()), ("late-reader", time.as_str()), "reply {i} in order");
    }
    sender.join().expect("the writer thread").expect("every request was written");
    let time = now_text();
    let reply = conn.iamat("late-reader", UCLA, &time);
    assert!(AtLine::parse(&reply).is_ok_and(|at| at.time == time), "still served afterwards: {reply:?}");
}

/// A line that arrives in two writes gets one reply.
pub fn split_line_reassembled(style: &str) {
    let herd = Herd::start(style);
    let mut conn = herd.client("Alford");
    let time = now_text();
    let line = format!("IAMAT {KIWI} {UCLA} {time}\n");
    let (head, tail) = line.split_at(line.len() / 2);
    conn.send(head.as_bytes());
    thread::sleep(Duration::from_millis(50));
    conn.send(tail.as_bytes());
    let reply = conn.read_line();
    let at = AtLine::parse(&reply).expect("one AT reply to the reassembled line");
    assert_eq!(reply, format!("AT Alford {} {KIWI} {UCLA} {time}\n", at.delta));
    // Split inside the terminating newline's neighbourhood too, and check nothing extra came back.
    conn.send(format!("WHATSAT {KIWI} 10 1").as_bytes());
    thread::sleep(Duration::from_millis(50));
    conn.send(b"\nNEXT\n");
    let answer = whatsat_reply(&conn.read_whatsat(), "WHATSAT split before its newline");
    assert_eq!(answer.at_line, reply);
    assert_eq!(conn.read_line(), "? NEXT\n");
}

// ---------------------------------------------------------------------------------------------
// 8. Many clients at once

/// 100 concurrent clients, each with its own id, spread over the herd; every reply correct.
pub fn concurrent_clients(style: &str) {
    const CLIENTS: usize = 100;
    const ROUNDS: i128 = 3;
    let herd = Herd::start(style);
    let start = Arc::new(Barrier::new(CLIENTS));
    let base = now_nanos();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let server = SERVERS[i % SERVERS.len()];
            let addr = herd.addr(server);
            let start = Arc::clone(&start);
            thread::Builder::new()
                .name(format!("client-{i}"))
                .stack_size(256 * 1024)
                .spawn(move || -> Result<(), String> {
                    let conn = Client::try_connect(addr);
                    // Every thread reaches the barrier, also one that could not connect.
                    start.wait();
                    let mut conn = conn.map_err(|e| format!("client {i}: connecting to {server}: {e}"))?;
                    let id = format!("crowd-{i}.example");
                    let location = format!("+{:02}.{:06}-118.445127", i % 80, i);
                    for round in 0..ROUNDS {
                        let time = time_text(base + round * 1_000_000 + i128::try_from(i).unwrap_or(0));
                        conn.try_send(format!("IAMAT {id} {location} {time}\n").as_bytes())
                            .map_err(|e| format!("client {i} round {round}: {e}"))?;
                        let at = conn.try_read_line().map_err(|e| format!("client {i} round {round}: {e}"))?;
                        let parsed = AtLine::parse(&at).map_err(|e| format!("client {i} round {round}: {e}"))?;
                        if (
                            parsed.server.as_str(),
                            parsed.client.as_str(),
                            parsed.location.as_str(),
                            parsed.time.as_str(),
                        ) != (server, id.as_str(), location.as_str(), time.as_str())
                        {
                            return Err(format!(
                                "client {i} round {round}: IAMAT {id} {location} {time} to {server} got {at:?}"
                            ));
                        }
                        let reply =
                            conn.try_whatsat(&id, "5", "3").map_err(|e| format!("client {i} round {round}: {e}"))?;
                        let answer =
                            WhatsatReply::parse(&reply).map_err(|e| format!("client {i} round {round}: {e}"))?;
                        if answer.at_line != at || answer.status() != "OK" || answer.results() != Some(3) {
                            return Err(format!("client {i} round {round}: WHATSAT got {reply:?}, stored {at:?}"));
                        }
                    }
                    Ok(())
                })
                .expect("spawning a client thread")
        })
        .collect();
    let failures: Vec<String> = threads
        .into_iter()
        .filter_map(|t| match t.join() {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some("a client thread panicked".to_owned()),
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {CLIENTS} clients failed; first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(5)].join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// 9. A server dies and comes back

/// With Welsh dead the others serve and flood around it; restarted on its port, Welsh gets floods again.
pub fn herd_survives_and_relinks_a_restarted_server(style: &str) {
    let mut herd = Herd::start(style);
    wait_linked(&herd);
    herd.kill("Welsh");

    let mut alford = herd.client("Alford");
    let started = Instant::now();
    let at = alford.iamat("petrel", UCLA, &now_text());
    // Alford–Hamilton–Holiday–Ball is the only path left to Ball.
    assert_visible(&herd, &["Ball", "Hamilton", "Holiday"], "petrel", &at, started, FLOOD_DEADLINE);
    // And the other way round, Ball–Holiday–Hamilton–Alford.
    let mut ball = herd.client("Ball");
    let started = Instant::now();
    let at = ball.iamat("petrel-ball", MIT, &now_text());
    assert_visible(&herd, &["Alford"], "petrel-ball", &at, started, FLOOD_DEADLINE);

    herd.restart("Welsh");
    let restarted = Instant::now();
    let deadline = Duration::from_secs(2);
    let mut last = None;
    while restarted.elapsed() < deadline {
        // Links to Welsh come back within their retry interval; each round sends a newer update.
        let at = alford.iamat("albatross", UCLA, &now_text());
        let seen = visibility(&herd, &["Welsh"], "albatross", &at, Instant::now(), Duration::from_millis(250));
        if seen[0].1.is_some() {
            last = Some(restarted.elapsed());
            break;
        }
    }
    let took = last.unwrap_or_else(|| panic!("no flood from Alford reached the restarted Welsh within {deadline:?}"));
    assert!(took <= deadline, "restarted Welsh got a flood only after {took:?}");
    // And Welsh floods onwards again: an update made at Welsh reaches Ball and Alford.
    let mut welsh = herd.client("Welsh");
    let at = welsh.iamat("albatross-welsh", MIT, &now_text());
    assert_visible(&herd, &["Alford", "Ball"], "albatross-welsh", &at, Instant::now(), Duration::from_secs(1));
}

// ---------------------------------------------------------------------------------------------
// 10. Robustness

/// A line past the limit is answered `? …` and its connection closed; other clients are unaffected.
pub fn oversized_line_closes_only_its_connection(style: &str) {
    let herd = Herd::start(style);
    let mut bystander = herd.client("Alford");
    bystander.iamat("bystander", UCLA, &now_text());
    let mut big = herd.client("Alford");
    let payload = vec![b'x'; 70_000];
    // The server may close before it has read everything: a failed write is part of the story.
    let _ = big.try_send(&payload);
    let rest = big.read_to_close().unwrap_or_else(|e| panic!("waiting for the oversized line's answer and close: {e}"));
    let text = String::from_utf8_lossy(&rest);
    assert!(text.starts_with("? "), "an oversized line is answered `? …`, got {:?}", &text[..text.len().min(80)]);
    let first_line = text.split_inclusive('\n').next().unwrap_or_default();
    assert!(
        first_line.ends_with('\n') && first_line[2..first_line.len() - 1].bytes().all(|b| b == b'x'),
        "the `?` reply quotes the line: {first_line:?}"
    );
    assert_eq!(first_line.len(), text.len(), "nothing after the `?` reply before the close: {text:?}");
    bystander.iamat("bystander", UCLA, &now_text());
    assert_eq!(bystander.request("STILL here"), "? STILL here\n");
    herd.client("Alford").iamat("newcomer", UCLA, &now_text());
}

/// Clients that vanish mid-line or before reading their reply do not hurt the server.
pub fn abrupt_disconnects_are_harmless(style: &str) {
    let herd = Herd::start(style);
    let mut bystander = herd.client("Ball");
    bystander.iamat(KIWI, UCLA, &now_text());
    for _ in 0..5 {
        let mut half = herd.client("Ball");
        half.send(b"IAMAT dropped.example +34.06");
        drop(half);
        let mut half = herd.client("Ball");
        half.send(format!("WHATSAT {KIWI} 10").as_bytes());
        drop(half);
        // A whole WHATSAT whose client is gone before the (upstream-delayed) reply is written.
        let mut gone = herd.client("Ball");
        gone.send(format!("WHATSAT {KIWI} 50 20\nWHATSAT {KIWI} 50 20\n").as_bytes());
        drop(gone);
    }
    // Whole lines, half a line, then end of stream: the whole lines are still answered, the
    // fragment is not taken for a command, the server closes, and nothing crashes.
    let mut eof = herd.client("Ball");
    let time = now_text();
    eof.send(
        format!("IAMAT eof.example {UCLA} {time}\nWHATSAT eof.example 10 1\nIAMAT eof.fragment {UCLA} 14794")
            .as_bytes(),
    );
    eof.shutdown_write();
    let at = eof.read_line();
    assert_eq!(AtLine::parse(&at).map(|a| a.time), Ok(time), "IAMAT before our end of stream: {at:?}");
    let answer = whatsat_reply(&eof.read_whatsat(), "WHATSAT before our end of stream");
    assert_eq!(answer.at_line, at);
    let after = eof.read_to_close().unwrap_or_else(|e| panic!("the server should close after our end of stream: {e}"));
    assert!(
        after.is_empty() || after.starts_with(b"? "),
        "reply to an unterminated fragment: {:?}",
        String::from_utf8_lossy(&after)
    );
    let reply = bystander.request(&format!("IAMAT {KIWI} {UCLA} {}", now_text()));
    assert!(reply.starts_with("AT Ball "), "the earlier connection still works: {reply:?}");
    let answer = whatsat_reply(&bystander.whatsat(KIWI, "10", "1"), "WHATSAT after the disconnects");
    assert_eq!(answer.at_line, reply);
    let mut fresh = herd.client("Ball");
    let answer = whatsat_reply(&fresh.whatsat(KIWI, "10", "1"), "WHATSAT on a new connection");
    assert_eq!(answer.at_line, reply);
    for fragment in ["dropped.example", "eof.fragment"] {
        let line = format!("WHATSAT {fragment} 10 1");
        assert_eq!(fresh.request(&line), format!("? {line}\n"), "an unterminated IAMAT must not be stored");
    }
}

/// With the places backend unreachable, WHATSAT still gets its AT line and an error JSON, framed.
pub fn dead_upstream_still_framed(style: &str) {
    let herd = Herd::start_with(style, &Upstream::Dead);
    let mut conn = herd.client("Hamilton");
    let stored = conn.iamat(KIWI, UCLA, &now_text());
    for _ in 0..3 {
        let asked = Instant::now();
        let reply = conn.whatsat(KIWI, "10", "5");
        assert!(asked.elapsed() < READ_TIMEOUT, "reply took {:?}", asked.elapsed());
        let answer = whatsat_reply(&reply, "WHATSAT with the places backend down");
        assert_eq!(answer.at_line, stored);
        assert_ne!(answer.status(), "OK", "{reply}");
    }
    conn.iamat(KIWI, MIT, &now_text());
}

/// A backend answering 503 or malformed JSON: every reply still AT line, error JSON, two newlines.
pub fn failing_upstream_still_framed(style: &str) {
    let flags = ["--fail-rate", "0.5", "--malformed-rate", "0.5"].map(str::to_owned).to_vec();
    let herd = Herd::start_with(style, &Upstream::Backend(flags));
    let mut conn = herd.client("Holiday");
    let stored = conn.iamat(KIWI, UCLA, &now_text());
    for i in 0..10 {
        let reply = conn.whatsat(KIWI, "10", "5");
        let answer = whatsat_reply(&reply, &format!("WHATSAT {i} with a failing backend"));
        assert_eq!(answer.at_line, stored);
        assert_ne!(answer.status(), "OK", "{reply}");
    }
    assert_eq!(conn.request("NEXT"), "? NEXT\n");
}

/// A WHATSAT pipelined right behind its client's IAMAT (same write) sees that IAMAT: lines of one
/// connection take effect in the order they were sent, not only their replies.
pub fn pipelined_whatsat_sees_preceding_iamat(style: &str) {
    const BATCHES: usize = 40;
    const PAIRS: usize = 50;
    let herd = Herd::start(style);
    let mut conn = herd.client("Hamilton");
    let mut misses = Vec::new();
    for batch in 0..BATCHES {
        let mut write = String::new();
        let mut sent = Vec::new();
        for pair in 0..PAIRS {
            let id = format!("order-{batch}-{pair}");
            let time = now_text();
            write.push_str(&format!("IAMAT {id} {UCLA} {time}\nWHATSAT {id} 10 1\n"));
            sent.push(id);
        }
        conn.send(write.as_bytes());
        for id in &sent {
            let at = conn.read_line();
            assert!(at.starts_with("AT Hamilton ") && at.contains(id.as_str()), "IAMAT {id}: {at:?}");
            let reply = conn.read_whatsat();
            if reply.split_inclusive('\n').next() != Some(at.as_str()) {
                misses.push(format!("WHATSAT {id} got {:?}", reply.lines().next().unwrap_or_default()));
            }
        }
    }
    assert!(
        misses.is_empty(),
        "{} of {} WHATSATs sent in the same write right after their IAMAT did not see it; first: {:?}",
        misses.len(),
        BATCHES * PAIRS,
        &misses[..misses.len().min(3)]
    );
}

// ---------------------------------------------------------------------------------------------
// 11. A hung neighbour

/// IAMATs of the hung-neighbour case, all over one connection.
const HUNG_UPDATES: usize = 50_000;
/// Characters appended to each of its client ids, so that an AT line is about 600 bytes and the
/// 50,000 updates (30 MB) are far more than the kernel buffers for one connection: 50,000 lines
/// of 87 bytes (4.3 MB) were all taken in by the kernel's buffers on loopback, and none dropped.
const HUNG_ID_PAD: usize = 512;
/// Lines per write of that connection's writer.
const HUNG_BATCH: usize = 200;
/// How long the burst may take in all, and any one wait for a reply (or for a write to go through)
/// within it. Generous: a loaded 2-core machine runs it in seconds; a server that waits on its hung
/// neighbour does not answer at all.
const HUNG_BURST_DEADLINE: Duration = Duration::from_secs(60);
const HUNG_REPLY_WAIT: Duration = Duration::from_secs(10);
/// How soon after the hung server continues an update must reach it again.
const HUNG_RECOVERY_DEADLINE: Duration = Duration::from_secs(5);
/// Fewest updates toward the hung server that must have been dropped. Of the 50,000 lines of
/// about 600 bytes, the link's queue holds at most `link_queue_bytes` (1 MiB, about 1,750 lines)
/// and the kernel takes some into the socket's buffers (4.3 MB on loopback with Linux's default
/// `tcp_wmem`; 20,000 leaves room for 17 MiB); the rest must be dropped. A queue without a bound,
/// or one bounded in lines (64K lines), drops none.
const HUNG_MIN_DROPPED: u64 = 20_000;

/// With Hamilton hung (SIGSTOP: its sockets stay open, it reads nothing), Alford, its neighbour,
/// answers 50,000 IAMATs pipelined on one connection, every one correct and none held up by the
/// flood toward Hamilton; the queue toward Hamilton stays bounded and the updates past it are
/// dropped and counted; Welsh, Alford's healthy neighbour, still gets updates while Hamilton hangs;
/// and once Hamilton continues, updates reach it again within [`HUNG_RECOVERY_DEADLINE`].
///
/// Welsh may lose some of the burst too, rightly: Alford makes updates as fast as it can, Welsh
/// shares the CPUs with it and three more servers, and a burst that outruns a neighbour by more
/// than its queue and the kernel's buffers loses the excess (seen with two-stage: 19,000). That
/// count is printed, not bounded.
///
/// The herd runs under the default limits except `link_write_stall`, pushed past the case's length:
/// the stall timer would close the hung link and drop its queue (correctly) at a moment that
/// depends on the machine's speed, and then the count of drops says nothing about the queue bound.
pub fn hung_neighbour_drops_bounded_and_recovers(style: &str) {
    let limits = Limits { link_write_stall: Duration::from_secs(600), ..Limits::default() };
    let mut herd = Herd::start_with_limits(style, &limits);
    wait_linked(&herd);
    let burst_started_at = chrono::Utc::now();

    let hamilton = herd.suspend("Hamilton");
    let burst = pipelined_iamats(&herd, "Alford", HUNG_UPDATES)
        .unwrap_or_else(|e| panic!("{style}: Alford with Hamilton hung: {e}"));
    assert!(
        burst.elapsed <= HUNG_BURST_DEADLINE,
        "{style}: {HUNG_UPDATES} IAMATs to Alford took {:?} with Hamilton hung (> {HUNG_BURST_DEADLINE:?})",
        burst.elapsed
    );
    // Welsh is served while Hamilton hangs. With Hamilton hung, an update made at Alford reaches
    // Welsh only over Alford's link to it: the other way round the ring runs through Hamilton.
    let welsh = reached(&herd, "Alford", "Welsh", "hung-neighbour-welsh").unwrap_or_else(|| {
        panic!("{style}: with Hamilton hung, no update from Alford reached Welsh within {HUNG_RECOVERY_DEADLINE:?}")
    });
    hamilton.resume();

    let resumed = Instant::now();
    let recovered = reached(&herd, "Alford", "Hamilton", "hung-neighbour-after").unwrap_or_else(|| {
        panic!("{style}: no update from Alford reached Hamilton within {HUNG_RECOVERY_DEADLINE:?} after it continued")
    });
    let mut alford = herd.client("Alford");
    // That update may have come round through Holiday. Alford's own link to Hamilton has recovered
    // once its dropping episode has ended: an update was queued on it again. The episode's end is
    // also where the log says how many it dropped, which the counter (all neighbours together) can't.
    // The log is written every 200 ms or so: wait until it shows the episode began and ended. Only
    // this live view is asserted on: while Hamilton digests its backlog (the full queue and ~4 MB of
    // socket buffers) its queue can fill again and a new, correct episode begin before the stop.
    let mut recovered_link = false;
    while resumed.elapsed() < HUNG_RECOVERY_DEADLINE {
        let episodes = DropEpisodes::since(&herd.events("Alford"), burst_started_at);
        if episodes.began.contains_key("Hamilton") && episodes.open().is_empty() {
            recovered_link = true;
            break;
        }
        alford.iamat("hung-neighbour-after", UCLA, &now_text());
        thread::sleep(POLL * 5);
    }

    herd.stop();
    let episodes = DropEpisodes::since(&herd.events("Alford"), burst_started_at);
    let counters = herd.counters("Alford");
    let count = |name: &str| counters.counters.get(name).copied().unwrap_or_default();
    let (dropped, out) = (count("floods_dropped"), count("floods_out"));
    let to_hamilton = episodes.dropped_toward("Hamilton");
    let to_welsh = episodes.dropped - to_hamilton;
    let line_len = burst.reply_bytes as f64 / HUNG_UPDATES as f64;
    let queue_lines = limits.link_queue_bytes as f64 / line_len;
    // At most all of them, less what the full queue held when the burst ended (it went out once
    // Hamilton continued); 10 % spare for lines of different lengths.
    let max_dropped = (HUNG_UPDATES as f64 - 0.9 * queue_lines) as u64;
    eprintln!(
        "hung neighbour: {style:>18}: {HUNG_UPDATES} IAMATs in {:>5.2} s ({:>5.0}/s); Alford floods_dropped {dropped:>5} \
         (to Hamilton {to_hamilton:>5}, bounds {HUNG_MIN_DROPPED}..={max_dropped}; to Welsh {to_welsh:>5}), \
         floods_out {out:>6}; line {line_len:.0} B; then Welsh reached in {:.2} s; after SIGCONT Hamilton in {:.2} s",
        burst.elapsed.as_secs_f64(),
        HUNG_UPDATES as f64 / burst.elapsed.as_secs_f64(),
        welsh.as_secs_f64(),
        recovered.as_secs_f64(),
    );
    assert!(
        episodes.dropped <= dropped,
        "{style}: Alford's log counts {} dropped updates since the burst, its counter only {dropped}",
        episodes.dropped
    );
    assert!(
        episodes.ended.contains_key("Hamilton"),
        "{style}: Alford's log shows no dropping episode toward Hamilton (`floods_dropping` … `floods_resumed`, as \
         herd-core's FloodLink logs them); its counter says {dropped} updates were dropped toward all neighbours"
    );
    assert!(
        recovered_link,
        "{style}: Alford still dropped updates toward {:?} {HUNG_RECOVERY_DEADLINE:?} after Hamilton continued",
        episodes.open()
    );
    assert!(
        (HUNG_MIN_DROPPED..=max_dropped).contains(&to_hamilton),
        "{style}: Alford dropped {to_hamilton} of {HUNG_UPDATES} updates toward the hung Hamilton (by its log; \
         {dropped} in all by its counters); a queue bounded at {} bytes ({queue_lines:.0} lines of {line_len:.0} B) \
         drops between {HUNG_MIN_DROPPED} and {max_dropped}",
        limits.link_queue_bytes
    );
}

/// Sends newer and newer IAMATs for `client` to server `from` until one is visible at server `to`;
/// returns how long that took, or `None` after [`HUNG_RECOVERY_DEADLINE`]. Updates may rightly be
/// dropped while a queue toward `to` is full: each round sends a newer one.
fn reached(herd: &Herd, from: &str, to: &str, client: &str) -> Option<Duration> {
    let started = Instant::now();
    let mut conn = herd.client(from);
    while started.elapsed() < HUNG_RECOVERY_DEADLINE {
        let at = conn.iamat(client, UCLA, &now_text());
        if visibility(herd, &[to], client, &at, Instant::now(), FLOOD_DEADLINE)[0].1.is_some() {
            return Some(started.elapsed());
        }
    }
    None
}

/// A server's dropping episodes (`floods_dropping` … `floods_resumed`, per neighbour) in its event
/// log since some time.
#[derive(Debug, Default)]
struct DropEpisodes {
    /// Episodes begun, by neighbour.
    began: BTreeMap<String, usize>,
    /// Episodes ended, by neighbour.
    ended: BTreeMap<String, Ended>,
    /// Updates dropped in all the ended episodes.
    dropped: u64,
}

/// The episodes toward one neighbour that ended.
#[derive(Debug, Default)]
struct Ended {
    count: usize,
    dropped: u64,
}

impl DropEpisodes {
    fn since(events: &[serde_json::Value], since: chrono::DateTime<chrono::Utc>) -> Self {
        let mut episodes = Self::default();
        for e in events {
            let ts = e["ts"].as_str().and_then(|ts| chrono::DateTime::parse_from_rfc3339(ts).ok());
            if ts.is_none_or(|ts| ts < since) {
                continue;
            }
            let peer = e["peer"].as_str().unwrap_or_default().to_owned();
            if e["event"] == "floods_dropping" {
                *episodes.began.entry(peer).or_default() += 1;
            } else if e["event"] == "floods_resumed" {
                let n = e["dropped"].as_u64().unwrap_or_default();
                let ended = episodes.ended.entry(peer).or_default();
                ended.count += 1;
                ended.dropped += n;
                episodes.dropped += n;
            }
        }
        episodes
    }

    /// Neighbours toward which an episode begun has not ended.
    fn open(&self) -> Vec<&str> {
        self.began
            .iter()
            .filter(|(peer, began)| self.ended.get(*peer).map_or(0, |e| e.count) < **began)
            .map(|(peer, _)| peer.as_str())
            .collect()
    }

    fn dropped_toward(&self, peer: &str) -> u64 {
        self.ended.get(peer).map_or(0, |e| e.dropped)
    }
}

/// What [`pipelined_iamats`] saw.
#[derive(Debug)]
struct Burst {
    /// From the first write to the last reply.
    elapsed: Duration,
    /// The replies' bytes: each reply is also the line flooded to the neighbours.
    reply_bytes: usize,
}

/// Sends `n` IAMATs with distinct client ids to `server` over one connection, written in batches by
/// a writer thread while this thread reads the replies, and checks that each is its IAMAT's AT line.
fn pipelined_iamats(herd: &Herd, server: &str, n: usize) -> Result<Burst, String> {
    let addr = herd.addr(server);
    let stream = TcpStream::connect_timeout(&addr, READ_TIMEOUT).map_err(|e| format!("connecting: {e}"))?;
    let configure = |s: &TcpStream| {
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(HUNG_REPLY_WAIT))?;
        s.set_write_timeout(Some(HUNG_REPLY_WAIT))
    };
    configure(&stream).map_err(|e| format!("configuring the connection: {e}"))?;
    let base = now_nanos();
    let pad = "x".repeat(HUNG_ID_PAD);
    let id = move |i: usize| format!("hung-neighbour-{i:05}.{pad}");
    let time = move |i: usize| time_text(base + i128::try_from(i).unwrap_or_default());
    let mut writes = stream.try_clone().map_err(|e| format!("cloning the connection: {e}"))?;
    let started = Instant::now();
    let writer_id = id.clone();
    let writer = thread::Builder::new()
        .name("hung-writer".into())
        .spawn(move || -> std::io::Result<()> {
            let mut batch = String::new();
            for first in (0..n).step_by(HUNG_BATCH) {
                batch.clear();
                for i in first..(first + HUNG_BATCH).min(n) {
                    batch.push_str(&format!("IAMAT {} {UCLA} {}\n", writer_id(i), time(i)));
                }
                writes.write_all(batch.as_bytes())?;
            }
            Ok(())
        })
        .map_err(|e| format!("spawning the writer: {e}"))?;
    let read_all = || -> Result<usize, String> {
        let mut replies = BufReader::with_capacity(64 * 1024, &stream);
        let mut line = String::new();
        let mut bytes = 0;
        for i in 0..n {
            line.clear();
            match replies.read_line(&mut line) {
                Ok(0) => return Err(format!("the connection closed after {i} of {n} replies")),
                Ok(_) => {}
                Err(e) => return Err(format!("after {i} of {n} replies, none for {HUNG_REPLY_WAIT:?}: {e}")),
            }
            let at = AtLine::parse(&line).map_err(|e| format!("reply {i}: {e}"))?;
            let expected = (server, id(i), UCLA, time(i));
            if (at.server.as_str(), at.client, at.location.as_str(), at.time) != expected {
                return Err(format!("reply {i} is {line:?}, not the AT line of IAMAT {} {UCLA} {}", id(i), time(i)));
            }
            bytes += line.len();
        }
        Ok(bytes)
    };
    let read = read_all();
    let elapsed = started.elapsed();
    if read.is_err() {
        // Unblock the writer, which may be waiting for the server to read.
        let _ = stream.shutdown(Shutdown::Both);
    }
    let written = writer.join().map_err(|_| "the writer panicked".to_owned())?;
    let reply_bytes = read?;
    written.map_err(|e| format!("writing the IAMATs: {e}"))?;
    Ok(Burst { elapsed, reply_bytes })
}

// ---------------------------------------------------------------------------------------------
// 17. Only members change the herd

/// Counter `name` of server `server`'s stats file (0 if absent).
fn counter(herd: &Herd, server: &str, name: &str) -> u64 {
    herd.counters(server).counters.get(name).copied().unwrap_or(0)
}

/// Plays a link opener on `conn` that holds `key`: sends the hello, checks the answer with the key,
/// and returns the lines it sent plus whether the answer proved the key.
fn open_link(conn: &mut Client, me: &str, acceptor: &str, key: &HerdKey) -> (String, bool) {
    let nonce = auth::nonce();
    let hello = String::from_utf8(auth::hello_line(me, Some(&nonce))).expect("ascii");
    conn.send(hello.as_bytes());
    let answer = conn.read_line();
    let accept = auth::Accept::parse(answer.trim_end().as_bytes())
        .unwrap_or_else(|| panic!("a keyed PEER gets a HERD answer, got {answer:?}"));
    assert_eq!(accept.name, acceptor, "the answer names the server");
    let names = auth::Names { opener: me, acceptor };
    let nonces = auth::Nonces { opener: nonce, acceptor: accept.nonce };
    let proven = key.verify(auth::Role::Acceptor, names, &nonces, &accept.proof);
    let proof = String::from_utf8(auth::auth_line(&key.proof(auth::Role::Opener, names, &nonces))).expect("ascii");
    conn.send(proof.as_bytes());
    (format!("{hello}{proof}"), proven)
}

/// A forged `AT`, and forged `PEER` + `AT` (plain, and with a made-up proof), from client
/// connections: each answered `? <line>`, counted and logged, and nothing changes anywhere in the
/// herd; real updates still reach every member within 0.5 s.
pub fn forged_updates_change_nothing(style: &str) {
    let mut herd = Herd::start(style);
    wait_linked(&herd);
    let mut alford = herd.client("Alford");
    let real = alford.iamat("victim", UCLA, &now_text());
    assert_visible(&herd, &SERVERS, "victim", &real, Instant::now(), FLOOD_DEADLINE);

    let forged = format!("AT Hamilton +0.000000001 victim {MIT} {}", time_text(now_nanos() + SECOND));
    let mut mallory = herd.client("Welsh");
    assert_eq!(mallory.request(&forged), format!("? {forged}\n"), "{style}: a client's AT");
    assert_eq!(mallory.request("PEER Alford"), "? PEER Alford\n", "{style}: an unkeyed hello");
    assert_eq!(mallory.request(&forged), format!("? {forged}\n"), "{style}: AT after an unkeyed hello");
    let hello = format!("PEER Alford {}", "5a".repeat(16));
    assert!(mallory.request(&hello).starts_with("HERD Welsh "), "{style}: a keyed hello is answered");
    let made_up = format!("AUTH {}", "00".repeat(32));
    assert_eq!(mallory.request(&made_up), format!("? {made_up}\n"), "{style}: a made-up proof");
    assert_eq!(mallory.request(&forged), format!("? {forged}\n"), "{style}: AT after a refused proof");

    // Every member still answers with the real update (a flood of the forgery would have had
    // FLOOD_DEADLINE to arrive), and a real update made now still reaches all of them in time.
    thread::sleep(FLOOD_DEADLINE);
    for server in SERVERS {
        let reply = herd.client(server).whatsat("victim", "10", "1");
        assert!(reply.starts_with(&real), "{style}: {server} answers {reply:?}, not the real {real:?}");
    }
    let newer = alford.iamat("victim", MIT, &now_text());
    assert_visible(&herd, &SERVERS, "victim", &newer, Instant::now(), FLOOD_DEADLINE);

    herd.stop();
    assert_eq!(counter(&herd, "Welsh", "unauthenticated_at"), 3, "{style}: Welsh counts each forged AT");
    assert_eq!(counter(&herd, "Welsh", "links_refused"), 1, "{style}: Welsh counts the made-up proof");
    let events = herd.events("Welsh");
    let logged = |kind: &str| events.iter().filter(|e| e["event"] == kind).count();
    assert_eq!(logged("unauthenticated_at"), 1, "{style}: logged once per connection");
    assert_eq!(logged("link_refused"), 1, "{style}: the refused proof is logged");
}

/// Links that prove the wrong key, or replay a recorded handshake, are refused and logged; the
/// same handshake made with the herd's key is accepted (so the refusals are the key's doing).
pub fn wrong_key_and_replayed_links_are_refused(style: &str) {
    let mut herd = Herd::start(style);
    let key = HerdKey::from_file(&herd.key_file()).expect("the herd's key file");
    let at = |client: &str| format!("AT Hamilton +0.000000001 {client} {UCLA} {}\n", now_text());

    // The right key: the answer proves it, and an AT after the proof is stored.
    let mut member = herd.client("Alford");
    let (recorded, proven) = open_link(&mut member, "Hamilton", "Alford", &key);
    assert!(proven, "{style}: Alford's answer proves the herd key");
    let update = at("member-made");
    member.send(update.as_bytes());
    let stored = visibility(&herd, &["Alford"], "member-made", &update, Instant::now(), FLOOD_DEADLINE);
    assert!(stored[0].1.is_some(), "{style}: an AT over an authenticated link is stored");

    // Another key: Alford's answer does not prove it, and Alford refuses our proof.
    let mut outsider = herd.client("Alford");
    let (_, proven) = open_link(&mut outsider, "Hamilton", "Alford", &HerdKey::generate());
    assert!(!proven, "{style}: the answer proves only the herd's key");
    assert!(outsider.read_line().starts_with("? AUTH "), "{style}: a wrong key's proof is refused");
    assert!(outsider.request(&at("outsider-made")).starts_with("? AT "), "{style}: then its AT is refused");

    // The member's handshake replayed on a new connection: the proof answers an old nonce.
    let mut replay = herd.client("Alford");
    replay.send(recorded.as_bytes());
    assert!(replay.read_line().starts_with("HERD Alford "), "{style}: a fresh challenge");
    assert!(replay.read_line().starts_with("? AUTH "), "{style}: a replayed proof is refused");
    assert!(replay.request(&at("replay-made")).starts_with("? AT "), "{style}: then its AT is refused");

    let unknown = visibility(&herd, &SERVERS, "outsider-made", "never", Instant::now(), Duration::ZERO);
    assert!(unknown.iter().all(|(_, seen)| seen.is_none()));
    herd.stop();
    assert_eq!(counter(&herd, "Alford", "links_refused"), 2, "{style}: both refusals counted");
    let refused = herd.events("Alford").into_iter().filter(|e| e["event"] == "link_refused").count();
    assert_eq!(refused, 2, "{style}: both refusals logged");
}

// ---------------------------------------------------------------------------------------------
// 18. Bounded: connections past the cap

/// With `max_connections` 5 — Alford's two inbound flood links and three clients — a further
/// client connection is closed at once (counted, logged once), the three keep being served, and
/// once one closes a new one is served again.
pub fn connections_past_the_cap_are_closed(style: &str) {
    let limits = Limits { max_connections: 5, ..Limits::default() };
    let mut herd = Herd::start_with_limits(style, &limits);
    wait_linked(&herd);
    // Both neighbours' links to Alford hold their places from here on (the log is flushed every
    // 200 ms or so).
    let deadline = Instant::now() + Duration::from_secs(3);
    while herd.events("Alford").iter().filter(|e| e["event"] == "link_up" && e["direction"] == "inbound").count() < 2 {
        assert!(Instant::now() < deadline, "{style}: Alford's inbound links did not come up");
        thread::sleep(POLL);
    }
    // A client whose IAMAT is answered (the settling clients' places come back as Alford notices
    // their closes, so the first attempts may still be turned away).
    let served = |tag: &str| {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let mut c = herd.client("Alford");
            let reply = c
                .try_send(format!("IAMAT capped-{tag} {UCLA} {}\n", now_text()).as_bytes())
                .and_then(|()| c.try_read_line());
            if reply.as_deref().is_ok_and(|r| r.starts_with("AT Alford ")) {
                return c;
            }
            assert!(Instant::now() < deadline, "{style}: no place for client {tag}: {reply:?}");
            thread::sleep(POLL);
        }
    };
    let mut held: Vec<Client> = ["a", "b", "c"].map(served).into();
    for _ in 0..2 {
        let mut extra = herd.client("Alford");
        // Closed by the server without a reply: end of stream, or a reset if our line arrived first.
        let _ = extra.try_send(format!("IAMAT capped-x {UCLA} {}\n", now_text()).as_bytes());
        let got = extra.read_to_close();
        assert!(got.as_ref().is_ok_and(Vec::is_empty) || got.is_err(), "{style}: a client past the cap got {got:?}");
    }
    for (i, c) in held.iter_mut().enumerate() {
        c.iamat(&format!("capped-{i}"), MIT, &now_text());
    }
    drop(held.pop());
    drop(served("d"));
    herd.stop();
    assert!(counter(&herd, "Alford", "connections_refused") >= 2, "{style}: refusals counted");
    let logged = herd.events("Alford").into_iter().filter(|e| e["event"] == "connections_refused").count();
    assert!(logged >= 1, "{style}: the episode is logged");
}

// ---------------------------------------------------------------------------------------------
// 19. Echo mode

/// `--max-line` of the echo case: small, so that a line of exactly the limit is cheap to send.
const ECHO_MAX_LINE: usize = 1000;

/// `--mode echo`: every line comes back as sent — its bytes, a `\r` before the newline included,
/// then `\n` — whatever it says (protocol lines are not parsed, nothing is answered `?`), alone,
/// pipelined in one write or split over two; a line of exactly `--max-line` bytes is echoed, a
/// longer one answered `? <first 64 bytes>` and its connection closed after the lines before it;
/// at end of stream the complete lines are echoed and a trailing fragment is dropped.
pub fn echo_mode_returns_every_line_unchanged(style: &str) {
    let limits = Limits { max_line: ECHO_MAX_LINE, ..Limits::default() };
    let herd = Herd::start_echo(style, &limits);
    let mut conn = herd.client(ECHO);
    let lines: Vec<Vec<u8>> = [
        format!("IAMAT {KIWI} {UCLA} {SAMPLE_TIME}"),
        format!("WHATSAT {KIWI} 10 5"),
        "IAMTA garbage".to_owned(),
        "PEER Alford".to_owned(),
        format!("AT Alford +0.263873386 {KIWI} {UCLA} {SAMPLE_TIME}"),
        " \t leading, trailing and\tinner white space \t ".to_owned(),
        "a carriage return before the newline\r".to_owned(),
        String::new(),
        "? looks like a reply".to_owned(),
        "e".repeat(ECHO_MAX_LINE),
    ]
    .into_iter()
    .map(String::into_bytes)
    .chain([b"\x01\xff\xfe invalid UTF-8".to_vec()])
    .collect();
    let echoed = |line: &[u8]| [line, b"\n"].concat();
    let shown = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        if text.len() > 80 { format!("{:?}… ({} bytes)", &text[..80], bytes.len()) } else { format!("{text:?}") }
    };
    for line in &lines {
        conn.send(&echoed(line));
        let reply = conn.read_line_bytes();
        assert!(
            reply == echoed(line),
            "{style} in echo mode: the line {} must come back unchanged, got {}",
            shown(&echoed(line)),
            shown(&reply)
        );
    }
    // All of them in one write: every one echoed, in order.
    conn.send(&lines.iter().flat_map(|l| echoed(l)).collect::<Vec<u8>>());
    for (i, line) in lines.iter().enumerate() {
        let reply = conn.read_line_bytes();
        assert!(
            reply == echoed(line),
            "{style} in echo mode: line {i} of one write must come back as {}, got {}",
            shown(&echoed(line)),
            shown(&reply)
        );
    }
    // One line in two writes.
    conn.send(b"split ");
    thread::sleep(Duration::from_millis(50));
    conn.send(b"line\n");
    assert_eq!(conn.read_line(), "split line\n", "{style} in echo mode: a line split over two writes, echoed once");

    // A line over --max-line, after a whole one: the whole one echoed, then `? <first 64 bytes>`
    // and the close, nothing else.
    let mut big = herd.client(ECHO);
    let _ = big.try_send(&[&b"before\n"[..], &vec![b'x'; 2 * ECHO_MAX_LINE]].concat());
    let got = big.read_to_close().unwrap_or_else(|e| {
        panic!("{style} in echo mode: a line over --max-line {ECHO_MAX_LINE} must be answered and closed: {e}")
    });
    let expected = format!("before\n? {}\n", "x".repeat(64));
    assert!(
        got == expected.as_bytes(),
        "{style} in echo mode: \"before\\n\" and {} bytes without a newline (--max-line {ECHO_MAX_LINE}) must get {} \
         and the close, got {}",
        2 * ECHO_MAX_LINE,
        shown(expected.as_bytes()),
        shown(&got)
    );

    // End of stream after a whole line and a fragment: the line echoed, the fragment dropped.
    let mut eof = herd.client(ECHO);
    eof.send(b"last whole line\na fragment without its newline");
    eof.shutdown_write();
    assert_eq!(eof.read_line(), "last whole line\n", "{style} in echo mode: the line before our end of stream");
    let after =
        eof.read_to_close().unwrap_or_else(|e| panic!("{style} in echo mode: no close after our end of stream: {e}"));
    assert!(
        after.is_empty(),
        "{style} in echo mode: a fragment at end of stream must be dropped, got {}",
        shown(&after)
    );

    // The first connection is still served.
    assert_eq!(conn.request("still here"), "still here\n", "{style} in echo mode: the first connection afterwards");
}

// ---------------------------------------------------------------------------------------------
// 20. An upstream slower than --upstream-timeout

/// `--upstream-timeout` of the slow-upstream case.
const SLOW_UPSTREAM_TIMEOUT: Duration = Duration::from_millis(600);
/// The places backend's latency in that case: past the timeout by far more than a loaded machine's
/// timer lag, and less than twice it, so that an answer read late on a reused connection arrives
/// within the next WHATSAT's deadline.
const SLOW_UPSTREAM_LATENCY: &str = "1100ms";
/// Timer granularity allowed for in "not answered before the timeout".
const TIMER_SLACK: Duration = Duration::from_millis(50);

/// A WHATSAT whose places answer would come after `--upstream-timeout` is answered at the timeout,
/// framed as every upstream failure: the stored AT line, the error JSON (status `UNKNOWN_ERROR`, no
/// results), `\n\n`. Another client is served meanwhile. The timed-out upstream connection is never
/// reused: the next WHATSAT, sent as the late answer is about to arrive, also times out rather than
/// take that answer for its own. The connection then goes on as usual.
pub fn slow_upstream_answered_at_the_timeout(style: &str) {
    let limits = Limits { upstream_timeout: SLOW_UPSTREAM_TIMEOUT, ..Limits::default() };
    let upstream = Upstream::Backend(["--latency", SLOW_UPSTREAM_LATENCY].map(str::to_owned).to_vec());
    let herd = Herd::start_with_upstream_and_limits(style, &upstream, &limits);
    let mut asker = herd.client("Holiday");
    let mut other = herd.client("Holiday");
    let stored = asker.iamat(KIWI, UCLA, &now_text());
    other.iamat("meanwhile", MIT, &now_text());
    let timeout = SLOW_UPSTREAM_TIMEOUT;
    let setting = format!("--upstream-timeout {}ms", timeout.as_millis());
    let check = |reply: io::Result<String>, took: Duration, which: &str| {
        let reply = reply.unwrap_or_else(|e| {
            panic!(
                "{style}: the {which} WHATSAT, with the places backend answering only after {SLOW_UPSTREAM_LATENCY}, \
                 must be answered at {setting} with the error JSON: {e}"
            )
        });
        let answer = whatsat_reply(&reply, &format!("{style}: the {which} WHATSAT with a slow places backend"));
        assert_eq!(answer.at_line, stored, "{style}: the {which} WHATSAT's first line is the stored AT line");
        assert!(
            answer.status() == "UNKNOWN_ERROR" && answer.results() == Some(0),
            "{style}: the {which} WHATSAT, with the places backend answering only after {SLOW_UPSTREAM_LATENCY}, must \
             get the error JSON (status UNKNOWN_ERROR, no results) at {setting}; after {took:.2?} it got status {:?} \
             with {} results: {reply:?}",
            answer.status(),
            answer.results().map_or_else(|| "no array of".to_owned(), |n| n.to_string())
        );
        assert!(
            took + TIMER_SLACK >= timeout,
            "{style}: the {which} WHATSAT got the error JSON after {took:.2?}, before {setting} had passed: {reply:?}"
        );
    };

    let asked = Instant::now();
    asker.send(format!("WHATSAT {KIWI} 10 5\n").as_bytes());
    let time = now_text();
    other.send(format!("IAMAT meanwhile {MIT} {time}\n").as_bytes());
    let other_reply = other.try_read_line();
    let other_took = asked.elapsed();
    let reply = asker.try_read_whatsat();
    let took = asked.elapsed();
    eprintln!(
        "slow upstream: {style:>18}: error JSON after {:.2} s; another client's IAMAT answered after {:.3} s",
        took.as_secs_f64(),
        other_took.as_secs_f64()
    );
    check(reply, took, "first");
    let other_reply =
        other_reply.unwrap_or_else(|e| panic!("{style}: another client's IAMAT while a WHATSAT waits upstream: {e}"));
    assert!(
        AtLine::parse(&other_reply).is_ok_and(|at| at.time == time),
        "{style}: another client's IAMAT while a WHATSAT waits upstream got {other_reply:?}"
    );
    assert!(
        other_took < took,
        "{style}: another client's IAMAT was answered only after {other_took:.2?}, once the WHATSAT waiting upstream \
         had its answer ({took:.2?}): a WHATSAT must not hold up other clients"
    );

    // Sent at once: the first exchange's late answer arrives within this one's deadline.
    let asked = Instant::now();
    let time = now_text();
    asker.send(format!("WHATSAT {KIWI} 10 5\nIAMAT {KIWI} {MIT} {time}\n").as_bytes());
    let reply = asker.try_read_whatsat();
    check(reply, asked.elapsed(), "second (a late answer on the first one's connection must not be taken for its own)");
    let at = asker.read_line();
    assert!(
        AtLine::parse(&at).is_ok_and(|at| at.location == MIT && at.time == time),
        "{style}: the IAMAT pipelined behind a timed-out WHATSAT got {at:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 21. Clients that never read

/// What [`never_reading`] saw.
#[derive(Debug)]
struct Unread {
    /// Request bytes the socket took.
    written: usize,
    /// When, after the first write, a write failed because the server had closed the connection
    /// (a reset or a broken pipe), and that error; `None` if none failed within the deadline.
    closed: Option<(Duration, io::Error)>,
}

/// A client of `addr` that writes `batch` again and again and never reads a reply, until a write
/// fails (the server closed the connection) or `within` has passed since its first write.
fn never_reading(addr: SocketAddr, batch: Vec<u8>, within: Duration) -> thread::JoinHandle<Result<Unread, String>> {
    thread::spawn(move || {
        let stream =
            TcpStream::connect_timeout(&addr, READ_TIMEOUT).map_err(|e| format!("connecting to {addr}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        // Short waits, so a full socket does not hold the writer past `within`.
        stream.set_write_timeout(Some(Duration::from_millis(100))).map_err(|e| e.to_string())?;
        let started = Instant::now();
        let (mut at, mut written) = (0, 0);
        while started.elapsed() < within {
            match (&stream).write(&batch[at..]) {
                Ok(n) => {
                    written += n;
                    at = (at + n) % batch.len();
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Ok(Unread { written, closed: Some((started.elapsed(), e)) }),
            }
        }
        Ok(Unread { written, closed: None })
    })
}

/// While `hog` runs, a client of `server` is served as usual: an IAMAT and a WHATSAT about it every
/// 100 ms, each answered right. Returns what the hog saw and the rounds served.
fn serve_beside(
    herd: &Herd,
    server: &str,
    hog: thread::JoinHandle<Result<Unread, String>>,
    style: &str,
) -> (Unread, usize) {
    let mut bystander = herd.client(server);
    let mut rounds = 0;
    while !hog.is_finished() {
        let at = bystander.iamat("bystander", UCLA, &now_text());
        let answer = whatsat_reply(
            &bystander.whatsat("bystander", "10", "2"),
            &format!("{style}: a client of {server} beside one that never reads"),
        );
        assert_eq!(answer.at_line, at, "{style}: a client of {server} beside one that never reads");
        rounds += 1;
        thread::sleep(Duration::from_millis(100));
    }
    let unread = hog.join().unwrap_or_else(|_| panic!("the client that never reads panicked"));
    (unread.unwrap_or_else(|e| panic!("{style}: the client that never reads: {e}")), rounds)
}

/// `--max-output` of the max-output case: far below `--pause-output` (256 KiB), so that a client
/// that reads nothing passes it long before its server would stop reading it.
const HOG_MAX_OUTPUT: usize = 16 * 1024;
/// `--write-stall` of the max-output case.
const HOG_WRITE_STALL: Duration = Duration::from_millis(600);
/// Characters of the max-output case's client id: its WHATSATs' replies are about 11.8 KB each.
const HOG_ID_LEN: usize = 4000;
/// How long a client that reads nothing may wait for its close, beyond three write stalls: the
/// time its server takes to fill the socket buffers (about 4 MB of replies on loopback) on a loaded
/// machine. Three: the stall clock runs from the last byte the socket took, and a full socket still
/// takes a few now and then while the kernel adjusts its buffers (seen: closes at twice the stall
/// in threadpool and future-async-std, and at three times it in thread-per-request, whose blocking
/// `write(2)` with `SO_SNDTIMEO` returns once with the bytes it took before the one that takes none).
const HOG_CLOSE_SLACK: Duration = Duration::from_millis(2500);

/// A client that pipelines WHATSATs (about 11.8 KB of reply each) and never reads is disconnected
/// once it is owed more than `--max-output` (16 KiB here, below `--pause-output`) with its socket
/// full. Styles that go on handling its requests while its socket is full close it as soon as
/// that happens; styles whose connection waits in its write until the socket takes more
/// (threadpool, thread-per-request) never owe it more than a reply or two, and close it at
/// `--write-stall` (600 ms here). Black-box the two rules cannot be told apart, so the case allows
/// either: the close must come within `3 × --write-stall` and [`HOG_CLOSE_SLACK`] of the first
/// write. Another client of the same server is served right throughout, and a new one afterwards.
pub fn a_client_owed_past_max_output_is_closed(style: &str) {
    let limits =
        Limits { max_output: HOG_MAX_OUTPUT, flush_at: 4 * 1024, write_stall: HOG_WRITE_STALL, ..Limits::default() };
    let herd = Herd::start_with_limits(style, &limits);
    let id = format!("hog-{}", "h".repeat(HOG_ID_LEN));
    herd.client("Alford").iamat(&id, UCLA, &now_text());
    let batch = format!("WHATSAT {id} 50 20\n").repeat(16).into_bytes();
    let within = 3 * HOG_WRITE_STALL + HOG_CLOSE_SLACK;
    let hog = never_reading(herd.addr("Alford"), batch, within);
    let (unread, rounds) = serve_beside(&herd, "Alford", hog, style);
    let (after, error) = unread.closed.unwrap_or_else(|| {
        panic!(
            "{style}: a client that sent {} bytes of WHATSATs (about 11.8 KB of reply each) and read no reply was \
             still connected {within:?} after its first write; with --max-output {HOG_MAX_OUTPUT} (and --write-stall \
             {}ms) Alford must disconnect it",
            unread.written,
            HOG_WRITE_STALL.as_millis()
        )
    });
    eprintln!(
        "max output: {style:>18}: closed {:.2} s after the first write ({error}), {} bytes of WHATSATs taken; a \
         bystander served {rounds} rounds meanwhile",
        after.as_secs_f64(),
        unread.written
    );
    herd.client("Alford").iamat("after-the-hog", UCLA, &now_text());
}

/// `--write-stall` of the write-stall case.
const STALL_WRITE_STALL: Duration = Duration::from_millis(800);
/// Characters of the write-stall case's client id: its IAMATs' replies are about 1 KB each.
const STALL_ID_LEN: usize = 1000;

/// A client that pipelines IAMATs and never reads, under the default `--max-output` (4 MiB, never
/// reached: its server stops reading it at `--pause-output`), is paused and then disconnected once
/// it has taken none of its replies for `--write-stall` (800 ms here): not before that long after
/// its first write, and within `3 × --write-stall` and [`HOG_CLOSE_SLACK`] of it.
/// Another client of the same server is served right throughout, and a new one afterwards.
pub fn a_client_that_never_reads_is_closed_after_the_write_stall(style: &str) {
    let limits = Limits { write_stall: STALL_WRITE_STALL, ..Limits::default() };
    let herd = Herd::start_with_limits(style, &limits);
    // One client id and one time: the first is stored and flooded, the rest only answered.
    let line = format!("IAMAT stall-{} {UCLA} {}\n", "s".repeat(STALL_ID_LEN), now_text());
    let within = 3 * STALL_WRITE_STALL + HOG_CLOSE_SLACK;
    let hog = never_reading(herd.addr("Ball"), line.repeat(32).into_bytes(), within);
    let (unread, rounds) = serve_beside(&herd, "Ball", hog, style);
    let stall = format!("--write-stall {}ms", STALL_WRITE_STALL.as_millis());
    let (after, error) = unread.closed.unwrap_or_else(|| {
        panic!(
            "{style}: a client that sent {} bytes of IAMATs and read no reply was still connected {within:?} after its \
             first write; with {stall} Ball must disconnect it once it has taken nothing for that long",
            unread.written
        )
    });
    eprintln!(
        "write stall: {style:>18}: closed {:.2} s after the first write ({error}), {} bytes of IAMATs taken; a \
         bystander served {rounds} rounds meanwhile",
        after.as_secs_f64(),
        unread.written
    );
    assert!(
        after + TIMER_SLACK >= STALL_WRITE_STALL,
        "{style}: a client that reads nothing was disconnected {after:.2?} after its first write ({error}), before \
         {stall} had passed; under --max-output 4 MiB it must only be paused (--pause-output) until then"
    );
    herd.client("Ball").iamat("after-the-stall", UCLA, &now_text());
}

// ---------------------------------------------------------------------------------------------
// 22. A neighbour that never answers the link hello

/// `--link-connect-timeout` of the silent-neighbour case.
const SILENT_CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
/// How much shorter than the timeout an attempt may look, by our clock: the listener's `accept`
/// returns a little after the connection was made.
const SILENT_EARLY: Duration = Duration::from_millis(300);
/// How much longer than the timeout an attempt may take to be given up and the next made.
const SILENT_LATE: Duration = Duration::from_secs(2);

/// One connection a [`SilentNeighbour`] accepted.
#[derive(Debug, Clone)]
struct HelloAttempt {
    accepted: Instant,
    /// Everything read from it.
    bytes: Vec<u8>,
    /// When the opener closed it.
    closed: Option<Instant>,
}

impl HelloAttempt {
    fn held(&self) -> Option<Duration> {
        self.closed.map(|c| c - self.accepted)
    }
}

/// A listener on a neighbour's address that accepts every connection and reads it, but never
/// answers: a neighbour hung in the handshake (or anything else listening on its port).
struct SilentNeighbour {
    addr: SocketAddr,
    attempts: Arc<Mutex<Vec<HelloAttempt>>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl SilentNeighbour {
    fn listen(addr: SocketAddr) -> Self {
        let listener =
            TcpListener::bind(addr).unwrap_or_else(|e| panic!("listening on {addr} as a silent neighbour: {e}"));
        let attempts: Arc<Mutex<Vec<HelloAttempt>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (attempts, stop) = (Arc::clone(&attempts), Arc::clone(&stop));
            thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(mut conn) = conn else { continue };
                    let index = {
                        let mut all = attempts.lock().unwrap_or_else(PoisonError::into_inner);
                        all.push(HelloAttempt { accepted: Instant::now(), bytes: Vec::new(), closed: None });
                        all.len() - 1
                    };
                    let attempts = Arc::clone(&attempts);
                    thread::spawn(move || {
                        let mut chunk = [0u8; 4096];
                        loop {
                            let read = conn.read(&mut chunk);
                            let mut all = attempts.lock().unwrap_or_else(PoisonError::into_inner);
                            match read {
                                Ok(n) if n > 0 => all[index].bytes.extend_from_slice(&chunk[..n]),
                                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                                _ => {
                                    all[index].closed = Some(Instant::now());
                                    return;
                                }
                            }
                        }
                    });
                }
            })
        };
        Self { addr, attempts, stop, acceptor: Some(acceptor) }
    }

    /// The connections whose first bytes are `PEER <opener> `, in the order they were accepted.
    fn attempts_of(&self, opener: &str) -> Vec<HelloAttempt> {
        let prefix = format!("PEER {opener} ");
        let all = self.attempts.lock().unwrap_or_else(PoisonError::into_inner);
        all.iter().filter(|a| a.bytes.starts_with(prefix.as_bytes())).cloned().collect()
    }

    /// `opener`'s connections so far, and how many others there were, for failure messages.
    fn summary(&self, opener: &str) -> String {
        let attempts = self.attempts_of(opener);
        let others = self.attempts.lock().unwrap_or_else(PoisonError::into_inner).len() - attempts.len();
        let first = attempts.first().map(|a| a.accepted);
        let mut lines: Vec<String> = attempts
            .iter()
            .map(|a| {
                let at = first.map_or(Duration::ZERO, |f| a.accepted - f);
                let held = a.held().map_or_else(|| "still open".to_owned(), |h| format!("closed after {h:.2?}"));
                format!("accepted at +{at:.2?}, {held}, sent {:?}", String::from_utf8_lossy(&a.bytes))
            })
            .collect();
        if lines.is_empty() {
            lines.push(format!("none from {opener}"));
        }
        lines.push(format!("{others} from others"));
        lines.join("; ")
    }
}

impl Drop for SilentNeighbour {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the acceptor, which then sees the flag; the readers end with their connections.
        let _ = TcpStream::connect_timeout(&self.addr, READ_TIMEOUT);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// Whether `bytes` are one keyed link hello from `opener` and nothing else:
/// `PEER <opener> <32 lower-case hex digits>\n`. Returns its nonce.
fn hello_nonce<'a>(bytes: &'a [u8], opener: &str) -> Option<&'a [u8]> {
    let nonce = bytes.strip_prefix(format!("PEER {opener} ").as_bytes())?.strip_suffix(b"\n")?;
    (nonce.len() == 32 && nonce.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))).then_some(nonce)
}

/// With Hamilton dead and something on its port that accepts connections but never answers
/// (Alford's link to it hangs in the handshake), Alford gives each attempt up after
/// `--link-connect-timeout` (1 s here) and makes a new one, each sending its hello — `PEER Alford
/// <fresh nonce>` — and nothing else, although updates for Hamilton are queued meanwhile; Alford
/// answers its clients and floods to Welsh all along, and counts no refused link (an unanswered
/// hello is not a refusal).
pub fn unanswered_link_hello_is_abandoned_and_retried(style: &str) {
    let limits = Limits { link_connect_timeout: SILENT_CONNECT_TIMEOUT, ..Limits::default() };
    let mut herd = Herd::start_with_limits(style, &limits);
    let setting = format!("--link-connect-timeout {}ms", SILENT_CONNECT_TIMEOUT.as_millis());
    reached(&herd, "Alford", "Welsh", "silent-before")
        .unwrap_or_else(|| panic!("{style}: Alford's updates did not reach Welsh within {HUNG_RECOVERY_DEADLINE:?}"));
    let hamilton = herd.addr("Hamilton");
    herd.kill("Hamilton");
    let silent = SilentNeighbour::listen(hamilton);
    // Updates made at Alford now are for Hamilton too: they find its link down, start an attempt,
    // and wait behind the hello.
    let mut alford = herd.client("Alford");
    let deadline = Instant::now() + Duration::from_secs(2);
    let first = loop {
        alford.iamat("silent-during", UCLA, &now_text());
        if let Some(first) = silent.attempts_of("Alford").first().cloned() {
            break first;
        }
        assert!(
            Instant::now() < deadline,
            "{style}: with Hamilton dead and a listener on its port, Alford made no link attempt to it within 2 s \
             (--link-retry 100ms); connections seen: {}",
            silent.summary("Alford")
        );
        thread::sleep(POLL * 5);
    };
    // While the hello hangs, Alford serves its clients and floods to Welsh.
    reached(&herd, "Alford", "Welsh", "silent-during").unwrap_or_else(|| {
        panic!(
            "{style}: while its link to Hamilton hung in the handshake, Alford's updates did not reach Welsh within \
             {HUNG_RECOVERY_DEADLINE:?}"
        )
    });
    // The attempt is given up at the timeout and another made.
    let deadline = first.accepted + SILENT_CONNECT_TIMEOUT + SILENT_LATE;
    let attempts = loop {
        let attempts = silent.attempts_of("Alford");
        if attempts.len() >= 2 && attempts[0].closed.is_some() {
            break attempts;
        }
        assert!(
            Instant::now() < deadline,
            "{style}: Alford's link attempt to a Hamilton that never answers its hello was not given up and made again \
             within {setting} + {SILENT_LATE:?}; connections seen: {}",
            silent.summary("Alford")
        );
        thread::sleep(POLL);
    };
    let held = attempts[0].held().unwrap_or_default();
    eprintln!(
        "silent neighbour: {style:>18}: Alford gave up an unanswered hello after {:.2} s and tried again {:.2} s after \
         the first attempt",
        held.as_secs_f64(),
        (attempts[1].accepted - attempts[0].accepted).as_secs_f64()
    );
    assert!(
        held + SILENT_EARLY >= SILENT_CONNECT_TIMEOUT,
        "{style}: Alford gave up its unanswered link hello after {held:.2?}, before {setting}; connections seen: {}",
        silent.summary("Alford")
    );
    let first_nonce = hello_nonce(&attempts[0].bytes, "Alford").unwrap_or_else(|| {
        panic!(
            "{style}: an unanswered link attempt must carry one `PEER Alford <32 hex digits>` line and nothing else \
             (updates wait for the answer); it carried {:?}",
            String::from_utf8_lossy(&attempts[0].bytes)
        )
    });
    let second = &attempts[1];
    if second.bytes.ends_with(b"\n") {
        let second_nonce = hello_nonce(&second.bytes, "Alford").unwrap_or_else(|| {
            panic!("{style}: Alford's second attempt sent {:?}", String::from_utf8_lossy(&second.bytes))
        });
        assert_ne!(first_nonce, second_nonce, "{style}: each link attempt must use a fresh nonce");
    }
    alford.iamat("silent-after", UCLA, &now_text());
    drop(silent);
    herd.stop();
    assert_eq!(
        counter(&herd, "Alford", "links_refused"),
        0,
        "{style}: an unanswered hello given up at {setting} is not a refused link"
    );
}
