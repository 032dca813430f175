//! Parsing and answering commands: the per-request protocol work every style does.

mod common;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use std::sync::Arc;
use std::time::Instant;

use herd_core::policy::{FloodLink, Limits};
use herd_core::{AtRecord, EventLog, Herd, HerdConfig, HerdKey, Link, Request, ServerStats, Service, Timestamp};

const IAMAT: &[u8] = b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450";
const AT: &[u8] = b"AT Alford +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450";

fn commands(c: &mut Criterion) {
    let now = Timestamp::parse("1479413884.655887836").expect("valid");
    let mut group = c.benchmark_group("commands");
    group.bench_function("parse IAMAT", |b| b.iter(|| black_box(Request::parse(black_box(IAMAT)))));
    group.bench_function("parse AT", |b| b.iter(|| black_box(Request::parse(black_box(AT)))));
    group.bench_function("parse invalid", |b| b.iter(|| black_box(Request::parse(black_box(b"IAMTA x y z")))));
    let Request::Iamat(iamat) = Request::parse(IAMAT) else { unreachable!("sample is valid") };
    group.bench_function("format AT reply", |b| {
        b.iter(|| black_box(AtRecord::answer("Alford", black_box(&iamat), now)))
    });
    let config = HerdConfig::new("Alford", &["Hamilton", "Welsh"], None);
    let herd = Herd::new(config, EventLog::discard());
    let mut link = Link::default();
    let mut t = now.as_nanos();
    group.bench_function("handle IAMAT (parse, store, flood decision, reply)", |b| {
        b.iter(|| {
            t += 1;
            let line = format!("IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 {}", Timestamp::from_nanos(t));
            black_box(herd.handle(line.as_bytes(), &mut link, now))
        })
    });
    // One link's whole handshake, both sides (once per link, never per request): two nonces, four
    // HMAC-SHA256 computations, and the lines' formatting and parsing.
    let key = Arc::new(HerdKey::generate());
    let acceptor = Herd::new(HerdConfig::new("Hamilton", &["Alford"], Some(Arc::clone(&key))), EventLog::discard());
    let (stats, limits) = (ServerStats::default(), Limits::default());
    group.bench_function("link handshake (both sides)", |b| {
        b.iter(|| {
            let t0 = Instant::now();
            let mut opener =
                FloodLink::new("Alford", "Hamilton", Some(Arc::clone(&key)), &limits, t0, &stats, EventLog::discard());
            opener.on_timeout(t0 + limits.link_retry);
            opener.poll_connect();
            opener.on_connected(t0);
            let (mut sent, mut conn) = (Vec::new(), Link::default());
            opener.poll_transmit(&mut sent);
            let answer = acceptor.handle(&sent[..sent.len() - 1], &mut conn, now);
            let herd_core::Reply::Bytes(answer) = answer.reply else { unreachable!("a keyed PEER is answered") };
            opener.on_read(t0, Ok(&answer));
            sent.clear();
            opener.poll_transmit(&mut sent);
            black_box(acceptor.handle(&sent[..sent.len() - 1], &mut conn, now));
            assert!(conn.peer().is_some());
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = commands
}
criterion_main!(benches);
