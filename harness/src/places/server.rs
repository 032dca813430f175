//! The HTTP server: a hyper HTTP/1.1 connection per task on a tokio runtime, and per request:
//! draw the fault and latency (`faults.rs`), route, wait, answer. Only one route answers:
//!
//! ```text
//! GET /maps/api/place/nearbysearch/json?location=LAT,LON&radius=R&key=…   200 (or 400 if invalid)
//! any other method on that path                                            405
//! any other path                                                           404
//! ```

use std::future::Future;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use herd_core::places::NEARBY_PATH;

use super::answers::nearby_body;
use super::faults::{Fault, Faults, Stalled, UNAVAILABLE_BODY};
use super::{PlacesArgs, PlacesConfig, STALL_LIMIT};

/// Google's cap on `radius`, in metres; larger values are refused as the real API refuses them.
pub const MAX_RADIUS_M: u32 = 50_000;
/// How long shutdown waits for answers already being prepared before dropping the connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

const JSON_CONTENT_TYPE: HeaderValue = HeaderValue::from_static("application/json; charset=UTF-8");
const INVALID_REQUEST_BODY: &str =
    "{\n  \"html_attributions\": [],\n  \"results\": [],\n  \"status\": \"INVALID_REQUEST\"\n}";
const NOT_FOUND_BODY: &str = "{\n  \"error_message\": \"not found; the only endpoint is GET /maps/api/place/nearbysearch/json\",\n  \"status\": \"NOT_FOUND\"\n}";
const INTERNAL_ERROR_BODY: &str =
    "{\n  \"html_attributions\": [],\n  \"results\": [],\n  \"status\": \"UNKNOWN_ERROR\"\n}";

/// Blocking entry point of `harness places`: builds a tokio runtime, binds, prints exactly one line
/// `places listening on <addr>` to stdout (flushed), serves until SIGTERM or SIGINT, then returns Ok.
pub fn run(args: &PlacesArgs) -> anyhow::Result<()> {
    let config = PlacesConfig::from(args);
    config.check()?;
    ensure!(args.threads >= 1, "--threads must be at least 1");
    if !args.listen.ip().is_loopback() {
        eprintln!("places: warning: listening on {}, not loopback; the backend is meant for local runs", args.listen);
    }
    // One worker: the current-thread runtime, no hand-offs between threads.
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads).enable_all().build()
    }
    .context("building the places runtime")?;
    runtime.block_on(async {
        let listener = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding the places backend to {}", args.listen))?;
        let addr = listener.local_addr().context("reading the places listener's address")?;
        let shutdown = shutdown_signal()?;
        let outage = outage_signals()?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "places listening on {addr}").and_then(|()| out.flush()).context("writing to stdout")?;
        }
        serve_with_outages(listener, config, shutdown, outage).await
    })
}

/// An outage of the whole backend, started and ended by signals (see the module's docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    None,
    Stall,
    Fail,
}

/// Follows the outage signals, from a task of its own; registered before the address is printed.
fn outage_signals() -> anyhow::Result<watch::Receiver<Outage>> {
    use tokio::signal::unix::{SignalKind, signal};
    let kind = |s: libc::c_int| signal(SignalKind::from_raw(s)).context("installing an outage signal handler");
    let (mut stall, mut fail, mut end) =
        (kind(super::OUTAGE_STALL)?, kind(super::OUTAGE_FAIL)?, kind(super::OUTAGE_END)?);
    let (tx, rx) = watch::channel(Outage::None);
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                _ = stall.recv() => Outage::Stall,
                _ = fail.recv() => Outage::Fail,
                _ = end.recv() => Outage::None,
            };
            if tx.send(next).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// Resolves on the first SIGTERM or SIGINT; registered before the address is printed, so a signal
/// sent right after reading that line is never lost.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

/// Serves on an already bound listener until `shutdown` resolves (for in-process tests).
///
/// On shutdown it stops accepting, closes idle connections, lets answers under way finish for up
/// to two seconds (stalled requests are released at once), drops what is left, and prints one
/// line to stderr: the requests seen and the faults injected.
pub async fn serve(
    listener: TcpListener,
    config: PlacesConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    serve_with_outages(listener, config, shutdown, watch::channel(Outage::None).1).await
}

