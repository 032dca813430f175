//! One line's handling, and one client connection of a style that answers each request before it
//! handles the next.
//!
//! ```text
//!  socket ──read──► read_buf() / filled(n, at) ──► poll(shared, now, write) ─┬─ None: all handled, read again
//!                                                   for each line, in order:  └─ Some(Fetch): ask its places
//!                                                     handle_line:                 backend, then complete()
//!                                                       Service::handle
//!                                                       flood ──► FloodLinks::send
//!                                                       WHATSAT, no backend ──► answered at once
//!                                                     reply ──► OutputBuffer ──write──► socket (at flush_at,
//!                                                                                       and before a fetch)
//!                                                     oversized ──► its reply, then is_closing()
//! ```
//!
//! [`handle_line`] is what every style does with one complete line, written once: the service
//! handles it, the update it made is flooded, and its reply comes back as [`Handled`] — bytes,
//! nothing, or a [`Fetch`] from the places backend. A server without a backend answers a WHATSAT
//! here, at once ([`UpstreamError::NotConfigured`]), so no style decides that case; a style only
//! queues the reply, or starts the fetch its own way (awaited, on a blocked thread, in a coroutine,
//! as a handler or a closure, on stage 2).
//!
//! A [`Session`] is the order in which a connection's pieces are used — the [`LineFramer`], the
//! connection's [`Link`] state, [`handle_line`] and the [`OutputBuffer`] — written once, so that
//! the styles which hold a connection in one place (a task) differ only in how they read, write
//! and wait. A WHATSAT stops the handling until its answer is in: the replies of one connection
//! leave in request order, and a request takes effect after the ones before it (a WHATSAT sees the
//! IAMAT sent before it).
//!
//! No socket and no clock inside: the caller says when bytes arrived, passes `now`, and lends a
//! `write` function — one non-blocking write, returning what the socket took or `WouldBlock`.
//!
//! # Calling order
//! 1. While [`Session::may_read`]: read into [`Session::read_buf`], then [`Session::filled`] with
//!    the count and the wall-clock time it arrived (a read of 0 is the end of input: stop reading).
//! 2. [`Session::poll`] until it returns `None`; each `Some(fetch)` is answered with
//!    [`Session::complete`] (after asking its places backend) before the next poll.
//! 3. Write what [`OutputBuffer::owed`] says through [`Session::output`] (`write_with`), waiting for
//!    the socket no longer than [`OutputBuffer::poll_timeout`].
//! 4. Once [`Session::is_closing`] (an oversized line was answered), read no more: write what is
//!    owed, then shut the socket's sending side so the last reply is not lost to a reset.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use crate::framing::{Frame, LineFramer};
use crate::options::ServeOptions;
use crate::places::{HttpResponse, UpstreamError};
use crate::policy::link::{FloodLinks, LinkWaker};
use crate::policy::{Acceptor, Admitted, Limits, OutputBuffer, PlacesBackend};
use crate::service::{Link, PlacesLookup, Reply, Service};
use crate::time::Timestamp;

/// What a handled line asks of its connection.
#[derive(Debug)]
pub enum Handled<'p, P> {
    /// Queue this reply (a whole one, newline included).
    Reply(Vec<u8>),
    /// Nothing to write (flood lines, link hellos).
    Nothing,
    /// A WHATSAT: ask the places backend, then queue what [`Service::complete`] makes of its answer.
    Fetch(Fetch<'p, P>),
}

/// A WHATSAT waiting on the places backend: the backend to ask (a server has one, or there is no
/// fetch) and the lookup to complete with its answer.
#[derive(Debug)]
pub struct Fetch<'p, P> {
    /// The server's places backend, in whatever form the style reaches it.
    pub places: &'p P,
    pub lookup: PlacesLookup,
}

