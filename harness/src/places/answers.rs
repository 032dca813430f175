//! The answers: a pure function of the query (`location` and `radius`). Twenty places inside the
//! radius, scattered by a generator seeded from a hash of the query, in Google's JSON shape and
//! field order; none beyond [`POLAR_LATITUDE`]. The seed of a run never changes them.

use bytes::Bytes;

use crate::base::rng::{SplitMix64, mix64};

/// Places in every OK answer: Google's page size, and the largest WHATSAT bound, so trimming to the
/// bound is exercised by every query.
pub const RESULTS_PER_QUERY: usize = 20;
/// Beyond this |latitude| the answer is `ZERO_RESULTS` (the "polar" rule), so clients can reach the
/// empty case deterministically.
pub const POLAR_LATITUDE: f64 = 85.0;
/// Mean Earth radius (IUGG), for placing results on the sphere.
const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Deterministic Nearby Search JSON for a query (pure function, unit-testable). The server's body
/// is exactly `serde_json::to_string_pretty` of this value, written directly without building it,
/// so a load generator can compute the places part of a WHATSAT reply without asking the backend.
pub fn nearby_json(lat: f64, lon: f64, radius_m: u32) -> serde_json::Value {
    let results: Vec<serde_json::Value> = places(lat, lon, radius_m).map(|place| place.to_json()).collect();
    serde_json::json!({ "html_attributions": [], "results": results, "status": status(lat) })
}

/// The response body for a query: the text of [`nearby_json`], pretty-printed as serde_json does,
/// appended piece by piece to one buffer (no intermediate strings or maps on the hot path).
pub(super) fn nearby_body(lat: f64, lon: f64, radius_m: u32) -> Result<Bytes, serde_json::Error> {
    // Twenty places take about 7.8 kB; one allocation, no regrowth.
    let mut out = Vec::with_capacity(10 * 1024);
    out.extend_from_slice(b"{\n  \"html_attributions\": [],\n  \"results\": [");
    let mut empty = true;
    for place in places(lat, lon, radius_m) {
        out.extend_from_slice(if empty { b"\n" } else { b",\n" });
        place.write_pretty(&mut out)?;
        empty = false;
    }
    out.extend_from_slice(if empty { b"],\n  \"status\": \"" } else { b"\n  ],\n  \"status\": \"" });
    out.extend_from_slice(status(lat).as_bytes());
    out.extend_from_slice(b"\"\n}");
    Ok(Bytes::from(out))
}

/// `ZERO_RESULTS` beyond [`POLAR_LATITUDE`], `OK` elsewhere.
fn status(lat: f64) -> &'static str {
    if lat.abs() > POLAR_LATITUDE { "ZERO_RESULTS" } else { "OK" }
}

/// One kind of place: the word in its name and the Google `types` it carries.
#[derive(Debug)]
struct Kind {
    word: &'static str,
    types: &'static [&'static str],
}

const KINDS: &[Kind] = &[
    Kind { word: "Cafe", types: &["cafe", "food", "point_of_interest", "establishment"] },
    Kind { word: "Restaurant", types: &["restaurant", "food", "point_of_interest", "establishment"] },
    Kind { word: "Bakery", types: &["bakery", "food", "store", "point_of_interest", "establishment"] },
    Kind { word: "Bar", types: &["bar", "point_of_interest", "establishment"] },
    Kind { word: "Park", types: &["park", "point_of_interest", "establishment"] },
    Kind { word: "Library", types: &["library", "point_of_interest", "establishment"] },
    Kind { word: "Museum", types: &["museum", "tourist_attraction", "point_of_interest", "establishment"] },
    Kind { word: "Pharmacy", types: &["pharmacy", "health", "store", "point_of_interest", "establishment"] },
    Kind { word: "Book Store", types: &["book_store", "store", "point_of_interest", "establishment"] },
    Kind { word: "Gym", types: &["gym", "health", "point_of_interest", "establishment"] },
];

const STREETS: &[&str] =
    &["Main Street", "Oak Avenue", "Cedar Way", "Hill Road", "Lake Drive", "Park Lane", "Mill Street", "Elm Court"];

/// Length of a place id: `ChIJ` and 23 URL-safe base64 characters, like Google's.
const PLACE_ID_LEN: usize = 27;

/// One generated place, as plain data: written out by [`Place::write_pretty`] (the server) or
/// turned into a JSON value by [`Place::to_json`] (everyone else), both from the same fields.
#[derive(Debug)]
struct Place {
    /// Degrees, rounded to the 7 decimals Google prints.
    lat: f64,
    lng: f64,
    /// The 4 hex digits of the name: "Place 808a Book Store".
    tag: u16,
    kind: &'static Kind,
    place_id: [u8; PLACE_ID_LEN],
    /// 10..=50: the rating 1.0..=5.0 in tenths.
    rating_tenths: u8,
    /// The vicinity: "5201 Cedar Way".
    number: u16,
    street: &'static str,
}

