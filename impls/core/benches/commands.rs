//! Parsing and answering commands: the per-request protocol work every style does.

mod common;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use herd_core::{AtRecord, EventLog, Herd, HerdConfig, Link, Request, Service, Timestamp};

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
    let config =
        HerdConfig { name: "Alford".into(), neighbours: vec!["Hamilton".into(), "Welsh".into()], ttl_secs: 3600, key: None };
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
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = commands
}
criterion_main!(benches);
