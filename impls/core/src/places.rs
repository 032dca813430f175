//! The places upstream: an HTTP/1.1 request encoder, a response decoder, and the JSON trimmer.
//!
//! ```text
//! GET /maps/api/place/nearbysearch/json?location=34.068930,-118.445127&radius=10000&key=herdbench HTTP/1.1
//! Host: 127.0.0.1:8000
//! ```
//!
//! Connections are kept alive. The decoder is sans-IO: hand it everything received so far; it says
//! `Partial` until a whole response (Content-Length or chunked) is there.

use crate::location::Location;

/// The path of the Nearby Search endpoint.
pub const NEARBY_PATH: &str = "/maps/api/place/nearbysearch/json";
/// Upper bound on a response, headers and body, to keep a broken upstream from eating memory.
pub const MAX_RESPONSE: usize = 4 * 1024 * 1024;

/// What to ask the places backend for one WHATSAT.
#[derive(Clone, Debug, PartialEq)]
pub struct PlacesQuery {
    pub location: Location,
    pub radius_m: u32,
    pub bound: u8,
}

impl PlacesQuery {
    /// The complete request, ready to write to a kept-alive connection to `host`.
    pub fn encode_request(&self, host: &str) -> Vec<u8> {
        format!(
            "GET {NEARBY_PATH}?location={}&radius={}&key=herdbench HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\n\r\n",
            self.location.query_param(),
            self.radius_m
        )
        .into_bytes()
    }
}

/// A complete upstream response.
#[derive(Debug, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
    /// Bytes of the input this response used; anything after belongs to the next response.
    pub consumed: usize,
    /// False when the server said `Connection: close` (or spoke HTTP/1.0).
    pub keep_alive: bool,
}

/// Decoder progress.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Complete(HttpResponse),
    Partial,
}

/// Why an upstream exchange failed; each maps to a distinct error reply and counter.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum UpstreamError {
    #[error("malformed HTTP response: {0}")]
    Http(String),
    #[error("response larger than {MAX_RESPONSE} bytes")]
    TooLarge,
    #[error("upstream status {0}")]
    Status(u16),
    #[error("malformed places JSON: {0}")]
    Json(String),
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    #[error("upstream timed out")]
    Timeout,
    /// A WHATSAT reached a server started without `--places` (every style answers it the same way).
    #[error("no places backend configured")]
    NotConfigured,
}

/// Decodes one response from the start of `input`.
pub fn decode_response(input: &[u8]) -> Result<Decoded, UpstreamError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(input) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return too_large_or_partial(input.len()),
        Err(e) => return Err(UpstreamError::Http(e.to_string())),
    };
    let status = resp.code.unwrap_or(0);
    let mut keep_alive = resp.version == Some(1);
    let mut content_length = None;
    let mut chunked = false;
    for h in resp.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            content_length =
                Some(value.parse::<usize>().map_err(|_| UpstreamError::Http("bad Content-Length".into()))?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            keep_alive = !value.eq_ignore_ascii_case("close");
        }
    }
    let rest = &input[head_len..];
    let (body, body_len) = if chunked {
        match decode_chunked(rest)? {
            Some(done) => done,
            None => return too_large_or_partial(input.len()),
        }
    } else {
        let len = content_length.ok_or_else(|| UpstreamError::Http("no Content-Length and not chunked".into()))?;
        // Compared without adding: a Content-Length near usize::MAX must not wrap round to "small".
        if len > MAX_RESPONSE.saturating_sub(head_len) {
            return Err(UpstreamError::TooLarge);
        }
        if rest.len() < len {
            return Ok(Decoded::Partial);
        }
        (rest[..len].to_vec(), len)
    };
    Ok(Decoded::Complete(HttpResponse { status, body, consumed: head_len + body_len, keep_alive }))
}

fn too_large_or_partial(len: usize) -> Result<Decoded, UpstreamError> {
    if len > MAX_RESPONSE { Err(UpstreamError::TooLarge) } else { Ok(Decoded::Partial) }
}

/// Chunked body: `Some((body, bytes used))` when the terminating chunk and trailers are in.
fn decode_chunked(mut input: &[u8]) -> Result<Option<(Vec<u8>, usize)>, UpstreamError> {
    let total = input.len();
    let mut body = Vec::new();
    loop {
        let Some(eol) = memchr::memmem::find(input, b"\r\n") else { return Ok(None) };
        let size_text = std::str::from_utf8(&input[..eol]).map_err(|_| UpstreamError::Http("bad chunk size".into()))?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| UpstreamError::Http("bad chunk size".into()))?;
        input = &input[eol + 2..];
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let Some(eol) = memchr::memmem::find(input, b"\r\n") else { return Ok(None) };
                input = &input[eol + 2..];
                if eol == 0 {
                    return Ok(Some((body, total - input.len())));
                }
            }
        }
        if size > MAX_RESPONSE - body.len() {
            return Err(UpstreamError::TooLarge);
        }
        if input.len() < size + 2 {
            return Ok(None);
        }
        if &input[size..size + 2] != b"\r\n" {
            return Err(UpstreamError::Http("chunk not followed by CRLF".into()));
        }
        body.extend_from_slice(&input[..size]);
        input = &input[size + 2..];
    }
}

