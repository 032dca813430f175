//! The places codec: HTTP response decoding and JSON trimming for WHATSAT replies.

mod common;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use herd_core::places::{decode_response, trim_places};

/// A Nearby Search body of 20 results, shaped like the places backend's.
fn body() -> String {
    let results: Vec<String> = (0..20)
        .map(|i| {
            format!(
                r#"{{"geometry":{{"location":{{"lat":34.06{i},"lng":-118.44{i}}}}},"name":"Place {i} Cafe","place_id":"p{i:08}","rating":4.{i},"types":["cafe","food"],"vicinity":"{i} Westwood Blvd"}}"#
            )
        })
        .collect();
    format!(r#"{{"html_attributions":[],"results":[{}],"status":"OK"}}"#, results.join(","))
}

fn places(c: &mut Criterion) {
    let body = body();
    let wire =
        format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    let mut group = c.benchmark_group("places");
    group.bench_function("decode response", |b| b.iter(|| black_box(decode_response(black_box(wire.as_bytes())))));
    group.bench_function("trim to 5 results", |b| b.iter(|| black_box(trim_places(black_box(body.as_bytes()), 5))));
    group.bench_function("trim to 20 results", |b| b.iter(|| black_box(trim_places(black_box(body.as_bytes()), 20))));
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = places
}
criterion_main!(benches);
