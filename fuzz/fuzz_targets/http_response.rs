//! The places client's HTTP/1.1 response decoder and the JSON trimmer, on any upstream bytes.
//!
//! The first input byte is the WHATSAT bound; the rest is what the upstream sent. Checked: a
//! response decodes the same fed whole as fed piecewise (every prefix of a complete response is
//! `Partial`, which is how the places client feeds it); a complete response never claims more bytes
//! than it was given; and a trimmed body is one JSON object with at most `bound` results, no
//! blank line inside and no trailing newline (the reply's framing depends on both).
#![no_main]

use herd_core::Decoded;
use herd_core::places::{decode_response, trim_places};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&bound, input)) = data.split_first() else { return };
    let bound = bound % 21;
    let Ok(Decoded::Complete(response)) = decode_response(input) else { return };
    assert!(response.consumed <= input.len());
    let used = &input[..response.consumed];
    // Fed piecewise, the same response is not complete (nor an error) before its last byte.
    for end in (0..used.len()).step_by(1 + used.len() / 64) {
        match decode_response(&used[..end]) {
            Ok(Decoded::Partial) => {}
            other => panic!("prefix of {end}/{} bytes decoded as {other:?}", used.len()),
        }
    }
    if let Ok(json) = trim_places(&response.body, bound) {
        assert!(!json.contains("\n\n") && !json.ends_with('\n'), "framing-breaking JSON {json:?}");
        let value: serde_json::Value = serde_json::from_str(&json).expect("trimmed JSON parses");
        if let Some(results) = value.get("results").and_then(|r| r.as_array()) {
            assert!(results.len() <= usize::from(bound));
        }
    }
    assert_eq!(decode_response(used), Ok(Decoded::Complete(response)), "the same bytes decode the same");
});
