//! The flood-link handshake's test vector, as `guests/CONTRACT.md` prints it: a fixed key, fixed
//! nonces and Alford opening a link to Hamilton. A guest written in another language checks its
//! handshake against the same literals; these tests keep them true to herd-core, and check that
//! the contract still prints them.
//!
//! ```text
//! PEER Alford a0a1a2a3a4a5a6a7a8a9aaabacadaeaf
//! HERD Hamilton b0b1b2b3b4b5b6b7b8b9babbbcbdbebf ece5013f…d632e607
//! AUTH cae3932d…40ba010d
//! ```

use std::sync::Arc;

use herd_core::auth::{self, Accept, NONCE_BYTES, Names, Nonces, Role};
use herd_core::{EventLog, Herd, HerdConfig, HerdKey, Link, Reply, Service, Timestamp};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The key file's text.
const KEY_FILE: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n";
const NAMES: Names<'static> = Names { opener: "Alford", acceptor: "Hamilton" };

/// The three handshake lines, exactly as CONTRACT.md shows them.
const HELLO: &str = "PEER Alford a0a1a2a3a4a5a6a7a8a9aaabacadaeaf\n";
const ANSWER: &str = "HERD Hamilton b0b1b2b3b4b5b6b7b8b9babbbcbdbebf \
                      ece5013f5ddb19df280b5acc4b66298655087898253208085b6f5755d632e607\n";
const AUTH: &str = "AUTH cae3932d617d48cec1bda95935499d10953c9a6dea4530b2cf35bc7e40ba010d\n";

/// The MAC input of the `AUTH` proof, hex, as CONTRACT.md shows it.
const OPEN_MESSAGE: &str = "6865726462656e6368206c696e6b2076316f70656e06416c666f72640848616d696c746f6e\
                            a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf";

fn key() -> HerdKey {
    HerdKey::from_hex(KEY_FILE).expect("the vector's key file is valid")
}

/// Opener nonce `a0 a1 … af`, acceptor nonce `b0 b1 … bf`.
fn nonces() -> Nonces {
    Nonces { opener: std::array::from_fn(|i| 0xa0 + i as u8), acceptor: std::array::from_fn(|i| 0xb0 + i as u8) }
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex")).collect()
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).expect("handshake lines are ASCII")
}

#[test]
fn the_contract_vector_is_what_herd_core_sends() {
    let (key, nonces) = (key(), nonces());
    assert_eq!(text(auth::hello_line("Alford", Some(&nonces.opener))), HELLO);
    let accept = key.proof(Role::Acceptor, NAMES, &nonces);
    assert_eq!(text(auth::accept_line("Hamilton", &nonces.acceptor, &accept)), ANSWER);
    let open = key.proof(Role::Opener, NAMES, &nonces);
    assert_eq!(text(auth::auth_line(&open)), AUTH);
}

#[test]
fn the_vector_proofs_are_hmac_sha256_of_the_documented_bytes() {
    let key_bytes = hex(KEY_FILE.trim());
    let mac = |message: &[u8]| {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key_bytes).expect("any key length");
        mac.update(message);
        let tag: [u8; 32] = mac.finalize().into_bytes().into();
        tag
    };
    let open_message = hex(OPEN_MESSAGE);
    assert_eq!(open_message.len(), 69);
    assert!(open_message.starts_with(b"herdbench link v1open\x06Alford\x08Hamilton"));
    assert_eq!(hex(AUTH.trim_end().strip_prefix("AUTH ").expect("an AUTH line")), mac(&open_message));
    // The acceptor's proof: the same message with the role `accept`.
    let accept_message = [&b"herdbench link v1accept"[..], &open_message[21..]].concat();
    assert_eq!(accept_message.len(), 71);
    let answer = Accept::parse(ANSWER.trim_end().as_bytes()).expect("a HERD line");
    assert_eq!((answer.name, answer.nonce), ("Hamilton", nonces().acceptor));
    assert_eq!(answer.proof, mac(&accept_message));
    assert!(key().verify(Role::Acceptor, NAMES, &nonces(), &answer.proof), "the opener accepts the answer");
}

/// Hamilton as the acceptor, fed the vector's opener lines: it answers with a nonce of its own, so
/// the vector's `AUTH` (which answers `b0 … bf`) is a replay and refused; the proof for the nonce it
/// did send is accepted and makes the connection Alford's link.
#[test]
fn an_acceptor_answers_the_vector_hello_and_refuses_its_auth_as_a_replay() {
    let key = Arc::new(key());
    let hamilton = Herd::new(HerdConfig::new("Hamilton", &["Alford"], Some(Arc::clone(&key))), EventLog::discard());
    let now = Timestamp::parse("1479413884.392014450").expect("a time");
    let line = |s: &str| s.trim_end().as_bytes().to_vec();
    let mut link = Link::default();
    let reply = |herd: &Herd, link: &mut Link, l: &str| match herd.handle(&line(l), link, now).reply {
        Reply::Bytes(b) => text(b),
        Reply::Nothing => String::new(),
        Reply::Places(_) => panic!("a handshake line never asks for places"),
    };

    let answer = reply(&hamilton, &mut link, HELLO);
    assert!(
        answer.starts_with("HERD Hamilton ") && answer.ends_with('\n') && answer.len() == ANSWER.len(),
        "{answer:?}"
    );
    let parsed = Accept::parse(answer.trim_end().as_bytes()).expect("a HERD line");
    let fresh = Nonces { opener: nonces().opener, acceptor: parsed.nonce };
    assert!(key.verify(Role::Acceptor, NAMES, &fresh, &parsed.proof), "its proof covers our nonce and its own");

    assert_eq!(reply(&hamilton, &mut link, AUTH), format!("? {AUTH}"), "the vector's AUTH answers another nonce");
    assert_eq!(link.peer(), None);

    let again = reply(&hamilton, &mut Link::default(), HELLO);
    assert_ne!(again[14..14 + 2 * NONCE_BYTES], answer[14..14 + 2 * NONCE_BYTES], "a fresh nonce per PEER");
    let mut member = Link::default();
    let challenge = Accept::parse(reply(&hamilton, &mut member, HELLO).trim_end().as_bytes()).map(|a| a.nonce);
    let nonces = Nonces { opener: nonces().opener, acceptor: challenge.expect("a HERD line") };
    let proof = text(auth::auth_line(&key.proof(Role::Opener, NAMES, &nonces)));
    assert_eq!(reply(&hamilton, &mut member, &proof), "", "an accepted AUTH gets no reply");
    assert_eq!(member.peer(), Some(0), "the connection is now the link from Alford");
    let at = "AT Alford +0.000000001 kiwi +34.068930-118.445127 1479413884.392014450\n";
    assert!(matches!(hamilton.handle(&line(at), &mut member, now).reply, Reply::Nothing), "its AT is taken");
}

/// The document guests are written from shows the same lines and MAC input as this file.
#[test]
fn the_contract_prints_this_vector() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../guests/CONTRACT.md");
    let contract = std::fs::read_to_string(path).expect("guests/CONTRACT.md");
    for literal in [KEY_FILE.trim(), HELLO, ANSWER, AUTH, &OPEN_MESSAGE[..74], &OPEN_MESSAGE[74..]] {
        assert!(contract.contains(literal), "guests/CONTRACT.md does not show {literal:?}");
    }
}