/// The places of a query, in order: twenty spread uniformly over the disc of `radius_m` around the
/// point, drawn from a generator seeded by the query; none beyond [`POLAR_LATITUDE`].
fn places(lat: f64, lon: f64, radius_m: u32) -> impl Iterator<Item = Place> {
    let count = if lat.abs() > POLAR_LATITUDE { 0 } else { RESULTS_PER_QUERY };
    let mut rng = SplitMix64::new(mix64(mix64(mix64(lat.to_bits()) ^ lon.to_bits()) ^ u64::from(radius_m)));
    let (phi1, lambda1) = (lat.to_radians(), lon.to_radians());
    (0..count).map(move |_| {
        // sqrt makes the spread uniform over the disc's area; 0.999 leaves room for the rounding
        // to 7 decimals, so every place stays inside the radius.
        let distance = 0.999 * f64::from(radius_m) * rng.next_f64().sqrt();
        let bearing = std::f64::consts::TAU * rng.next_f64();
        let delta = distance / EARTH_RADIUS_M;
        // Great-circle destination from (phi1, lambda1).
        let phi2 = (phi1.sin() * delta.cos() + phi1.cos() * delta.sin() * bearing.cos()).clamp(-1.0, 1.0).asin();
        let lambda2 = lambda1 + (bearing.sin() * delta.sin() * phi1.cos()).atan2(delta.cos() - phi1.sin() * phi2.sin());
        let lng = (lambda2.to_degrees() + 540.0).rem_euclid(360.0) - 180.0;
        // The draws below happen in this order; changing it changes every answer.
        let kind = &KINDS[rng.below(KINDS.len() as u64) as usize];
        let tag = (rng.next_u64() >> 48) as u16;
        let place_id = place_id(&mut rng);
        let rating_tenths = 10 + rng.below(41) as u8;
        let number = 1 + rng.below(9999) as u16;
        let street = STREETS[rng.below(STREETS.len() as u64) as usize];
        Place { lat: round7(phi2.to_degrees()), lng: round7(lng), tag, kind, place_id, rating_tenths, number, street }
    })
}

impl Place {
    /// Appends the place as serde_json's pretty printer writes it inside `results`. Every string
    /// is plain ASCII from the tables above, so nothing needs escaping; the coordinates go through
    /// serde_json itself so they are spelled exactly as in [`nearby_json`].
    fn write_pretty(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        out.extend_from_slice(b"    {\n      \"geometry\": {\n        \"location\": {\n          \"lat\": ");
        serde_json::to_writer(&mut *out, &self.lat)?;
        out.extend_from_slice(b",\n          \"lng\": ");
        serde_json::to_writer(&mut *out, &self.lng)?;
        out.extend_from_slice(b"\n        }\n      },\n      \"name\": \"");
        self.write_name(out);
        out.extend_from_slice(b"\",\n      \"place_id\": \"");
        out.extend_from_slice(&self.place_id);
        out.extend_from_slice(b"\",\n      \"rating\": ");
        out.extend_from_slice(&[b'0' + self.rating_tenths / 10, b'.', b'0' + self.rating_tenths % 10]);
        out.extend_from_slice(b",\n      \"types\": [");
        for (i, kind_type) in self.kind.types.iter().enumerate() {
            out.extend_from_slice(if i == 0 { b"\n        \"" } else { b",\n        \"" });
            out.extend_from_slice(kind_type.as_bytes());
            out.push(b'"');
        }
        out.extend_from_slice(b"\n      ],\n      \"vicinity\": \"");
        self.write_vicinity(out);
        out.extend_from_slice(b"\"\n    }");
        Ok(())
    }

    /// The same place as a JSON value, keys in Google's order.
    fn to_json(&self) -> serde_json::Value {
        let text = |write: fn(&Self, &mut Vec<u8>)| {
            let mut bytes = Vec::new();
            write(self, &mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        };
        serde_json::json!({
            "geometry": { "location": { "lat": self.lat, "lng": self.lng } },
            "name": text(Self::write_name),
            "place_id": String::from_utf8_lossy(&self.place_id),
            "rating": f64::from(self.rating_tenths) / 10.0,
            "types": self.kind.types,
            "vicinity": text(Self::write_vicinity),
        })
    }

    /// `Place 808a Book Store`.
    fn write_name(&self, out: &mut Vec<u8>) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        out.extend_from_slice(b"Place ");
        out.extend([12, 8, 4, 0].map(|shift| HEX[usize::from((self.tag >> shift) & 15)]));
        out.push(b' ');
        out.extend_from_slice(self.kind.word.as_bytes());
    }

