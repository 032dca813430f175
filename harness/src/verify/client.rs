//! The test client (blocking std sockets, every read bounded by [`READ_TIMEOUT`]) and the protocol
//! as a client sees it: lines to send, AT lines and WHATSAT replies to take apart.
//!
//! ```text
//! IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450
//! AT Alford +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450
//! WHATSAT kiwi.cs.ucla.edu 10 5
//! AT Alford +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450
//! {
//!   …places JSON, no blank line…
//! }
//! <empty line>
//! ```

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Longest wait for one reply.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// One connection to a server, with the bytes read but not yet taken as a reply.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    addr: SocketAddr,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Self {
        Self::try_connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"))
    }

    pub fn try_connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, READ_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(READ_TIMEOUT))?;
        Ok(Self { stream, addr, buf: Vec::new() })
    }

    /// Writes all of `bytes` in one `write_all`.
    pub fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes).unwrap_or_else(|e| panic!("writing to {}: {e}", self.addr));
    }

    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// A second handle on the same socket, for writing from another thread while this one reads.
    pub fn writer(&self) -> TcpStream {
        self.stream.try_clone().unwrap_or_else(|e| panic!("cloning the socket to {}: {e}", self.addr))
    }

    /// Sends `line` and its newline, returns the one-line reply (newline included).
    pub fn request(&mut self, line: &str) -> String {
        self.send(format!("{line}\n").as_bytes());
        self.read_line()
    }

    /// The next reply line, newline included.
    pub fn read_line(&mut self) -> String {
        String::from_utf8_lossy(&self.read_line_bytes()).into_owned()
    }

    pub fn read_line_bytes(&mut self) -> Vec<u8> {
        self.take(line_end).unwrap_or_else(|e| panic!("reading a line from {}: {e}", self.addr))
    }

    pub fn try_read_line(&mut self) -> io::Result<String> {
        self.take(line_end).map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// Ends our side of the stream (the server sees end of file), keeping the reading side open.
    pub fn shutdown_write(&mut self) {
        self.stream.shutdown(Shutdown::Write).unwrap_or_else(|e| panic!("shutting down writes to {}: {e}", self.addr));
    }

    /// The next WHATSAT reply: `AT …\n<json>\n\n`, or a single `? …\n` line.
    pub fn read_whatsat(&mut self) -> String {
        self.try_read_whatsat().unwrap_or_else(|e| panic!("reading a WHATSAT reply from {}: {e}", self.addr))
    }

    pub fn try_read_whatsat(&mut self) -> io::Result<String> {
        self.take(whatsat_end).map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// Sends `WHATSAT <client> <radius> <bound>` and reads its reply.
    pub fn whatsat(&mut self, client: &str, radius: &str, bound: &str) -> String {
        self.send(format!("WHATSAT {client} {radius} {bound}\n").as_bytes());
        self.read_whatsat()
    }

    pub fn try_whatsat(&mut self, client: &str, radius: &str, bound: &str) -> io::Result<String> {
        self.try_send(format!("WHATSAT {client} {radius} {bound}\n").as_bytes())?;
        self.try_read_whatsat()
    }

    /// Sends an IAMAT and checks the reply is an AT line for it; returns that line (with newline).
    pub fn iamat(&mut self, client: &str, location: &str, time: &str) -> String {
        let reply = self.request(&format!("IAMAT {client} {location} {time}"));
        let at = AtLine::parse(&reply).unwrap_or_else(|e| panic!("IAMAT {client} to {}: {e}", self.addr));
        assert_eq!(
            (at.client.as_str(), at.location.as_str(), at.time.as_str()),
            (client, location, time),
            "the AT reply must echo the IAMAT's fields: {reply:?}"
        );
        reply
    }

    /// Reads until the server closes the connection (end of stream or reset); returns what came first.
    pub fn read_to_close(&mut self) -> io::Result<Vec<u8>> {
        let deadline = Instant::now() + READ_TIMEOUT;
        loop {
            match self.fill(deadline) {
                Ok(0) => return Ok(std::mem::take(&mut self.buf)),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(std::mem::take(&mut self.buf)),
                Err(e) => return Err(e),
            }
        }
    }

    /// Takes the first reply from the buffer once `end` finds where it ends, reading as needed.
    fn take(&mut self, end: fn(&[u8]) -> Option<usize>) -> io::Result<Vec<u8>> {
        let deadline = Instant::now() + READ_TIMEOUT;
        loop {
            if let Some(n) = end(&self.buf) {
                return Ok(self.buf.drain(..n).collect());
            }
            if self.fill(deadline)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("connection closed; unanswered bytes so far: {:?}", String::from_utf8_lossy(&self.buf)),
                ));
            }
        }
    }

    /// One read into the buffer, waiting at most until `deadline`.
    fn fill(&mut self, deadline: Instant) -> io::Result<usize> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no complete reply within {READ_TIMEOUT:?}; got so far: {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            ));
        }
        self.stream.set_read_timeout(Some(left))?;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "no complete reply within {READ_TIMEOUT:?}; got so far: {:?}",
                            String::from_utf8_lossy(&self.buf)
                        ),
                    ));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn line_end(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n').map(|i| i + 1)
}

