//! The request path's stack, guarded at the smallest size `--stack-kib` allows and measured; and
//! the waits this crate adds around herd-core's policy machines (a stalled client, a closed link).
//!
//! The stack tests run a real server (the real accept loop, reader, writer and fetch coroutines) over
//! loopback against a places backend that answers with the deepest JSON serde_json accepts, and
//! send the worst lines a client can: a line of exactly `max_line` bytes and an oversized one.
//!
//! may's scheduler and stack pool are per process, so run the measurement on its own:
//!
//! ```text
//! cargo test -p herd-coroutine -- --ignored --nocapture stack_usage
//! ```
//! It runs every coroutine on an odd-sized stack (in words), which makes may paint the whole stack
//! and print `coroutine name = None, stack size = S,  used size = U` (words) as each one ends.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use herd_core::{Event, EventLog, EventSink, Herd, HerdConfig, Limits, ServeOptions};

use super::{MIN_STACK_KIB, serve_with_stack};

/// serde_json refuses the 128th level of nesting, so 127 is the deepest JSON it parses.
const JSON_DEPTH: usize = 127;

/// Upstream bodies at the recursion limit: nested arrays, nested objects, and both alternating.
fn deepest_bodies() -> Vec<String> {
    // Two levels are the outer object and the `results` array; `results[0]` holds the rest.
    let inner = JSON_DEPTH - 2;
    let arrays = format!("{}{}", "[".repeat(inner), "]".repeat(inner));
    let objects = format!("{}1{}", r#"{"name":"#.repeat(inner), "}".repeat(inner));
    let mixed = format!("{}1{}", r#"[{"a":"#.repeat(inner / 2), "}]".repeat(inner / 2));
    [arrays, objects, mixed]
        .into_iter()
        .map(|deep| format!(r#"{{"html_attributions":[],"results":[{deep}],"status":"OK"}}"#))
        .collect()
}

/// A keep-alive HTTP/1.1 backend on plain threads (test code, outside may) cycling through `bodies`.
fn places_backend(bodies: Vec<String>) -> SocketAddr {
    let listener = StdListener::bind("127.0.0.1:0").expect("bind the test backend");
    let addr = listener.local_addr().expect("backend address");
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (bodies, next) = (Arc::clone(&bodies), Arc::clone(&next));
            thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut writer = stream;
                let mut line = String::new();
                loop {
                    // Skip the request head.
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let body = &bodies[next.fetch_add(1, Ordering::Relaxed) % bodies.len()];
                    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                    if writer.write_all(head.as_bytes()).and_then(|()| writer.write_all(body.as_bytes())).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A sink that drops events after they were built, so logging with `--log-io` is on the path.
#[derive(Debug)]
struct Discard;

impl EventSink for Discard {
    fn record(&self, _event: herd_core::Event) {}
}

/// Starts a herd server whose coroutines get `stack_words` words of stack.
fn start_server(stack_words: usize) -> SocketAddr {
    let bodies = deepest_bodies();
    let places = places_backend(bodies);
    let listener = StdListener::bind("127.0.0.1:0").expect("bind the server");
    let addr = listener.local_addr().expect("server address");
    let config =
        HerdConfig { name: "Alford".into(), neighbours: Vec::new(), ttl_secs: 3600, key: None, max_clients: 1_000_000 };
    let service = Arc::new(Herd::new(config, EventLog::new(Arc::new(Discard), true)));
    let options = ServeOptions { places: Some(places), threads: Some(2), ..ServeOptions::default() };
    thread::spawn(move || serve_with_stack(listener, service, &options, stack_words));
    addr
}

/// The worst session a client can run; panics if a reply is wrong (a stack overflow would
/// instead end the whole test process).
fn worst_session(addr: SocketAddr) {
    let max_line = herd_core::DEFAULT_MAX_LINE;
    let stream = StdStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    let mut reply = String::new();

    writer.write_all(b"IAMAT kiwi +34.068930-118.445127 1479413884.392014450\n").expect("send IAMAT");
    reader.read_line(&mut reply).expect("AT reply");
    assert!(reply.starts_with("AT Alford "), "{reply}");

    for _ in 0..deepest_bodies().len() {
        writer.write_all(b"WHATSAT kiwi 10 20\n").expect("send WHATSAT");
        let mut whole = String::new();
        while !whole.ends_with("\n\n") {
            reply.clear();
            assert!(reader.read_line(&mut reply).expect("WHATSAT reply") > 0, "closed mid-reply");
            whole.push_str(&reply);
        }
        assert!(whole.contains(r#""status": "OK""#), "the deep JSON must have been parsed: {whole:.200}");
    }

    let mut longest = vec![b'x'; max_line];
    longest.push(b'\n');
    writer.write_all(&longest).expect("send the longest line");
    reply.clear();
    reader.read_line(&mut reply).expect("? reply");
    assert_eq!(reply.len(), max_line + 3, "`? ` + the line + newline");

    let mut oversized = vec![b'y'; max_line + 100];
    oversized.push(b'\n');
    writer.write_all(&oversized).expect("send the oversized line");
    reply.clear();
    reader.read_line(&mut reply).expect("oversized reply");
    assert!(reply.starts_with("? yyy"), "{reply}");
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest);
}

#[test]
fn worst_case_request_path_fits_the_smallest_allowed_stack() {
    let addr = start_server(MIN_STACK_KIB * 1024 / size_of::<usize>());
    worst_session(addr);
    // A second connection reuses the pooled stacks and the kept-alive upstream connection.
    worst_session(addr);
}

#[test]
#[ignore = "prints may's stack-usage report; run alone with --ignored --nocapture"]
fn stack_usage() {
    // Odd, so may tracks and reports; generous, so the measurement cannot overflow.
    let addr = start_server(1024 * 1024 / size_of::<usize>() + 1);
    worst_session(addr);
    // Let the connection's coroutines end and print.
    thread::sleep(Duration::from_millis(300));
}

/// A sink that keeps every event, for tests that wait for one.
#[derive(Debug, Default)]
struct Recorded(Mutex<Vec<Event>>);

impl EventSink for Recorded {
    fn record(&self, event: Event) {
        self.0.lock().expect("sink lock").push(event);
    }
}

impl Recorded {
    /// Waits up to `within` for an event that `matches`.
    fn wait_for(&self, within: Duration, matches: impl Fn(&Event) -> bool) -> bool {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if self.0.lock().expect("sink lock").iter().any(&matches) {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

/// Starts a herd server named Alford with `neighbours`, no places backend, and `limits`.
fn start_recorded(neighbours: Vec<(String, SocketAddr)>, limits: Limits) -> (SocketAddr, Arc<Recorded>) {
    let listener = StdListener::bind("127.0.0.1:0").expect("bind the server");
    let addr = listener.local_addr().expect("server address");
    let names = neighbours.iter().map(|(name, _)| name.clone()).collect();
    let config =
        HerdConfig { name: "Alford".into(), neighbours: names, ttl_secs: 3600, key: None, max_clients: 1_000_000 };
    let sink = Arc::new(Recorded::default());
    let service = Arc::new(Herd::new(config, EventLog::new(Arc::clone(&sink) as Arc<dyn EventSink>, false)));
    let options =
        ServeOptions { name: "Alford".into(), neighbours, threads: Some(2), limits, ..ServeOptions::default() };
    let stack_words = MIN_STACK_KIB * 1024 / size_of::<usize>();
    thread::spawn(move || serve_with_stack(listener, service, &options, stack_words));
    (addr, sink)
}

#[test]
fn a_client_that_stops_reading_is_closed_after_the_write_stall() {
    let limits = Limits { write_stall: Duration::from_millis(300), ..Limits::default() };
    let (addr, sink) = start_recorded(Vec::new(), limits);
    let client = StdStream::connect(addr).expect("connect");
    let mut writer = client.try_clone().expect("clone");
    // Invalid lines are echoed back whole: 32 KiB of reply per line, never read.
    thread::spawn(move || {
        let mut line = vec![b'x'; 32 * 1024];
        line.push(b'\n');
        for _ in 0..1024 {
            if writer.write_all(&line).is_err() {
                return;
            }
        }
    });
    let stalled = |e: &Event| matches!(e, Event::Error { context, message } if context == "write" && message.contains("took none"));
    assert!(sink.wait_for(Duration::from_secs(5), stalled), "the stalled client was not closed");
    client.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut rest = Vec::new();
    let end = (&client).read_to_end(&mut rest);
    assert!(end.is_ok() || end.is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset), "closed, not hung");
}

#[test]
fn a_link_its_neighbour_closes_is_noticed_without_traffic_and_reopened() {
    let neighbour = StdListener::bind("127.0.0.1:0").expect("bind the neighbour");
    neighbour.set_nonblocking(true).expect("non-blocking accept, so a missing link fails the test");
    let peers = vec![("Hamilton".to_owned(), neighbour.local_addr().expect("neighbour address"))];
    let (addr, sink) = start_recorded(peers, Limits::default());
    let accept = || {
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            match neighbour.accept() {
                Ok((link, _)) => break link,
                Err(_) if Instant::now() < until => thread::sleep(Duration::from_millis(10)),
                Err(e) => panic!("no link from Alford ({e}); events: {:?}", sink.0.lock()),
            }
        }
    };
    let mut client = StdStream::connect(addr).expect("connect");
    client.write_all(b"IAMAT kiwi +34.068930-118.445127 1479413884.392014450\n").expect("send IAMAT");

    let read_hello = |link: StdStream| {
        link.set_nonblocking(false).expect("blocking");
        link.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let mut reader = BufReader::new(link);
        let mut hello = String::new();
        reader.read_line(&mut hello).expect("hello");
        assert_eq!(hello, "PEER Alford\n");
        reader
    };
    let mut first = read_hello(accept());
    let mut update = String::new();
    first.read_line(&mut update).expect("the update");
    assert!(update.starts_with("AT Alford "), "{update}");
    drop(first);

    let down = |e: &Event| matches!(e, Event::LinkDown { peer, .. } if peer == "Hamilton");
    assert!(sink.wait_for(Duration::from_secs(2), down), "the closed link was not noticed");
    read_hello(accept());
}
