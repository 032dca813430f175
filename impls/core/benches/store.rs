//! The location store and the flood decision.

mod common;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use herd_core::service::flood_targets;
use herd_core::{LocationStore, Request, Timestamp};

fn store(c: &mut Criterion) {
    let records: Vec<_> = (0..1000)
        .map(|i| {
            let line = format!("AT Alford +0.1 client-{i} +34.0-118.0 {}.5", 1_000_000 + i);
            match Request::parse(line.as_bytes()) {
                Request::At(r) => r,
                other => unreachable!("valid AT: {other:?}"),
            }
        })
        .collect();
    let now = Timestamp::from_nanos(2_000_000 * 1_000_000_000);
    let mut group = c.benchmark_group("store");
    group.bench_function("update 1000 clients (newer wins)", |b| {
        b.iter(|| {
            let mut store = LocationStore::new(3600, 4_000_000);
            for r in &records {
                black_box(store.update(r, now));
            }
            store
        })
    });
    let mut store = LocationStore::new(3600, 4_000_000);
    for r in &records {
        store.update(r, now);
    }
    group.bench_function("stale update ignored", |b| b.iter(|| black_box(store.update(black_box(&records[500]), now))));
    group.bench_function("get", |b| b.iter(|| black_box(store.get(black_box("client-500"), now).is_some())));
    let neighbours: Vec<String> = ["Alford", "Hamilton", "Holiday"].map(String::from).to_vec();
    group.bench_function("flood decision", |b| {
        b.iter(|| black_box(flood_targets(&neighbours, black_box(Some(1)), "Ball")))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = store
}
criterion_main!(benches);
