//! The link handshake, both sides, against an attacker who does not hold the herd key.
//!
//! The input is cut in two at its first newline-free split byte: what a fake acceptor answers a
//! keyed [`FloodLink`] (fed in reads whose size the first byte picks), and the lines a fake opener
//! sends a keyed [`Herd`]. Checked: the link never comes up, never hands out more than its hello,
//! and never panics; the herd never takes the connection for a link, and never stores or floods
//! an `AT` from it. (Finding a proof without the key would mean breaking HMAC-SHA256; what this
//! looks for is a path through the parsers that skips the check.)
#![no_main]

use std::sync::Arc;
use std::time::Instant;

use herd_core::policy::{FloodLink, Limits, LinkState};
use herd_core::{EventLog, Herd, HerdConfig, HerdKey, Link, ServerStats, Service, Timestamp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else { return };
    let split = rest.iter().position(|&b| b == 0xff).unwrap_or(rest.len());
    let (answer, lines) = (&rest[..split], rest.get(split + 1..).unwrap_or(&[]));
    let key = Arc::new(HerdKey::from_hex("00112233445566778899aabbccddeeff").expect("valid key"));

    // The opener's side: connected, hello out, then whatever the "acceptor" sends.
    let t0 = Instant::now();
    let stats = ServerStats::default();
    let mut link = FloodLink::new(
        "Alford",
        "Hamilton",
        Some(Arc::clone(&key)),
        &Limits::default(),
        t0,
        &stats,
        EventLog::discard(),
    );
    link.on_flood(b"AT Alford +0.1 kiwi +1.0-2.0 1479413884.5\n", t0);
    assert!(link.poll_connect());
    link.on_connected(t0);
    let mut sent = Vec::new();
    link.poll_transmit(&mut sent);
    let hello_len = sent.len();
    for piece in answer.chunks(1 + usize::from(cut % 64)) {
        link.on_read(t0, Ok(piece));
        link.poll_transmit(&mut sent);
        assert_ne!(link.state(), LinkState::Up, "a link came up without the key's proof");
    }
    assert_eq!(sent.len(), hello_len, "nothing but the hello goes to an unproven acceptor");

    // The acceptor's side: a keyed herd reading lines from a connection that holds no key.
    let config = HerdConfig::new("Hamilton", &["Alford", "Holiday"], Some(key));
    let herd = Herd::new(config, EventLog::discard());
    let now = Timestamp::parse("1479413884.655887836").expect("valid time");
    let mut conn = Link::default();
    for line in lines.split(|&b| b == b'\n') {
        let outcome = herd.handle(line, &mut conn, now);
        assert!(outcome.flood.is_none(), "an unproven connection flooded {line:?}");
        assert!(conn.peer().is_none(), "an unproven connection became a link");
    }
});
