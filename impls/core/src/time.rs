//! POSIX timestamps with nanosecond precision, parsed and printed exactly (no floating point).

use std::fmt;

/// A POSIX time in nanoseconds since the epoch. The caller supplies "now"; the core never reads a clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i128);

/// A signed difference of two timestamps, printed as `+0.263873386` / `-1.000000000`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Delta(i128);

const NANOS: i128 = 1_000_000_000;

impl Timestamp {
    pub const fn from_nanos(nanos: i128) -> Self {
        Self(nanos)
    }

    pub const fn as_nanos(self) -> i128 {
        self.0
    }

    /// Converts a wall-clock reading the caller took (the core itself never reads a clock).
    pub fn from_system_time(t: std::time::SystemTime) -> Self {
        match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => Self(d.as_nanos() as i128),
            Err(e) => Self(-(e.duration().as_nanos() as i128)),
        }
    }

    /// Parses a non-negative POSIX time: digits, optionally `.` and more digits.
    /// Fraction digits past the ninth are ignored (they are below our precision).
    /// Signs, exponents, letters and empty parts are rejected.
    pub fn parse(text: &str) -> Option<Self> {
        let (whole, frac) = match text.split_once('.') {
            Some((w, f)) => (w, f),
            None => (text, ""),
        };
        if whole.is_empty() || whole.len() > 20 || !all_digits(whole) || !all_digits(frac) {
            return None;
        }
        if text.ends_with('.') {
            return None;
        }
        let secs: i128 = whole.parse().ok()?;
        let mut nanos: i128 = 0;
        for i in 0..9 {
            let digit = frac.as_bytes().get(i).map_or(0, |b| i128::from(b - b'0'));
            nanos = nanos * 10 + digit;
        }
        Some(Self(secs * NANOS + nanos))
    }

    /// `self - earlier`.
    pub fn since(self, earlier: Timestamp) -> Delta {
        Delta(self.0 - earlier.0)
    }

    pub fn plus(self, delta: Delta) -> Timestamp {
        Timestamp(self.0 + delta.0)
    }
}

fn all_digits(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit())
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:09}", self.0.div_euclid(NANOS), self.0.rem_euclid(NANOS))
    }
}

impl Delta {
    pub const fn from_nanos(nanos: i128) -> Self {
        Self(nanos)
    }

    pub const fn as_nanos(self) -> i128 {
        self.0
    }

    /// Parses `+S.FFFFFFFFF` or `-S.FFFFFFFFF` (sign required, as the AT line prints it).
    pub fn parse(text: &str) -> Option<Self> {
        let (negative, rest) = match text.as_bytes().first()? {
            b'+' => (false, &text[1..]),
            b'-' => (true, &text[1..]),
            _ => return None,
        };
        let magnitude = Timestamp::parse(rest)?.0;
        Some(Self(if negative { -magnitude } else { magnitude }))
    }
}

impl fmt::Display for Delta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { '-' } else { '+' };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:09}", abs / 1_000_000_000, abs % 1_000_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_sample_time_exactly() {
        let t = Timestamp::parse("1479413884.392014450").expect("valid");
        assert_eq!(t.as_nanos(), 1_479_413_884_392_014_450);
        assert_eq!(t.to_string(), "1479413884.392014450");
    }

    #[test]
    fn short_and_long_fractions() {
        assert_eq!(Timestamp::parse("5.5").map(|t| t.as_nanos()), Some(5_500_000_000));
        assert_eq!(Timestamp::parse("5").map(|t| t.as_nanos()), Some(5_000_000_000));
        assert_eq!(Timestamp::parse("1.0000000019").map(|t| t.as_nanos()), Some(1_000_000_001));
    }

    #[test]
    fn rejects_signed_alphabetic_and_empty() {
        for bad in ["-1.5", "+1.5", "abc", "", ".5", "5.", "1e9", "12a.3", "1.2.3", " 1"] {
            assert_eq!(Timestamp::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn delta_prints_signed_with_nine_digits() {
        let server = Timestamp::parse("1479413884.655887836").expect("valid");
        let client = Timestamp::parse("1479413884.392014450").expect("valid");
        assert_eq!(server.since(client).to_string(), "+0.263873386");
        assert_eq!(client.since(server).to_string(), "-0.263873386");
        assert_eq!(Delta::parse("-0.263873386"), Some(client.since(server)));
        assert_eq!(Delta::from_nanos(-1_500_000_000).to_string(), "-1.500000000");
    }
}
