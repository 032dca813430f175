//! ISO 6709 coordinates as the protocol carries them: `+34.068930-118.445127`.

/// A validated latitude/longitude pair that keeps its original spelling, so replies echo it unchanged.
#[derive(Clone, Debug, PartialEq)]
pub struct Location {
    text: String,
    split: usize,
    latitude: f64,
    longitude: f64,
}

impl Location {
    /// Accepts `±DD[.D*]±DDD[.D*]`: both signs are required, latitude within ±90, longitude within ±180.
    pub fn parse(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        if !matches!(bytes.first(), Some(b'+' | b'-')) {
            return None;
        }
        let split = 1 + bytes[1..].iter().position(|b| matches!(b, b'+' | b'-'))?;
        let latitude = parse_degrees(&text[..split], 90.0)?;
        let longitude = parse_degrees(&text[split..], 180.0)?;
        Some(Self { text: text.to_owned(), split, latitude, longitude })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn latitude(&self) -> f64 {
        self.latitude
    }

    pub fn longitude(&self) -> f64 {
        self.longitude
    }

    /// `lat,long` as the places API wants it, keeping the client's digits (no leading `+`).
    pub fn query_param(&self) -> String {
        let lat = self.text[..self.split].trim_start_matches('+');
        let long = self.text[self.split..].trim_start_matches('+');
        format!("{lat},{long}")
    }
}

/// One signed decimal number of degrees: sign, at least one digit, optional fraction with digits.
fn parse_degrees(text: &str, limit: f64) -> Option<f64> {
    let body = &text[1..];
    let (whole, frac) = body.split_once('.').unwrap_or((body, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !digits(frac) {
        return None;
    }
    let value: f64 = text.parse().ok()?;
    (value.abs() <= limit).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_sample_location() {
        let loc = Location::parse("+34.068930-118.445127").expect("valid");
        assert_eq!(loc.as_str(), "+34.068930-118.445127");
        assert!((loc.latitude() - 34.06893).abs() < 1e-9);
        assert!((loc.longitude() + 118.445127).abs() < 1e-9);
        assert_eq!(loc.query_param(), "34.068930,-118.445127");
    }

    #[test]
    fn accepts_edges_and_integers() {
        assert!(Location::parse("-90+180").is_some());
        assert!(Location::parse("+90.0-180.0").is_some());
    }

    #[test]
    fn rejects_unsigned_out_of_range_and_garbage() {
        for bad in [
            "34.068930-118.445127",
            "+34.068930118.445127",
            "+91.0-118.0",
            "+34.0-180.5",
            "+34.0-",
            "+-118.0",
            "+34.-118.0",
            "+34.0-118.0x",
            "+34.0-118.0+1",
            "+1e1-118",
            "",
        ] {
            assert!(Location::parse(bad).is_none(), "{bad:?}");
        }
    }
}
