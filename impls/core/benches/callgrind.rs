//! Instruction counts of herd-core's hot paths under callgrind (gungraun): unlike wall-clock
//! benchmarks, the same binary and input give the same count on a busy machine, so CI can gate on
//! them strictly. Run with `scripts/callgrind.sh` (installs the matching gungraun-runner), which
//! compares against the baseline committed in `results/baseline/gungraun/`.

use std::hint::black_box;

use gungraun::{library_benchmark, library_benchmark_group, main};
use herd_core::places::{decode_response, trim_places};
use herd_core::service::flood_targets;
use herd_core::{
    AtRecord, DEFAULT_MAX_LINE, EventLog, Frame, Herd, HerdConfig, LineFramer, Link, Request, Service, Timestamp,
};

// Counts must not depend on where the checkout is. glibc's memcpy/memchr/memcmp take different
// paths by the alignment of what they touch, and two things move with the checkout's path: where a
// literal lands in .rodata (paths are compiled into the binary) and where the stack starts (the
// program's path sits above it). Two clones of one commit differed by 2–7 % on the small
// benchmarks below; inputs now sit in aligned statics, bodies run in `pinned`, and the small ones
// run 100 times (see `repeat`).
#[repr(C, align(64))]
struct Aligned<T: ?Sized>(T);

static IAMAT: &Aligned<[u8]> = &Aligned(*b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450");
static AT: &Aligned<[u8]> =
    &Aligned(*b"AT Alford +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450");

/// Small operations run [`REPEAT`] times per benchmark: the first allocation of a size may miss
/// malloc's per-thread cache, depending on what the process allocated before (its arguments and
/// paths), a fixed ~130 instructions that would be 4–7 % of one small call and is noise at 100.
const REPEAT: usize = 100;

fn repeat<R>(mut f: impl FnMut() -> R) -> R {
    for _ in 1..REPEAT {
        black_box(f());
    }
    black_box(f())
}

/// Runs `f` below a page-aligned frame, so its stack addresses are the same in every run.
#[inline(never)]
fn pinned<R>(f: impl FnOnce() -> R) -> R {
    #[repr(C, align(4096))]
    struct Page([u8; 4096]);
    let anchor = std::mem::MaybeUninit::<Page>::uninit();
    black_box(&anchor);
    f()
}

fn now() -> Timestamp {
    Timestamp::from_nanos(1_479_413_884_655_887_836)
}

#[library_benchmark]
fn frame_64_lines() -> usize {
    pinned(|| {
        let line = b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450\n";
        let read: Vec<u8> = line.iter().copied().cycle().take(line.len() * 64).collect();
        let mut framer = LineFramer::new(DEFAULT_MAX_LINE);
        framer.push(black_box(&read));
        let mut n = 0;
        while let Some(Frame::Line(l)) = framer.next_frame() {
            n += l.len();
        }
        black_box(n)
    })
}

#[library_benchmark]
fn parse_iamat() -> Request {
    pinned(|| repeat(|| Request::parse(black_box(&IAMAT.0))))
}

#[library_benchmark]
fn parse_at() -> Request {
    pinned(|| repeat(|| Request::parse(black_box(&AT.0))))
}

#[library_benchmark]
fn format_at_reply() -> AtRecord {
    pinned(|| {
        let Request::Iamat(iamat) = Request::parse(&IAMAT.0) else { unreachable!("the sample is valid") };
        repeat(|| AtRecord::answer("Alford", black_box(&iamat), now()))
    })
}

#[library_benchmark]
fn handle_100_iamats() -> usize {
    pinned(|| {
        let config =
            HerdConfig { name: "Alford".into(), neighbours: vec!["Hamilton".into(), "Welsh".into()], ttl_secs: 3600 };
        let herd = Herd::new(config, EventLog::discard());
        let mut link = Link::default();
        let mut floods = 0;
        for i in 0..100 {
            let line = format!("IAMAT client-{i} +34.068930-118.445127 1479413884.{i:09}");
            floods += usize::from(herd.handle(black_box(line.as_bytes()), &mut link, now()).flood.is_some());
        }
        black_box(floods)
    })
}

#[library_benchmark]
fn flood_decision() -> Vec<usize> {
    pinned(|| {
        let neighbours: Vec<String> = ["Alford", "Hamilton", "Holiday"].map(String::from).to_vec();
        repeat(|| flood_targets(black_box(&neighbours), Some(1), "Ball"))
    })
}

fn places_body() -> String {
    let results: Vec<String> = (0..20)
        .map(|i| format!(r#"{{"geometry":{{"location":{{"lat":34.06{i},"lng":-118.44{i}}}}},"name":"Place {i}","place_id":"p{i:08}","rating":4.{i},"types":["cafe"],"vicinity":"{i} Westwood Blvd"}}"#))
        .collect();
    format!(r#"{{"html_attributions":[],"results":[{}],"status":"OK"}}"#, results.join(","))
}

#[library_benchmark]
fn decode_places_response() -> bool {
    pinned(|| {
        let body = places_body();
        let wire = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        black_box(decode_response(black_box(wire.as_bytes())).is_ok())
    })
}

#[library_benchmark]
fn trim_places_to_5() -> usize {
    pinned(|| {
        let body = places_body();
        black_box(trim_places(black_box(body.as_bytes()), 5).map(|s| s.len()).unwrap_or(0))
    })
}

library_benchmark_group!(
    name = hot_paths;
    benchmarks = frame_64_lines, parse_iamat, parse_at, format_at_reply, handle_100_iamats, flood_decision,
        decode_places_response, trim_places_to_5
);

main!(library_benchmark_groups = hot_paths);
