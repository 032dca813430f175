//! Line framing: a read's worth of pipelined IAMAT lines cut into lines.

mod common;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use herd_core::{DEFAULT_MAX_LINE, Frame, LineFramer};

fn framing(c: &mut Criterion) {
    let line = b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450\n";
    let read: Vec<u8> = line.iter().copied().cycle().take(line.len() * 64).collect();
    let mut group = c.benchmark_group("framing");
    group.throughput(Throughput::Bytes(read.len() as u64));
    group.bench_function("64 lines per read", |b| {
        let mut framer = LineFramer::new(DEFAULT_MAX_LINE);
        b.iter(|| {
            framer.push(black_box(&read));
            let mut n = 0;
            while let Some(Frame::Line(l)) = framer.next_frame() {
                n += l.len();
            }
            black_box(n)
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = framing
}
criterion_main!(benches);