/// Handles one complete line received at `received` on a connection whose protocol state is
/// `link`: [`Service::handle`], then the update it made (if any) queued on the neighbours' links,
/// then its reply. A WHATSAT becomes a [`Fetch`] from `places`, or, on a server without a places
/// backend (`None`), its reply at once, the answer to [`UpstreamError::NotConfigured`]. `now` is
/// read only to flood (pass `Instant::now`, or a time the caller already has).
pub fn handle_line<'p, S: Service, W: LinkWaker, P>(
    service: &S,
    links: &FloodLinks<W>,
    places: Option<&'p P>,
    line: &[u8],
    link: &mut Link,
    received: Timestamp,
    now: impl FnOnce() -> Instant,
) -> Handled<'p, P> {
    let outcome = service.handle(line, link, received);
    if let Some(flood) = &outcome.flood {
        links.send(flood, now());
    }
    match (outcome.reply, places) {
        (Reply::Bytes(bytes), _) => Handled::Reply(bytes),
        (Reply::Nothing, _) => Handled::Nothing,
        (Reply::Places(lookup), Some(places)) => Handled::Fetch(Fetch { places, lookup }),
        (Reply::Places(lookup), None) => Handled::Reply(service.complete(lookup, Err(UpstreamError::NotConfigured))),
    }
}

/// What every connection of one server shares: the service, the flood links, the places backend
/// (`None` in echo mode, or without one) and the limits. `W` is the style's link waker, `C` its
/// socket type.
#[derive(Debug)]
pub struct Shared<S, W, C> {
    pub service: Arc<S>,
    pub links: Arc<FloodLinks<W>>,
    pub places: Option<PlacesBackend<C>>,
    pub limits: Limits,
}

impl<S: Service, W, C> Shared<S, W, C> {
    pub fn new(service: Arc<S>, links: Arc<FloodLinks<W>>, options: &ServeOptions) -> Self {
        let places = options.places.map(|addr| PlacesBackend::new(addr, &options.limits, service.stats()));
        Self { service, links, places, limits: options.limits.clone() }
    }

    /// The accept loop's policy for this server.
    pub fn acceptor(&self) -> Acceptor {
        Acceptor::new(&self.limits, self.service.stats(), self.service.log())
    }

    /// A connection ended with `end`: a write failure or a policy close ([`crate::policy::Close`])
    /// is logged; a read failure just ends a connection, so the caller passes it as `Ok`.
    pub fn ended(&self, end: io::Result<()>) {
        if let Err(e) = end {
            self.service.log().error("write", e);
        }
    }
}

/// One client connection's protocol state and replies. See the module docs for the calling order.
#[derive(Debug)]
pub struct Session {
    framer: LineFramer,
    link: Link,
    out: OutputBuffer,
    /// When the bytes being handled arrived: the time every line of one read is handled at.
    received: Timestamp,
    closing: bool,
    /// The connection's place under the cap, given back when the session is dropped.
    _admitted: Admitted,
}

impl Session {
    /// A session for a connection `admitted` under the cap ([`crate::policy::Acceptor`]).
    pub fn new(limits: &Limits, admitted: Admitted) -> Self {
        Self {
            framer: LineFramer::new(limits.max_line),
            link: Link::default(),
            out: OutputBuffer::new(limits),
            received: Timestamp::from_nanos(0),
            closing: false,
            _admitted: admitted,
        }
    }

    /// Whether to read more now: not after an oversized line, and not while the client leaves
    /// too many replies unread.
    pub fn may_read(&self) -> bool {
        !self.closing && self.out.may_read()
    }

    /// Where the next read goes.
    pub fn read_buf(&mut self) -> &mut [u8] {
        self.framer.read_buf()
    }

    /// `n` bytes were read into [`Self::read_buf`]; `at` is when (the wall clock the lines they
    /// complete are handled at).
    pub fn filled(&mut self, n: usize, at: Timestamp) {
        self.framer.filled(n);
        self.received = at;
    }

