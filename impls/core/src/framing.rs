//! Line framing over a bounded buffer.
//!
//! The caller reads straight into [`LineFramer::read_buf`], reports how many bytes arrived with
//! [`LineFramer::filled`], then drains every complete line with [`LineFramer::next_frame`] before
//! reading again. An incomplete line is a normal state ([`None`]), not an error.
//!
//! A line longer than the limit is answered and the connection closed: the framer yields
//! [`Frame::Oversized`] with the line's first [`OVERSIZED_QUOTE`] bytes, which the caller quotes in a
//! `? ` reply before closing. We close rather than skip to the next newline because a peer that sends
//! 64 KiB without a newline is either broken or hostile, and resynchronising on its stream would make
//! us guess where its next command starts.

/// Default maximum line length, newline excluded.
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;
/// How many bytes of an oversized line are quoted back.
pub const OVERSIZED_QUOTE: usize = 64;
/// The smallest free space offered to a read.
const MIN_READ: usize = 4096;

/// One framing result.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A complete line, without its `\n`.
    Line(&'a [u8]),
    /// The limit was exceeded: the first bytes of the line. The stream cannot be trusted further.
    Oversized(&'a [u8]),
}

/// Accumulates bytes from a stream and splits them into lines.
#[derive(Debug)]
pub struct LineFramer {
    buf: Vec<u8>,
    /// Start of unconsumed data.
    start: usize,
    /// End of received data.
    end: usize,
    /// Bytes before `end` already searched for a newline, so each byte is scanned once.
    scanned: usize,
    max_line: usize,
    poisoned: bool,
}

impl LineFramer {
    pub fn new(max_line: usize) -> Self {
        Self { buf: Vec::new(), start: 0, end: 0, scanned: 0, max_line, poisoned: false }
    }

    /// Free space to read into (at least a few KiB unless the line limit is nearly reached).
    pub fn read_buf(&mut self) -> &mut [u8] {
        if self.start > 0 && (self.start == self.end || self.buf.len() - self.end < MIN_READ) {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.scanned -= self.start;
            self.start = 0;
        }
        // Room for one whole line and its newline, never more.
        let cap = self.max_line + 1;
        if self.buf.len() - self.end < MIN_READ && self.buf.len() < cap {
            let want = (self.buf.len() * 2).clamp(MIN_READ, cap.max(MIN_READ));
            self.buf.resize(want, 0);
        }
        &mut self.buf[self.end..]
    }

    /// Records that `n` bytes were written into the slice returned by [`Self::read_buf`].
    pub fn filled(&mut self, n: usize) {
        assert!(self.end + n <= self.buf.len(), "filled more than read_buf offered");
        self.end += n;
    }

    /// Copies bytes in (for callers that do not read into [`Self::read_buf`] directly, and tests).
    pub fn push(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let space = self.read_buf();
            let n = space.len().min(bytes.len());
            if n == 0 {
                return; // full: next_frame will report the oversized line
            }
            space[..n].copy_from_slice(&bytes[..n]);
            self.filled(n);
            bytes = &bytes[n..];
        }
    }

    /// The next complete line, an oversized-line report, or `None` when more input is needed.
    pub fn next_frame(&mut self) -> Option<Frame<'_>> {
        if self.poisoned {
            return None;
        }
        match memchr::memchr(b'\n', &self.buf[self.scanned..self.end]) {
            Some(i) => {
                let newline = self.scanned + i;
                let line_start = self.start;
                self.start = newline + 1;
                self.scanned = self.start;
                if newline - line_start > self.max_line {
                    self.poisoned = true;
                    let quote = (newline - line_start).min(OVERSIZED_QUOTE);
                    return Some(Frame::Oversized(&self.buf[line_start..line_start + quote]));
                }
                Some(Frame::Line(&self.buf[line_start..newline]))
            }
            None => {
                self.scanned = self.end;
                if self.end - self.start > self.max_line {
                    self.poisoned = true;
                    let quote = (self.end - self.start).min(OVERSIZED_QUOTE);
                    return Some(Frame::Oversized(&self.buf[self.start..self.start + quote]));
                }
                None
            }
        }
    }

    /// Bytes received but not yet returned as a line.
    pub fn pending(&self) -> usize {
        self.end - self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(framer: &mut LineFramer) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(frame) = framer.next_frame() {
            match frame {
                Frame::Line(l) => out.push(l.to_vec()),
                Frame::Oversized(_) => panic!("unexpected oversized"),
            }
        }
        out
    }

    #[test]
    fn every_complete_line_of_one_read_is_returned() {
        let mut f = LineFramer::new(DEFAULT_MAX_LINE);
        f.push(b"one\ntwo\nthr");
        assert_eq!(lines(&mut f), vec![b"one".to_vec(), b"two".to_vec()]);
        f.push(b"ee\n");
        assert_eq!(lines(&mut f), vec![b"three".to_vec()]);
        assert_eq!(f.pending(), 0);
    }

    #[test]
    fn a_line_split_byte_by_byte_is_reassembled() {
        let mut f = LineFramer::new(16);
        for b in b"IAMAT x\n" {
            assert!(lines(&mut f).is_empty());
            f.push(&[*b]);
        }
        assert_eq!(lines(&mut f), vec![b"IAMAT x".to_vec()]);
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_accepted() {
        let mut f = LineFramer::new(8);
        f.push(b"12345678\n");
        assert_eq!(lines(&mut f), vec![b"12345678".to_vec()]);
    }

    #[test]
    fn an_oversized_line_without_newline_is_reported_once() {
        let mut f = LineFramer::new(100);
        f.push(&[b'x'; 150]);
        assert_eq!(f.next_frame(), Some(Frame::Oversized(&[b'x'; OVERSIZED_QUOTE][..])));
        assert_eq!(f.next_frame(), None);
    }

    #[test]
    fn an_oversized_line_with_newline_is_reported() {
        let mut f = LineFramer::new(4);
        f.push(b"ok\ntoolong\nnext\n");
        assert_eq!(f.next_frame(), Some(Frame::Line(b"ok")));
        assert!(matches!(f.next_frame(), Some(Frame::Oversized(q)) if q.starts_with(b"tool")));
        assert_eq!(f.next_frame(), None);
    }

    #[test]
    fn buffer_never_grows_past_the_line_limit() {
        let mut f = LineFramer::new(DEFAULT_MAX_LINE);
        for _ in 0..1000 {
            f.push(&[b'a'; 1000]);
            f.push(b"\n");
            assert_eq!(lines(&mut f).len(), 1);
        }
        assert!(f.buf.len() <= DEFAULT_MAX_LINE + 1);
    }
}
