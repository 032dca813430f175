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

const IAMAT: &[u8] = b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450";
const AT: &[u8] = b"AT Alford +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450";

/// Small operations run [`REPEAT`] times per benchmark, so that counts do not depend on where the
/// checkout is. The first allocation of a size may miss malloc's per-thread cache, depending on
/// what the process allocated before (its arguments and paths): a fixed ~130 instructions, 4–7 %
/// of one small call — two clones of one commit failed the 3 % gate that way — and noise at 100.
/// (Aligning the inputs and the stack as well changed the largest difference between two clones
/// only from 1.5 % to 1.1 %, so the bench does not.)
const REPEAT: usize = 100;

fn repeat<R>(mut f: impl FnMut() -> R) -> R {
    for _ in 1..REPEAT {
        black_box(f());
    }
    black_box(f())
}

fn now() -> Timestamp {
    Timestamp::from_nanos(1_479_413_884_655_887_836)
}

#[library_benchmark]
fn frame_64_lines() -> usize {
    let line = b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450\n";
    let read: Vec<u8> = line.iter().copied().cycle().take(line.len() * 64).collect();
    // Repeated like the small benchmarks: one framer's first allocations alone moved this count by
    // 6 % when unrelated code was added to herd-core (framing.rs unchanged).
    repeat(|| {
        let mut framer = LineFramer::new(DEFAULT_MAX_LINE);
        framer.push(black_box(&read));
        let mut n = 0;
        while let Some(Frame::Line(l)) = framer.next_frame() {
            n += l.len();
        }
        n
    })
}

#[library_benchmark]
fn parse_iamat() -> Request {
    repeat(|| Request::parse(black_box(IAMAT)))
}

#[library_benchmark]
fn parse_at() -> Request {
    repeat(|| Request::parse(black_box(AT)))
}

#[library_benchmark]
fn format_at_reply() -> AtRecord {
    let Request::Iamat(iamat) = Request::parse(IAMAT) else { unreachable!("the sample is valid") };
    repeat(|| AtRecord::answer("Alford", black_box(&iamat), now()))
}

#[library_benchmark]
fn handle_100_iamats() -> usize {
    let config = HerdConfig::new("Alford", &["Hamilton", "Welsh"], None);
    let herd = Herd::new(config, EventLog::discard());
    let mut link = Link::default();
    let mut floods = 0;
    for i in 0..100 {
        let line = format!("IAMAT client-{i} +34.068930-118.445127 1479413884.{i:09}");
        floods += usize::from(herd.handle(black_box(line.as_bytes()), &mut link, now()).flood.is_some());
    }
    black_box(floods)
}

#[library_benchmark]
fn flood_decision() -> Vec<usize> {
    let neighbours: Vec<String> = ["Alford", "Hamilton", "Holiday"].map(String::from).to_vec();
    repeat(|| flood_targets(black_box(&neighbours), Some(1), "Ball"))
}

fn places_body() -> String {
    let results: Vec<String> = (0..20)
        .map(|i| format!(r#"{{"geometry":{{"location":{{"lat":34.06{i},"lng":-118.44{i}}}}},"name":"Place {i}","place_id":"p{i:08}","rating":4.{i},"types":["cafe"],"vicinity":"{i} Westwood Blvd"}}"#))
        .collect();
    format!(r#"{{"html_attributions":[],"results":[{}],"status":"OK"}}"#, results.join(","))
}

#[library_benchmark]
fn decode_places_response() -> bool {
    let body = places_body();
    let wire = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    black_box(decode_response(black_box(wire.as_bytes())).is_ok())
}

#[library_benchmark]
fn trim_places_to_5() -> usize {
    let body = places_body();
    black_box(trim_places(black_box(body.as_bytes()), 5).map(|s| s.len()).unwrap_or(0))
}

library_benchmark_group!(
    name = hot_paths;
    benchmarks = frame_64_lines, parse_iamat, parse_at, format_at_reply, handle_100_iamats, flood_decision,
        decode_places_response, trim_places_to_5
);

main!(library_benchmark_groups = hot_paths);
