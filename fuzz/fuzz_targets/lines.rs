//! The line framer, the command parser and the herd behind them, on any byte stream.
//!
//! The first input byte chooses how the stream is cut into reads; the rest is the stream. Checked:
//! the lines are the same however the stream is cut; no line holds a newline or exceeds the limit;
//! an oversized line is quoted in at most 64 bytes and ends the stream; every line gets exactly one
//! well-formed outcome from a keyed herd; and no `AT` line from this (unauthenticated) connection
//! is ever stored or flooded, whatever came before it.
#![no_main]

use std::sync::Arc;

use herd_core::{EventLog, Frame, Herd, HerdConfig, HerdKey, LineFramer, Link, Reply, Request, Service, Timestamp};
use libfuzzer_sys::fuzz_target;

const MAX_LINE: usize = 512;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else { return };
    let step = 1 + usize::from(cut % 97);
    let key = Arc::new(HerdKey::from_hex("00112233445566778899aabbccddeeff").expect("valid key"));
    let config = HerdConfig::new("Alford", &["Hamilton", "Welsh"], Some(key));
    let herd = Herd::new(config, EventLog::discard());
    let now = Timestamp::parse("1479413884.655887836").expect("valid time");
    let mut framer = LineFramer::new(MAX_LINE);
    let mut link = Link::default();
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let mut oversized = false;
    'stream: for chunk in stream.chunks(step) {
        framer.push(chunk);
        while let Some(frame) = framer.next_frame() {
            match frame {
                Frame::Line(line) => {
                    assert!(!line.contains(&b'\n') && line.len() <= MAX_LINE, "framed {line:?}");
                    lines.push(line.to_vec());
                }
                Frame::Oversized(quote) => {
                    assert!(quote.len() <= 64);
                    oversized = true;
                    break 'stream;
                }
            }
        }
    }
    for line in &lines {
        let parsed = Request::parse(line);
        let outcome = herd.handle(line, &mut link, now);
        if let Request::At(_) = parsed {
            assert!(outcome.flood.is_none(), "an AT from a client was flooded: {line:?}");
            assert!(link.peer().is_none(), "a client became a link");
        }
        match (&parsed, &outcome.reply) {
            (Request::Invalid(_), Reply::Bytes(reply)) => {
                // Quoted as received, but for the `\r` of a CRLF line ending.
                let quoted = line.strip_suffix(b"\r").unwrap_or(line);
                assert_eq!(reply, &[b"? ", quoted, b"\n"].concat());
            }
            (Request::Invalid(_), other) => panic!("invalid line answered {other:?}"),
            (_, Reply::Bytes(reply)) => assert!(reply.ends_with(b"\n"), "unframed reply {reply:?}"),
            _ => {}
        }
    }
    // However the stream was cut, the lines are the newline-separated pieces before the last newline.
    if !oversized {
        let whole: Vec<&[u8]> = match stream.iter().rposition(|&b| b == b'\n') {
            Some(end) => stream[..end].split(|&b| b == b'\n').collect(),
            None => Vec::new(),
        };
        assert_eq!(lines, whole, "framing depends on how the stream was cut");
    }
});
