//! Command-line units: request rates (`10k`, `1.5M`, `max`), durations (`10s`, `500ms`, `2m`) and
//! byte sizes (`1MiB`, `64KiB`, `4096`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// `--load`: an open-loop rate in requests per second, or `max` for a closed loop.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Load {
    Rate(f64),
    Max,
}

impl FromStr for Load {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hint = "expected a rate in requests/s such as 2000, 10k or 1.5M, or `max` for a closed loop";
        let t = s.trim();
        if t.eq_ignore_ascii_case("max") {
            return Ok(Load::Max);
        }
        let (number, scale) = match t.char_indices().last() {
            Some((i, 'k' | 'K')) => (&t[..i], 1e3),
            Some((i, 'm' | 'M')) => (&t[..i], 1e6),
            _ => (t, 1.0),
        };
        let value: f64 = number.parse().map_err(|_| format!("`{s}`: {hint}"))?;
        let rate = value * scale;
        if !(rate.is_finite() && rate > 0.0) {
            return Err(format!("`{s}`: the rate must be positive; {hint}"));
        }
        Ok(Load::Rate(rate))
    }
}

impl fmt::Display for Load {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Load::Max => f.write_str("max"),
            Load::Rate(r) if *r >= 1e6 && (r / 1e6).fract() == 0.0 => write!(f, "{}M", r / 1e6),
            Load::Rate(r) if *r >= 1e3 && (r / 1e3).fract() == 0.0 => write!(f, "{}k", r / 1e3),
            Load::Rate(r) => write!(f, "{r}"),
        }
    }
}

impl Load {
    pub fn offered_rps(self) -> Option<f64> {
        match self {
            Load::Rate(r) => Some(r),
            Load::Max => None,
        }
    }
}

/// `--slice K/N`: this generator's share of one open-loop schedule run by N generators: of the
/// schedule's intended sends 0, 1, 2 …, it sends those numbered K, K+N, K+2N …
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slice {
    pub k: u32,
    pub n: u32,
}

impl Slice {
    pub const WHOLE: Slice = Slice { k: 0, n: 1 };
}

impl FromStr for Slice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hint = "expected K/N with K below N, e.g. --slice 0/2 and --slice 1/2 for two generators sharing one load";
        let (k, n) = s.trim().split_once('/').ok_or_else(|| format!("`{s}`: {hint}"))?;
        let (k, n): (u32, u32) =
            (k.parse().map_err(|_| format!("`{s}`: {hint}"))?, n.parse().map_err(|_| format!("`{s}`: {hint}"))?);
        if n == 0 || k >= n {
            return Err(format!("`{s}`: {hint}"));
        }
        Ok(Slice { k, n })
    }
}

impl fmt::Display for Slice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.k, self.n)
    }
}

/// Parses a server address: `IP:PORT` (`10.0.0.2:7000`, `[::1]:7000`), or `HOST:PORT`, resolved
/// once here (the first address the resolver gives). Any address: herdbench drives what its user
/// names (its own tests and scripts use loopback, or network namespaces they create).
pub fn parse_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    let hint = "expected HOST:PORT or IP:PORT, e.g. --addr 127.0.0.1:12000 or --addr [::1]:12000";
    let s = s.trim();
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    // A name needs a port after its last colon; without one, say so before asking any resolver.
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
        _ => return Err(format!("`{s}`: {hint}")),
    }
    use std::net::ToSocketAddrs;
    let mut found = s.to_socket_addrs().map_err(|e| format!("`{s}`: {e}; {hint}"))?;
    found.next().ok_or_else(|| format!("`{s}`: the name resolved to no address; {hint}"))
}

/// Parses `10s`, `500ms`, `2m`, `1.5s`, `250us`, `100ns`, or a bare number of seconds; exact to the
/// nanosecond, so what [`Interval`] prints parses back to the same value.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    parse_duration_or(s, Some("s"))
}

/// Parses a duration whose unit is written (`20ms`, `1.5s`, `250us`; only `0` may go without):
/// where a bare number would be a guess (the places backend's `--latency 20` could mean 20 ms).
pub fn parse_duration_with_unit(s: &str) -> Result<Duration, String> {
    parse_duration_or(s, None)
}