    /// Handles the buffered lines in order ([`handle_line`] with the server's service, links and
    /// places backend), queues their replies and writes them through `write` once
    /// [`crate::policy::Limits::flush_at`] bytes are owed. Returns a WHATSAT's [`Fetch`] for the
    /// caller to answer with [`Self::complete`] (what was answered before it is written first), or
    /// `None` when every complete line is handled. A write error, or a [`crate::policy::Close`]
    /// (wrapped in an `Other` error), ends the connection.
    pub fn poll<'p, S: Service, W: LinkWaker, C>(
        &mut self,
        shared: &'p Shared<S, W, C>,
        now: Instant,
        mut write: impl FnMut(&[u8]) -> io::Result<usize>,
    ) -> io::Result<Option<Fetch<'p, PlacesBackend<C>>>> {
        let (service, links, places) = (&*shared.service, &*shared.links, shared.places.as_ref());
        while !self.closing {
            let Some(frame) = self.framer.next_frame() else { break };
            let line = match frame {
                Frame::Line(line) => line,
                Frame::Oversized(quote) => {
                    self.out.push(&service.oversized(quote));
                    self.closing = true;
                    break;
                }
            };
            match handle_line(service, links, places, line, &mut self.link, self.received, || now) {
                Handled::Reply(bytes) => self.out.push(&bytes),
                Handled::Nothing => {}
                Handled::Fetch(fetch) => {
                    self.out.write_with(now, &mut write)?;
                    return Ok(Some(fetch));
                }
            }
            if self.out.should_flush() {
                self.out.write_with(now, &mut write)?;
            }
        }
        Ok(None)
    }

    /// The places backend's answer (or failure) to the [`Fetch`] [`Self::poll`] returned.
    pub fn complete<S: Service>(
        &mut self,
        service: &S,
        lookup: PlacesLookup,
        result: Result<HttpResponse, UpstreamError>,
    ) {
        self.out.push(&service.complete(lookup, result));
    }

    /// An oversized line was answered: read no more, write what is owed, then close.
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// [`Self::read_buf`] and the replies owed at once, for a style that races a read against a
    /// write of what is owed (the caller reports the outcome through [`Self::output`] afterwards).
    pub fn read_buf_and_owed(&mut self) -> (&mut [u8], &[u8]) {
        (self.framer.read_buf(), self.out.poll_transmit())
    }

    /// The replies owed, for writing them and waiting on the socket.
    pub fn output(&mut self) -> &mut OutputBuffer {
        &mut self.out
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::Duration;

    use super::*;
    use crate::log::EventLog;
    use crate::policy::Admission;
    use crate::service::{Herd, HerdConfig};
    use crate::stats::ServerStats;

    #[derive(Debug)]
    struct NoWake;
    impl LinkWaker for NoWake {
        fn wake(&self) {}
    }

    /// What the connections of server Hamilton share: its service, its links (to `neighbours`), and
    /// a places backend at `places` (never connected to here).
    type Server = Shared<Herd, NoWake, ()>;

    fn server(neighbours: &[&str], places: Option<SocketAddr>) -> Server {
        let herd = Herd::new(HerdConfig::new("Hamilton", neighbours, None), EventLog::discard());
        let unused = SocketAddr::from(([127, 0, 0, 1], 1));
        let options = ServeOptions {
            name: "Hamilton".into(),
            neighbours: neighbours.iter().map(|n| ((*n).to_owned(), unused)).collect(),
            places,
            ..ServeOptions::default()
        };
        let links = FloodLinks::new(&options, Instant::now(), herd.stats(), herd.log(), |_| NoWake);
        Shared::new(Arc::new(herd), Arc::new(links), &options)
    }

    const PLACES: Option<SocketAddr> = Some(SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 2));

    fn session(limits: &Limits) -> Session {
        let admission = Admission::new(limits, &ServerStats::default(), &EventLog::discard());
        Session::new(limits, admission.admit().expect("under the cap"))
    }

    const RECEIVED: Timestamp = Timestamp::from_nanos(1_479_413_884_500_000_000);

    fn feed(session: &mut Session, bytes: &[u8]) {
        session.read_buf()[..bytes.len()].copy_from_slice(bytes);
        session.filled(bytes.len(), RECEIVED);
    }

    /// A socket that takes at most `room` bytes, then would block.
    fn socket(taken: &mut Vec<u8>, room: usize) -> impl FnMut(&[u8]) -> io::Result<usize> + '_ {
        move |bytes| {
            let n = bytes.len().min(room.saturating_sub(taken.len()));
            if n == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            taken.extend_from_slice(&bytes[..n]);
            Ok(n)
        }
    }

    const IAMAT: &[u8] = b"IAMAT kiwi +34.068930-118.445127 1479413884.392014450\n";
    const WHATSAT: &[u8] = b"WHATSAT kiwi 10 5\n";

    /// [`handle_line`] on server `s`, for a line without its newline.
    fn handle<'p>(s: &'p Server, line: &[u8], link: &mut Link) -> Handled<'p, PlacesBackend<()>> {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        handle_line(&*s.service, &s.links, s.places.as_ref(), line, link, RECEIVED, Instant::now)
    }

    fn queued_for(s: &Server, neighbour: usize) -> usize {
        s.links.get(neighbour).map_or(0, |l| l.lock().queued_bytes())
    }

    #[test]
    fn a_handled_line_floods_its_update_once_and_returns_its_reply() {
        let s = server(&["Alford"], PLACES);
        let hello = b"PEER Hamilton\n".len();
        let mut link = Link::default();
        let Handled::Reply(reply) = handle(&s, IAMAT, &mut link) else { panic!("an IAMAT is answered") };
        assert!(reply.starts_with(b"AT Hamilton "), "{reply:?}");
        // The update queued on the (down) link behind its hello, once: the flood is the AT line.
        assert_eq!(queued_for(&s, 0), hello + reply.len(), "flooded exactly once");
        // The same update again changes nothing, so nothing more is flooded.
        assert!(matches!(handle(&s, IAMAT, &mut link), Handled::Reply(_)));
        assert_eq!(queued_for(&s, 0), hello + reply.len(), "an update the store did not take is not flooded");
    }

    #[test]
    fn a_line_without_a_reply_is_nothing_and_its_clock_is_read_only_to_flood() {
        let s = server(&["Alford"], PLACES);
        let mut link = Link::default();
        // A neighbour's hello (insecure herd): no reply, nothing to flood, no clock read.
        let hello = handle_line(&*s.service, &s.links, s.places.as_ref(), b"PEER Alford", &mut link, RECEIVED, || {
            panic!("no flood, no clock")
        });
        assert!(matches!(hello, Handled::Nothing), "{hello:?}");
        assert_eq!(queued_for(&s, 0), 0);
    }

    #[test]
    fn a_whatsat_is_a_fetch_from_the_backend_there_is() {
        let s = server(&[], PLACES);
        let mut link = Link::default();
        handle(&s, IAMAT, &mut link);
        let Handled::Fetch(Fetch { places, lookup }) = handle(&s, WHATSAT, &mut link) else { panic!("a fetch") };
        assert_eq!(places.addr(), PLACES.expect("a backend"), "the server's own backend");
        assert_eq!((lookup.query.radius_m, lookup.query.bound), (10_000, 5));
        assert_eq!(s.service.stats().upstream_errors.load(Relaxed), 0, "nothing answered yet");
    }

    #[test]
    fn without_a_backend_a_whatsat_is_answered_at_once_and_counted_once() {
        let s = server(&[], None);
        let mut link = Link::default();
        handle(&s, IAMAT, &mut link);
        let Handled::Reply(reply) = handle(&s, WHATSAT, &mut link) else { panic!("answered at once") };
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("AT Hamilton ") && reply.ends_with("\n\n"), "{reply}");
        assert!(reply.contains("UNKNOWN_ERROR") && reply.contains("no places backend configured"), "{reply}");
        let stats = s.service.stats();
        assert_eq!((stats.upstream_errors.load(Relaxed), stats.upstream_ok.load(Relaxed)), (1, 0));
    }

    #[test]
    fn a_whatsat_waits_for_its_answer_and_what_came_before_is_written_first() {
        let s = server(&[], PLACES);
        let mut session = session(&Limits::default());
        feed(&mut session, &[IAMAT, WHATSAT, IAMAT].concat());
        let mut taken = Vec::new();
        let fetch = session.poll(&s, Instant::now(), socket(&mut taken, usize::MAX)).expect("written");
        let fetch = fetch.expect("the WHATSAT stops the handling");
        assert!(taken.starts_with(b"AT Hamilton "), "the IAMAT's reply went out before the fetch: {taken:?}");
        assert_eq!(taken.iter().filter(|&&b| b == b'\n').count(), 1);
        session.complete(&*s.service, fetch.lookup, Err(UpstreamError::Timeout));
        // The line after the WHATSAT is handled only now, and its reply queued behind the answer.
        assert!(session.poll(&s, Instant::now(), socket(&mut Vec::new(), 0)).expect("handled").is_none());
        let owed = String::from_utf8_lossy(session.output().poll_transmit()).into_owned();
        let whatsat_answer = owed.find("UNKNOWN_ERROR").expect("the failed lookup is answered");
        assert!(owed[whatsat_answer..].contains("\nAT Hamilton "), "replies in request order: {owed}");
    }

    #[test]
    fn without_a_backend_a_whatsat_does_not_stop_the_handling() {
        let s = server(&[], None);
        let mut session = session(&Limits::default());
        feed(&mut session, &[IAMAT, WHATSAT, IAMAT].concat());
        assert!(session.poll(&s, Instant::now(), socket(&mut Vec::new(), 0)).expect("handled").is_none());
        let owed = String::from_utf8_lossy(session.output().poll_transmit()).into_owned();
        let answer = owed.find("no places backend configured").expect("answered in place");
        assert!(owed.starts_with("AT Hamilton ") && owed[answer..].contains("\nAT Hamilton "), "in order: {owed}");
        assert_eq!(s.service.stats().upstream_errors.load(Relaxed), 1);
    }

    #[test]
    fn replies_are_written_at_flush_at_and_a_full_socket_is_reported() {
        let s = server(&[], PLACES);
        let limits = Limits { flush_at: 100, write_stall: Duration::from_secs(1), ..Limits::default() };
        let mut session = session(&limits);
        feed(&mut session, &IAMAT.repeat(4));
        let mut taken = Vec::new();
        let t0 = Instant::now();
        assert!(session.poll(&s, t0, socket(&mut taken, 150)).expect("handled").is_none());
        assert_eq!(taken.len(), 150, "written once 100 bytes were owed, until the socket was full");
        let out = session.output();
        assert!(out.owed() > 0);
        assert_eq!(out.poll_timeout(), Some(t0 + Duration::from_secs(1)), "the full socket started the stall clock");
    }

    #[test]
    fn an_oversized_line_is_answered_and_ends_the_reading() {
        let s = server(&[], PLACES);
        let limits = Limits { max_line: 16, ..Limits::default() };
        let mut session = session(&limits);
        feed(&mut session, b"IAMAT this line is far too long\nIAMAT x\n");
        assert!(session.poll(&s, Instant::now(), socket(&mut Vec::new(), 0)).expect("handled").is_none());
        assert!(session.is_closing() && !session.may_read());
        let owed = session.output().poll_transmit().to_vec();
        assert!(owed.starts_with(b"? IAMAT"), "{owed:?}");
        assert_eq!(owed.iter().filter(|&&b| b == b'\n').count(), 1, "nothing after the oversized line is handled");
    }

    #[test]
    fn a_client_owed_too_much_while_its_socket_is_full_is_closed() {
        let s = server(&[], PLACES);
        let limits = Limits { flush_at: 10, max_output: 100, ..Limits::default() };
        let mut session = session(&limits);
        feed(&mut session, &IAMAT.repeat(4));
        let error = session.poll(&s, Instant::now(), socket(&mut Vec::new(), 0)).expect_err("closed");
        assert_eq!(error.kind(), io::ErrorKind::Other, "{error}");
    }
}
