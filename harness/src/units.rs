//! Command-line units: request rates (`10k`, `1.5M`, `max`) and durations (`10s`, `500ms`, `2m`).

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

/// Parses `10s`, `500ms`, `2m`, `1.5s`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let hint = "expected a duration such as 10s, 500ms or 2m";
    let (number, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let value: f64 = number.parse().map_err(|_| format!("`{s}`: {hint}"))?;
    let secs = match unit {
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "s" => value,
        "m" | "min" => value * 60.0,
        _ => return Err(format!("`{s}`: unknown unit `{unit}`; {hint}")),
    };
    if !(secs.is_finite() && secs >= 0.0) {
        return Err(format!("`{s}`: {hint}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