/// Parses a duration, reading a bare number in `bare_unit` (none: a bare number other than 0 is
/// an error).
fn parse_duration_or(s: &str, bare_unit: Option<&str>) -> Result<Duration, String> {
    let t = s.trim();
    let hint = "expected a duration such as 10s, 500ms or 2m";
    let (number, unit) = match t.find(|c: char| c.is_ascii_alphabetic() || c == 'µ') {
        Some(i) => (t[..i].trim_end(), &t[i..]),
        None => (t, bare_unit.unwrap_or("")),
    };
    let value: f64 = number.parse().map_err(|_| format!("`{s}`: {hint}"))?;
    let nanos_per_unit = match unit {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" | "min" => 60e9,
        "" if value == 0.0 => 0.0,
        "" => return Err(format!("`{s}` has no unit; write one, e.g. {t}ms or {t}s")),
        _ => return Err(format!("`{s}`: unknown unit `{unit}`; {hint}")),
    };
    let nanos = (value * nanos_per_unit).round();
    // u64 nanoseconds reach 584 years: far past any duration a run uses.
    if !(nanos.is_finite() && nanos >= 0.0 && nanos < u64::MAX as f64) {
        return Err(format!("`{s}`: {hint}"));
    }
    Ok(Duration::from_nanos(nanos as u64))
}

/// Parses a percentage, `1%`, `0.5%` or `0%`, into a fraction (0.01); the `%` is required, so that
/// `1` is never read as 100 %. Below 100 %: a link that loses everything carries nothing.
pub fn parse_percent(s: &str) -> Result<f64, String> {
    let hint = "expected a percentage below 100%, such as 1% or 0.5%";
    let number = s.trim().strip_suffix('%').ok_or_else(|| format!("`{s}`: {hint}"))?;
    let value: f64 = number.trim().parse().map_err(|_| format!("`{s}`: {hint}"))?;
    if !(value.is_finite() && (0.0..100.0).contains(&value)) {
        return Err(format!("`{s}`: {hint}"));
    }
    Ok(value / 100.0)
}

/// A duration as a flag takes it and shows its default: parsed by [`parse_duration`], printed in the
/// largest unit that keeps it exact (`5s`, `100ms`, `250us`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interval(pub Duration);

impl FromStr for Interval {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration(s).map(Interval)
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        match [(1_000_000_000, "s"), (1_000_000, "ms"), (1_000, "us")]
            .into_iter()
            .find(|(per, _)| nanos.is_multiple_of(*per))
        {
            Some((per, unit)) => write!(f, "{}{unit}", nanos / per),
            None => write!(f, "{nanos}ns"),
        }
    }
}