    /// `5201 Cedar Way`.
    fn write_vicinity(&self, out: &mut Vec<u8>) {
        let mut digits = [0u8; 5];
        let mut start = digits.len();
        let mut n = self.number;
        loop {
            start -= 1;
            digits[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        out.extend_from_slice(&digits[start..]);
        out.push(b' ');
        out.extend_from_slice(self.street.as_bytes());
    }
}

/// Google prints coordinates with 7 decimals.
fn round7(degrees: f64) -> f64 {
    (degrees * 1e7).round() / 1e7
}

/// A Google-looking place id: `ChIJ` and 23 URL-safe base64 characters.
fn place_id(rng: &mut SplitMix64) -> [u8; PLACE_ID_LEN] {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut id = [0u8; PLACE_ID_LEN];
    id[..4].copy_from_slice(b"ChIJ");
    let (mut bits, mut left) = (0, 0);
    for slot in &mut id[4..] {
        if left < 6 {
            bits = rng.next_u64();
            left = 64;
        }
        *slot = ALPHABET[(bits & 63) as usize];
        bits >>= 6;
        left -= 6;
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    const UCLA: (f64, f64) = (34.068930, -118.445127);

    fn haversine_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
        let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
        let (dp, dl) = ((lat2 - lat1).to_radians(), (lon2 - lon1).to_radians());
        let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_M * a.sqrt().asin()
    }

    #[test]
    fn nearby_json_is_deterministic_and_google_shaped() {
        let a = nearby_json(UCLA.0, UCLA.1, 10_000);
        assert_eq!(a, nearby_json(UCLA.0, UCLA.1, 10_000));
        assert_ne!(a, nearby_json(UCLA.0, UCLA.1, 10_001));
        assert_ne!(a, nearby_json(UCLA.0 + 1e-6, UCLA.1, 10_000));
        let top: Vec<&str> = a.as_object().expect("object").keys().map(String::as_str).collect();
        assert_eq!(top, ["html_attributions", "results", "status"]);
        assert_eq!(a["status"], "OK");
        assert_eq!(a["html_attributions"], serde_json::json!([]));
        let results = a["results"].as_array().expect("results");
        assert_eq!(results.len(), RESULTS_PER_QUERY);
        for place in results {
            let keys: Vec<&str> = place.as_object().expect("object").keys().map(String::as_str).collect();
            assert_eq!(keys, ["geometry", "name", "place_id", "rating", "types", "vicinity"]);
            let name = place["name"].as_str().expect("name");
            assert!(name.starts_with("Place ") && KINDS.iter().any(|k| name.ends_with(k.word)), "{name}");
            let id = place["place_id"].as_str().expect("id");
            assert!(id.starts_with("ChIJ") && id.len() == 27, "{id}");
            let rating = place["rating"].as_f64().expect("rating");
            assert!((1.0..=5.0).contains(&rating) && ((rating * 10.0).round() - rating * 10.0).abs() < 1e-9);
            assert!(KINDS.iter().any(|k| serde_json::json!(k.types) == place["types"]));
            assert!(!place["vicinity"].as_str().expect("vicinity").is_empty());
        }
        let names: std::collections::HashSet<&str> = results.iter().filter_map(|p| p["name"].as_str()).collect();
        assert!(names.len() > 15, "names should mostly differ: {names:?}");
    }

    #[test]
    fn every_place_lies_within_the_radius() {
        for (lat, lon, radius) in [
            (UCLA.0, UCLA.1, 10_000),
            (UCLA.0, UCLA.1, 50_000),
            (0.0, 179.99, 50_000),
            (-84.9, -179.9, 50_000),
            (51.5, -0.12, 100),
            (12.0, 34.0, 0),
        ] {
            let json = nearby_json(lat, lon, radius);
            for place in json["results"].as_array().expect("results") {
                let at = &place["geometry"]["location"];
                let (plat, plng) = (at["lat"].as_f64().expect("lat"), at["lng"].as_f64().expect("lng"));
                assert!((-180.0..=180.0).contains(&plng));
                let d = haversine_m(lat, lon, plat, plng);
                assert!(d <= f64::from(radius) + 0.01, "{d} m from ({lat},{lon}) with radius {radius}");
            }
        }
    }

    #[test]
    fn polar_queries_have_zero_results() {
        for lat in [85.000001, -85.5, 90.0, -90.0] {
            let json = nearby_json(lat, 10.0, 10_000);
            assert_eq!(json["status"], "ZERO_RESULTS");
            assert_eq!(json["results"], serde_json::json!([]));
        }
        assert_eq!(nearby_json(85.0, 10.0, 10_000)["status"], "OK");
    }

    #[test]
    fn the_served_body_is_the_pretty_printed_json() {
        // Tiny coordinates (printed in exponent form), the antimeridian, radius 0, the polar rule.
        for (lat, lon, radius) in
            [(UCLA.0, UCLA.1, 10_000), (0.0, 0.0, 5), (0.0, 0.0, 0), (-0.5, 179.9999, 50_000), (89.0, 1.0, 10)]
        {
            let body = nearby_body(lat, lon, radius).expect("serializes");
            let expected = serde_json::to_string_pretty(&nearby_json(lat, lon, radius)).expect("prints");
            assert_eq!(std::str::from_utf8(&body).expect("utf8"), expected, "({lat},{lon}) r={radius}");
        }
    }
}