/// [`serve`], with outages switched by `outage`.
pub async fn serve_with_outages(
    listener: TcpListener,
    config: PlacesConfig,
    shutdown: impl Future<Output = ()>,
    outage: watch::Receiver<Outage>,
) -> anyhow::Result<()> {
    config.check()?;
    let mut http = http1::Builder::new();
    // No timer is installed, so no header timeout; a kept-alive connection may idle indefinitely,
    // as a herd server's pooled upstream connection does between WHATSATs.
    http.keep_alive(true).header_read_timeout(None);
    let shared = Arc::new(Shared {
        http,
        stop: watch::Sender::new(false),
        faults: Faults::new(config),
        outage,
        held: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(serve_connection(stream, Arc::clone(&shared)));
                }
                Err(e) => {
                    // Per-connection failures (reset before accept) and running out of descriptors:
                    // neither ends the server; back off a little so the latter does not spin.
                    eprintln!("places: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    shared.stop.send_replace(true);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        connections.shutdown().await;
    }
    eprintln!("places: {}", shared.faults);
    let (held, failed) = (shared.held.load(Relaxed), shared.failed.load(Relaxed));
    if held + failed > 0 {
        eprintln!("places: outages held {held} requests and failed {failed}");
    }
    Ok(())
}

/// What every connection task shares: the HTTP settings, the shutdown flag and the fault draws.
struct Shared {
    http: http1::Builder,
    /// Turns true once when the server shuts down.
    stop: watch::Sender<bool>,
    faults: Faults,
    /// The outage under way, if any.
    outage: watch::Receiver<Outage>,
    /// Requests held by a stall outage, and answered 503 by a failure outage.
    held: AtomicU64,
    failed: AtomicU64,
}

/// One kept-alive HTTP/1.1 connection, until the peer closes it or the server shuts down.
async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    // Answers are written whole; Nagle would only delay them.
    let _ = stream.set_nodelay(true);
    let mut stop = shared.stop.subscribe();
    let for_requests = Arc::clone(&shared);
    let service = service_fn(move |request| respond(request, Arc::clone(&for_requests)));
    let mut connection = std::pin::pin!(shared.http.serve_connection(TokioIo::new(stream), service));
    tokio::select! {
        // Peer errors (resets, garbage, a stall's deliberate close) end only this connection.
        _ = connection.as_mut() => return,
        _ = stop.wait_for(|stopping| *stopping) => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

/// One request: draw its fault and latency, prepare the answer, wait, answer.
async fn respond(request: Request<Incoming>, shared: Arc<Shared>) -> Result<Response<Full<Bytes>>, Stalled> {
    let outage = *shared.outage.borrow();
    if outage == Outage::Stall {
        // Held until the outage ends, then answered as usual.
        shared.held.fetch_add(1, Relaxed);
        let mut outage = shared.outage.clone();
        let mut stop = shared.stop.subscribe();
        tokio::select! {
            _ = outage.wait_for(|o| *o != Outage::Stall) => {}
            _ = stop.wait_for(|stopping| *stopping) => return Err(Stalled),
        }
    }
    let (fault, latency) = shared.faults.draw();
    let fault = if *shared.outage.borrow() == Outage::Fail {
        shared.failed.fetch_add(1, Relaxed);
        Fault::Fail
    } else {
        fault
    };
    if fault == Fault::Stall {
        let mut stop = shared.stop.subscribe();
        tokio::select! {
            () = tokio::time::sleep(STALL_LIMIT) => {}
            _ = stop.wait_for(|stopping| *stopping) => {}
        }
        return Err(Stalled);
    }
    let mut answer = match fault {
        Fault::Fail => {
            Answer { status: StatusCode::SERVICE_UNAVAILABLE, body: Bytes::from_static(UNAVAILABLE_BODY.as_bytes()) }
        }
        _ => route(&request),
    };
    drop(request);
    if fault == Fault::Malformed {
        // Valid HTTP framing around JSON cut in half: only the JSON parser can notice.
        answer = Answer { status: StatusCode::OK, body: answer.body.slice(..answer.body.len() / 2) };
    }
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let allow_get = answer.status == StatusCode::METHOD_NOT_ALLOWED;
    let mut response = Response::new(Full::new(answer.body));
    *response.status_mut() = answer.status;
    response.headers_mut().insert(CONTENT_TYPE, JSON_CONTENT_TYPE);
    if allow_get {
        response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET"));
    }
    Ok(response)
}

/// A status and a complete body; hyper adds Content-Length from the body's exact size.
struct Answer {
    status: StatusCode,
    body: Bytes,
}

/// The answer a well-behaved backend gives.
fn route(request: &Request<Incoming>) -> Answer {
    let uri = request.uri();
    if uri.path() != NEARBY_PATH {
        return Answer { status: StatusCode::NOT_FOUND, body: Bytes::from_static(NOT_FOUND_BODY.as_bytes()) };
    }
    let invalid = |status| Answer { status, body: Bytes::from_static(INVALID_REQUEST_BODY.as_bytes()) };
    if request.method() != Method::GET {
        return invalid(StatusCode::METHOD_NOT_ALLOWED);
    }
    let Some(query) = NearbyQuery::parse(uri.query().unwrap_or("")) else {
        return invalid(StatusCode::BAD_REQUEST);
    };
    match nearby_body(query.lat, query.lon, query.radius_m) {
        Ok(body) => Answer { status: StatusCode::OK, body },
        Err(_) => Answer {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            body: Bytes::from_static(INTERNAL_ERROR_BODY.as_bytes()),
        },
    }
}

/// A Nearby Search query as read from the request target.
#[derive(Debug, Clone, Copy, PartialEq)]
struct NearbyQuery {
    lat: f64,
    lon: f64,
    radius_m: u32,
}

impl NearbyQuery {
    /// `location=LAT,LON&radius=R` in any order among other parameters (`key` is not checked).
    /// `None` for a missing or invalid location (out of range, not finite) or radius (not an
    /// integer in 0..=50000).
    fn parse(query: &str) -> Option<Self> {
        let (mut location, mut radius) = (None, None);
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("location", value)) => location = Some(value),
                Some(("radius", value)) => radius = Some(value),
                _ => {}
            }
        }
        let location = location?;
        let (lat, lon) =
            location.split_once(',').or_else(|| location.split_once("%2C")).or_else(|| location.split_once("%2c"))?;
        let degrees = |text: &str, limit: f64| text.parse::<f64>().ok().filter(|v| v.is_finite() && v.abs() <= limit);
        let radius_m = radius?.parse::<u32>().ok().filter(|r| *r <= MAX_RADIUS_M)?;
        Some(Self { lat: degrees(lat, 90.0)?, lon: degrees(lon, 180.0)?, radius_m })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::net::SocketAddr;

    use super::*;
    use herd_core::Location;
    use herd_core::places::{Decoded, HttpResponse, PlacesQuery, decode_response, trim_places};
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;
    use tokio::time::timeout;

    use crate::places::nearby_json;

    const UCLA: (f64, f64) = (34.068930, -118.445127);

    #[test]
    fn queries_parse_like_the_api() {
        let q = NearbyQuery::parse("location=34.068930,-118.445127&radius=10000&key=x").expect("valid");
        assert_eq!(q, NearbyQuery { lat: UCLA.0, lon: UCLA.1, radius_m: 10_000 });
        assert_eq!(
            NearbyQuery::parse("key=x&radius=5&location=-1.5%2C2"),
            Some(NearbyQuery { lat: -1.5, lon: 2.0, radius_m: 5 })
        );
        for bad in [
            "",
            "radius=10",
            "location=1,2",
            "location=1;2&radius=10",
            "location=91,2&radius=10",
            "location=1,181&radius=10",
            "location=inf,2&radius=10",
            "location=NaN,2&radius=10",
            "location=1,2&radius=50001",
            "location=1,2&radius=-1",
            "location=1,2&radius=1.5",
        ] {
            assert_eq!(NearbyQuery::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_constant_bodies_are_pretty_printed_json() {
        for constant in [INVALID_REQUEST_BODY, NOT_FOUND_BODY, INTERNAL_ERROR_BODY] {
            let v: serde_json::Value = serde_json::from_str(constant).expect("constant bodies are JSON");
            assert_eq!(serde_json::to_string_pretty(&v).expect("prints"), constant);
        }
    }

    /// An in-process backend on 127.0.0.1 with an ephemeral port.
    pub(crate) struct TestServer {
        pub(crate) addr: SocketAddr,
        stop: oneshot::Sender<()>,
        task: JoinHandle<anyhow::Result<()>>,
    }

    impl TestServer {
        pub(crate) async fn start(config: PlacesConfig) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
            let addr = listener.local_addr().expect("local addr");
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(serve(listener, config, async move {
                let _ = stopped.await;
            }));
            Self { addr, stop, task }
        }

        pub(crate) async fn connect(&self) -> Client {
            Client { stream: TcpStream::connect(self.addr).await.expect("connect"), buf: Vec::new() }
        }

        pub(crate) async fn shut_down(self) {
            let _ = self.stop.send(());
            timeout(Duration::from_secs(1), self.task)
                .await
                .expect("shuts down within a second")
                .expect("serve did not panic")
                .expect("serve returned Ok");
        }
    }

    /// A raw HTTP/1.1 client over one connection, decoding with herd-core like the herd servers do.
    pub(crate) struct Client {
        stream: TcpStream,
        pub(crate) buf: Vec<u8>,
    }

    impl Client {
        pub(crate) async fn send(&mut self, request: &[u8]) {
            let mut rest = request;
            while !rest.is_empty() {
                self.stream.writable().await.expect("writable");
                match self.stream.try_write(rest) {
                    Ok(n) => rest = &rest[n..],
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("write failed: {e}"),
                }
            }
        }

        pub(crate) async fn get(&mut self, target: &str) -> HttpResponse {
            self.send(format!("GET {target} HTTP/1.1\r\nHost: places\r\n\r\n").as_bytes()).await;
            self.response().await
        }

        /// Reads more bytes; `None` at end of stream.
        pub(crate) async fn read_some(&mut self) -> Option<usize> {
            loop {
                self.stream.readable().await.expect("readable");
                let mut chunk = [0u8; 16 * 1024];
                match self.stream.try_read(&mut chunk) {
                    Ok(0) => return None,
                    Ok(n) => {
                        self.buf.extend_from_slice(&chunk[..n]);
                        return Some(n);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("read failed: {e}"),
                }
            }
        }

        pub(crate) async fn response(&mut self) -> HttpResponse {
            timeout(Duration::from_secs(1), async {
                loop {
                    if let Decoded::Complete(response) = decode_response(&self.buf).expect("valid HTTP") {
                        return response;
                    }
                    self.read_some().await.expect("connection open until the response is complete");
                }
            })
            .await
            .expect("response within a second")
        }

        /// The head of the response at the start of the buffer, lowercased, then drops that response.
        pub(crate) fn take_head(&mut self, response: &HttpResponse) -> String {
            let head = String::from_utf8_lossy(&self.buf[..response.consumed - response.body.len()]).to_lowercase();
            self.buf.drain(..response.consumed);
            head
        }
    }

    #[tokio::test]
    async fn two_requests_on_one_kept_alive_connection() {
        let server = TestServer::start(PlacesConfig::default()).await;
        let mut client = server.connect().await;
        let location = Location::parse("+34.068930-118.445127").expect("valid location");
        for bound in [3u8, 20] {
            let query = PlacesQuery { location: location.clone(), radius_m: 10_000, bound };
            client.send(&query.encode_request(&server.addr.to_string())).await;
            let response = client.response().await;
            assert_eq!(response.status, 200);
            assert!(response.keep_alive);
            let head = client.take_head(&response);
            assert!(head.contains("content-type: application/json; charset=utf-8"), "{head}");
            assert!(head.contains(&format!("content-length: {}", response.body.len())), "{head}");
            let expected = serde_json::to_string_pretty(&nearby_json(UCLA.0, UCLA.1, 10_000)).expect("prints");
            assert_eq!(response.body, expected.as_bytes());
            let trimmed: serde_json::Value =
                serde_json::from_str(&trim_places(&response.body, bound).expect("valid places JSON")).expect("json");
            assert_eq!(trimmed["status"], "OK");
            assert_eq!(trimmed["results"].as_array().map(Vec::len), Some(usize::from(bound)));
        }
        server.shut_down().await;
    }

    #[tokio::test]
    async fn bad_queries_get_400_and_other_paths_404() {
        let server = TestServer::start(PlacesConfig::default()).await;
        let mut client = server.connect().await;
        for target in [
            format!("{NEARBY_PATH}?radius=10&key=x"),
            format!("{NEARBY_PATH}?location=34.1,-118.4&key=x"),
            format!("{NEARBY_PATH}?location=abc&radius=10"),
            NEARBY_PATH.to_owned(),
        ] {
            let response = client.get(&target).await;
            assert_eq!(response.status, 400, "{target}");
            let json: serde_json::Value = serde_json::from_slice(&response.body).expect("json");
            assert_eq!(json, serde_json::json!({"html_attributions": [], "results": [], "status": "INVALID_REQUEST"}));
            client.take_head(&response);
        }
        let response = client.get("/maps/api/place/textsearch/json?query=x").await;
        assert_eq!(response.status, 404);
        client.take_head(&response);
        let polar = client.get(&format!("{NEARBY_PATH}?location=89.9,0&radius=10")).await;
        assert_eq!(polar.status, 200);
        let json: serde_json::Value = serde_json::from_slice(&polar.body).expect("json");
        assert_eq!(json["status"], "ZERO_RESULTS");
        server.shut_down().await;
    }

    #[tokio::test]
    async fn an_outage_fails_or_holds_every_request_until_it_ends() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let (outage, outages) = watch::channel(Outage::None);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_with_outages(
            listener,
            PlacesConfig::default(),
            async move {
                let _ = stopped.await;
            },
            outages,
        ));
        let mut client = Client { stream: TcpStream::connect(addr).await.expect("connect"), buf: Vec::new() };
        let target = format!("{NEARBY_PATH}?location=34.1,-118.4&radius=10&key=x");
        outage.send_replace(Outage::Fail);
        let failed = client.get(&target).await;
        assert_eq!(failed.status, 503, "a failure outage answers 503");
        client.take_head(&failed);
        outage.send_replace(Outage::Stall);
        client.send(format!("GET {target} HTTP/1.1\r\nHost: places\r\n\r\n").as_bytes()).await;
        assert!(
            timeout(Duration::from_millis(300), client.read_some()).await.is_err(),
            "a stall outage holds the request"
        );
        outage.send_replace(Outage::None);
        let held = client.response().await;
        assert_eq!(held.status, 200, "answered as usual once the outage ends");
        client.take_head(&held);
        let _ = stop.send(());
        timeout(Duration::from_secs(3), task).await.expect("shuts down").expect("no panic").expect("Ok");
    }

    /// The injected faults (places::faults), as a client of the server meets them.
    mod faults {
        use std::time::Duration;

        use herd_core::places::{NEARBY_PATH, trim_places};
        use tokio::time::{Instant, timeout};

        use super::TestServer;
        use crate::places::PlacesConfig;

        #[tokio::test]
        async fn fail_rate_one_answers_503() {
            let server = TestServer::start(PlacesConfig { fail_rate: 1.0, ..PlacesConfig::default() }).await;
            let mut client = server.connect().await;
            for _ in 0..2 {
                let response = client.get(&format!("{NEARBY_PATH}?location=1,2&radius=10")).await;
                assert_eq!(response.status, 503);
                let json: serde_json::Value = serde_json::from_slice(&response.body).expect("a JSON error body");
                assert_eq!(json["status"], "UNKNOWN_ERROR");
                client.take_head(&response);
            }
            server.shut_down().await;
        }

        #[tokio::test]
        async fn malformed_rate_one_answers_truncated_json() {
            let server = TestServer::start(PlacesConfig { malformed_rate: 1.0, ..PlacesConfig::default() }).await;
            let mut client = server.connect().await;
            let response = client.get(&format!("{NEARBY_PATH}?location=34.068930,-118.445127&radius=10000")).await;
            assert_eq!(response.status, 200);
            assert!(!response.body.is_empty());
            assert!(trim_places(&response.body, 5).is_err(), "a truncated body must be rejected");
            server.shut_down().await;
        }

        #[tokio::test]
        async fn stalls_hold_the_request_and_shutdown_releases_them() {
            let server = TestServer::start(PlacesConfig { stall_rate: 1.0, ..PlacesConfig::default() }).await;
            let mut client = server.connect().await;
            client
                .send(format!("GET {NEARBY_PATH}?location=1,2&radius=10 HTTP/1.1\r\nHost: places\r\n\r\n").as_bytes())
                .await;
            assert!(timeout(Duration::from_millis(200), client.read_some()).await.is_err(), "no answer while stalled");
            let started = Instant::now();
            server.shut_down().await;
            assert!(started.elapsed() < Duration::from_millis(500));
            // The stalled request was never answered: the connection just closes.
            assert_eq!(timeout(Duration::from_secs(1), client.read_some()).await.expect("closed promptly"), None);
            assert!(client.buf.is_empty());
        }

        #[tokio::test]
        async fn fixed_latency_delays_the_answer() {
            let server =
                TestServer::start(PlacesConfig { latency: "50ms".parse().expect("valid"), ..PlacesConfig::default() })
                    .await;
            let mut client = server.connect().await;
            let started = Instant::now();
            let response = client.get(&format!("{NEARBY_PATH}?location=1,2&radius=10")).await;
            assert_eq!(response.status, 200);
            assert!(started.elapsed() >= Duration::from_millis(50));
            server.shut_down().await;
        }
    }
}