/// The places JSON for a reply: `results` cut to `bound`, pretty-printed, runs of newlines collapsed
/// to one, no trailing newline.
pub fn trim_places(body: &[u8], bound: u8) -> Result<String, UpstreamError> {
    let mut json: serde_json::Value = serde_json::from_slice(body).map_err(|e| UpstreamError::Json(e.to_string()))?;
    let obj = json.as_object_mut().ok_or_else(|| UpstreamError::Json("not an object".into()))?;
    match obj.get_mut("results") {
        Some(serde_json::Value::Array(results)) => results.truncate(usize::from(bound)),
        Some(_) => return Err(UpstreamError::Json("results is not an array".into())),
        None => {}
    }
    let text = serde_json::to_string_pretty(&json).map_err(|e| UpstreamError::Json(e.to_string()))?;
    Ok(collapse_newlines(&text))
}

/// The JSON sent when the upstream failed: the Nearby Search error shape, so clients parse one format.
pub fn error_places(error: &UpstreamError) -> String {
    let json = serde_json::json!({
        "html_attributions": [],
        "results": [],
        "status": "UNKNOWN_ERROR",
        "error_message": error.to_string(),
    });
    serde_json::to_string_pretty(&json).map(|t| collapse_newlines(&t)).unwrap_or_default()
}

fn collapse_newlines(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '\n' && out.ends_with('\n') {
            continue;
        }
        out.push(c);
    }
    while out.ends_with('\n') {
        out.pop();
    }
    out
}

/// The complete WHATSAT reply: the stored AT line, the JSON, then two newlines.
pub fn whatsat_reply(at_line: &str, json: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(at_line.len() + json.len() + 3);
    out.extend_from_slice(at_line.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(json.as_bytes());
    out.extend_from_slice(b"\n\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query() -> PlacesQuery {
        PlacesQuery { location: Location::parse("+34.068930-118.445127").expect("valid"), radius_m: 10_000, bound: 2 }
    }

    #[test]
    fn request_is_keep_alive_get_of_the_nearby_path() {
        let req = String::from_utf8(query().encode_request("127.0.0.1:8000")).expect("utf8");
        assert_eq!(
            req,
            "GET /maps/api/place/nearbysearch/json?location=34.068930,-118.445127&radius=10000&key=herdbench HTTP/1.1\r\n\
             Host: 127.0.0.1:8000\r\nConnection: keep-alive\r\n\r\n"
        );
    }

    #[test]
    fn content_length_response_split_anywhere() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1";
        for cut in 0..wire.len() - 8 {
            let d = decode_response(&wire[..cut]).expect("no error");
            if cut < wire.len() - 8 {
                assert_eq!(d, Decoded::Partial, "cut at {cut}");
            }
        }
        let Decoded::Complete(r) = decode_response(wire).expect("ok") else { panic!("partial") };
        assert_eq!((r.status, r.body.as_slice(), r.consumed, r.keep_alive), (200, &b"hello"[..], wire.len() - 8, true));
    }

    #[test]
    fn chunked_response_with_trailer() {
        let wire =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2;ext=1\r\nlo\r\n0\r\nX-T: 1\r\n\r\n";
        for cut in 0..wire.len() {
            assert_eq!(decode_response(&wire[..cut]).expect("no error"), Decoded::Partial, "cut at {cut}");
        }
        let Decoded::Complete(r) = decode_response(wire).expect("ok") else { panic!("partial") };
        assert_eq!((r.body.as_slice(), r.consumed), (&b"hello"[..], wire.len()));
    }

    #[test]
    fn connection_close_and_garbage() {
        let Decoded::Complete(r) =
            decode_response(b"HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").expect("ok")
        else {
            panic!("partial")
        };
        assert_eq!((r.status, r.keep_alive), (503, false));
        assert!(decode_response(b"NOT HTTP\r\n\r\n").is_err());
        assert!(decode_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err());
    }

    #[test]
    fn trimming_cuts_results_and_collapses_newlines() {
        let body = br#"{"html_attributions":[],"results":[{"name":"a\nb"},{"name":"b"},{"name":"c"}],"status":"OK"}"#;
        let text = trim_places(body, 2).expect("valid");
        let back: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(back["results"].as_array().map(Vec::len), Some(2));
        assert_eq!(back["status"], "OK");
        assert!(!text.contains("\n\n") && !text.ends_with('\n'));
        // Field order is the upstream's, not alphabetical.
        assert!(text.find("html_attributions") < text.find("status"));
        assert!(trim_places(b"{not json", 2).is_err());
    }

    #[test]
    fn error_json_has_the_api_shape() {
        let text = error_places(&UpstreamError::Status(503));
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["status"], "UNKNOWN_ERROR");
        assert_eq!(v["results"].as_array().map(Vec::len), Some(0));
    }

    /// Found by fuzzing (fuzz/, target http_response): a Content-Length or chunk size near
    /// `usize::MAX` overflowed the size check, which then wrapped round to "small" in release builds
    /// and left the exchange waiting for bytes that would never come.
    #[test]
    fn huge_declared_sizes_are_too_large_not_an_overflow() {
        let len = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{{}}", usize::MAX);
        assert_eq!(decode_response(len.as_bytes()), Err(UpstreamError::TooLarge));
        let chunk = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{{}}\r\n{:x}\r\n", usize::MAX);
        assert_eq!(decode_response(chunk.as_bytes()), Err(UpstreamError::TooLarge));
    }
}