/// A byte count as a flag takes it: `1MiB`, `64KiB`, `1.5MiB`, `512B`, or plain bytes (`4096`).
/// Units are binary (KiB = 1024 bytes); `KB` and `MB` are refused rather than guessed at. Printed in
/// the largest unit that keeps it exact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub usize);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let hint = "expected a size such as 1MiB, 64KiB or a plain number of bytes (4096)";
        let (number, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
            Some(i) => (t[..i].trim_end(), &t[i..]),
            None => (t, ""),
        };
        let scale: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            _ => return Err(format!("`{s}`: unknown unit `{unit}`; {hint}")),
        };
        let value: f64 = number.parse().map_err(|_| format!("`{s}`: {hint}"))?;
        let bytes = value * scale as f64;
        if !(bytes.is_finite() && bytes >= 0.0) || bytes.fract() != 0.0 {
            return Err(format!("`{s}`: not a whole number of bytes; {hint}"));
        }
        if bytes >= usize::MAX as f64 {
            return Err(format!("`{s}`: too large; {hint}"));
        }
        Ok(ByteSize(bytes as usize))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        match [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")]
            .into_iter()
            .find(|(per, _)| n > 0 && n.is_multiple_of(*per))
        {
            Some((per, unit)) => write!(f, "{}{unit}", n / per),
            None => write!(f, "{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_parse_and_refuse_what_is_not_a_share() {
        assert_eq!("1/3".parse(), Ok(Slice { k: 1, n: 3 }));
        assert_eq!(Slice { k: 1, n: 3 }.to_string(), "1/3");
        for bad in ["3/3", "1/0", "1", "a/2", "-1/2"] {
            let e = bad.parse::<Slice>().expect_err(bad);
            assert!(e.contains("--slice 0/2"), "{bad}: {e}");
        }
    }

    #[test]
    fn addresses_parse_with_a_hint_when_they_do_not() {
        assert_eq!(parse_addr("10.0.0.2:7000"), Ok("10.0.0.2:7000".parse().expect("literal")));
        assert_eq!(parse_addr("[::1]:80"), Ok("[::1]:80".parse().expect("literal")));
        for bad in ["localhost", "10.0.0.2", ":80", "host:port", "1.2.3.4:99999"] {
            let e = parse_addr(bad).expect_err(bad);
            assert!(e.contains("HOST:PORT") && e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn rates() {
        assert_eq!("10k".parse::<Load>(), Ok(Load::Rate(10_000.0)));
        assert_eq!("1.5M".parse::<Load>(), Ok(Load::Rate(1_500_000.0)));
        assert_eq!("2000".parse::<Load>(), Ok(Load::Rate(2000.0)));
        assert_eq!("MAX".parse::<Load>(), Ok(Load::Max));
        for bad in ["", "0", "-5k", "tenk", "10x", "k"] {
            let err = bad.parse::<Load>().expect_err(bad);
            assert!(err.contains("10k"), "error should say what to type: {err}");
        }
        assert_eq!(Load::Rate(10_000.0).to_string(), "10k");
        assert_eq!(Load::Rate(1_500_000.0).to_string(), "1500k");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("3 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse_duration("0.1s"), Ok(Duration::from_millis(100)), "exact, not 99.999999 ms");
    }

    #[test]
    fn percentages_need_their_sign() {
        assert_eq!(parse_percent("1%"), Ok(0.01));
        assert_eq!(parse_percent(" 0.5 %"), Ok(0.005));
        assert_eq!(parse_percent("0%"), Ok(0.0));
        for bad in ["1", "100%", "-1%", "a%", "%", "1e400%"] {
            let e = parse_percent(bad).expect_err(bad);
            assert!(e.contains("1%") && e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn intervals_print_what_parses_back() {
        for (text, shown) in [("5s", "5s"), ("100ms", "100ms"), ("1.5s", "1500ms"), ("250us", "250us"), ("0", "0s")] {
            let i: Interval = text.parse().expect(text);
            assert_eq!(i.to_string(), shown);
            assert_eq!(shown.parse::<Interval>(), Ok(i));
        }
        assert_eq!(Interval(Duration::from_nanos(1_000_000_007)).to_string(), "1000000007ns");
        assert_eq!("1000000007ns".parse(), Ok(Interval(Duration::from_nanos(1_000_000_007))));
    }

    #[test]
    fn byte_sizes() {
        assert_eq!("1MiB".parse(), Ok(ByteSize(1 << 20)));
        assert_eq!("64KiB".parse(), Ok(ByteSize(64 << 10)));
        assert_eq!("64 kib".parse(), Ok(ByteSize(64 << 10)));
        assert_eq!("1.5MiB".parse(), Ok(ByteSize(3 << 19)));
        assert_eq!("4096".parse(), Ok(ByteSize(4096)));
        assert_eq!("100B".parse(), Ok(ByteSize(100)));
        for bad in ["", "1MB", "64K", "-1", "1.5", "0.3KiB", "lots", "1e30GiB"] {
            let err = bad.parse::<ByteSize>().expect_err(bad);
            assert!(err.contains("1MiB") && err.contains("64KiB"), "error should say what to type: {err}");
        }
        for (n, shown) in [(1 << 20, "1MiB"), (64 << 10, "64KiB"), (3 << 19, "1536KiB"), (100, "100"), (0, "0")] {
            assert_eq!(ByteSize(n).to_string(), shown);
            assert_eq!(shown.parse(), Ok(ByteSize(n)));
        }
    }
}