/// A WHATSAT reply that starts with `AT ` ends at the first empty line; anything else is one line.
fn whatsat_end(buf: &[u8]) -> Option<usize> {
    let first = line_end(buf)?;
    if !buf.starts_with(b"AT ") {
        return Some(first);
    }
    buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2)
}

/// The current POSIX time, in nanoseconds.
pub fn now_nanos() -> i128 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).expect("the clock is after 1970");
    i128::try_from(since.as_nanos()).expect("nanoseconds since 1970 fit in i128")
}

/// A POSIX time as the protocol writes it: `1479413884.392014450`.
pub fn time_text(nanos: i128) -> String {
    format!("{}.{:09}", nanos.div_euclid(1_000_000_000), nanos.rem_euclid(1_000_000_000))
}

/// Now, as the protocol writes it.
pub fn now_text() -> String {
    time_text(now_nanos())
}

/// An AT line taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtLine {
    pub server: String,
    pub delta: String,
    pub client: String,
    pub location: String,
    pub time: String,
}

impl AtLine {
    /// Parses `AT <server> <delta> <client> <location> <time>\n`, single-spaced, newline required.
    pub fn parse(reply: &str) -> Result<Self, String> {
        let line = reply.strip_suffix('\n').ok_or_else(|| format!("no newline at the end of {reply:?}"))?;
        let fields: Vec<&str> = line.split(' ').collect();
        match fields.as_slice() {
            ["AT", server, delta, client, location, time] => Ok(Self {
                server: (*server).to_owned(),
                delta: (*delta).to_owned(),
                client: (*client).to_owned(),
                location: (*location).to_owned(),
                time: (*time).to_owned(),
            }),
            _ => Err(format!("not an AT line with six single-spaced fields: {reply:?}")),
        }
    }

    /// The delta in nanoseconds, checking its shape: a sign, digits, a point and exactly nine digits.
    pub fn delta_nanos(&self) -> Result<i128, String> {
        let bad = || format!("delta {:?} is not <+|->SECONDS.NNNNNNNNN", self.delta);
        let (sign, rest) = match self.delta.as_bytes().first() {
            Some(b'+') => (1, &self.delta[1..]),
            Some(b'-') => (-1, &self.delta[1..]),
            _ => return Err(bad()),
        };
        let (whole, frac) = rest.split_once('.').ok_or_else(bad)?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || !digits(frac) || frac.len() != 9 {
            return Err(bad());
        }
        let whole: i128 = whole.parse().map_err(|_| bad())?;
        let frac: i128 = frac.parse().map_err(|_| bad())?;
        Ok(sign * (whole * 1_000_000_000 + frac))
    }
}

/// A WHATSAT reply with an AT line, taken apart and checked for its framing.
#[derive(Debug)]
pub struct WhatsatReply {
    /// The first line, newline included.
    pub at_line: String,
    pub json: serde_json::Value,
}

impl WhatsatReply {
    /// Checks `AT …\n{json}\n\n`: the JSON is one object with no empty line inside and nothing after.
    pub fn parse(reply: &str) -> Result<Self, String> {
        let (first, rest) = reply.split_once('\n').ok_or_else(|| format!("no AT line in {reply:?}"))?;
        let at_line = format!("{first}\n");
        AtLine::parse(&at_line)?;
        let json_text =
            rest.strip_suffix("\n\n").ok_or_else(|| format!("reply does not end with \\n\\n: {reply:?}"))?;
        if json_text.contains("\n\n") || json_text.ends_with('\n') {
            return Err(format!("the places JSON has an empty line inside or after it: {reply:?}"));
        }
        if !json_text.starts_with('{') || !json_text.ends_with('}') {
            return Err(format!("the places JSON is not one object right after the AT line: {json_text:?}"));
        }
        let json =
            serde_json::from_str(json_text).map_err(|e| format!("places JSON does not parse ({e}): {json_text:?}"))?;
        Ok(Self { at_line, json })
    }

    pub fn status(&self) -> &str {
        self.json["status"].as_str().unwrap_or("<no status string>")
    }

    pub fn results(&self) -> Option<usize> {
        self.json["results"].as_array().map(Vec::len)
    }
}
