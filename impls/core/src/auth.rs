//! Herd membership: a key every member holds, and the link handshake that proves it without
//! sending it.
//!
//! Only a flood link may deliver `AT` lines, and a link is a flood link only once its opener has
//! proved it holds the herd key. The handshake is a challenge–response in both directions, so
//! each side's proof covers a nonce the *other* side just chose: a recorded handshake replayed
//! later fails, because the replayed proof answers an old nonce.
//!
//! ```text
//! opener → acceptor   PEER Alford 3b9f0c2e5d7a41c68e0f2b4d6a8c1e3f
//! acceptor → opener   HERD Hamilton 6d1e08a4c3b5f7e29d0c1b3a5f7e9d2c <proof("accept"), 64 hex digits>
//! opener → acceptor   AUTH <proof("open"), 64 hex digits>
//! opener → acceptor   AT Alford +0.000213 kiwi +34.068930-118.445127 1479413884.392014450
//!                     … (the acceptor never sends again)
//!
//! proof(role) = HMAC-SHA256(key, "herdbench link v1" ‖ role ‖ len ‖ opener ‖ len ‖ acceptor
//!                                ‖ opener's nonce ‖ acceptor's nonce)
//! ```
//!
//! Nonces are 16 random bytes, names are length-prefixed (one byte) so no two (opener, acceptor)
//! pairs hash alike, and the role keeps one side's proof from being reflected as the other's.
//! The opener checks the acceptor's proof before it sends anything else, so updates never go to a
//! listener that is not a member. Proofs are compared in constant time (`hmac`'s `verify_slice`).
//! There is no encryption: the herd trusts the network path not to splice into an established TCP
//! connection, as the CS131 protocol always has.
//!
//! The link machine ([`FloodLink`](crate::policy::FloodLink)) runs the opener's side and
//! [`Herd`](crate::Herd) the acceptor's, so every style gets the handshake by driving them. A herd
//! started without a key (`--insecure-herd`) skips it: `PEER <name>` alone marks a link, and `AT`
//! lines are accepted from any connection, as in the CS131 protocol.

use std::fmt;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Shortest key accepted: 128 bits.
pub const MIN_KEY_BYTES: usize = 16;
/// Bytes of a nonce.
pub const NONCE_BYTES: usize = 16;
/// Bytes of a proof (an HMAC-SHA256 tag).
pub const PROOF_BYTES: usize = 32;
const CONTEXT: &[u8] = b"herdbench link v1";

/// The secret every member of one herd holds. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct HerdKey(Box<[u8]>);

impl fmt::Debug for HerdKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HerdKey({} bytes)", self.0.len())
    }
}

/// Why a key file was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the herd key file: {0}")]
    Read(#[from] std::io::Error),
    #[error("the herd key file must hold only hex digits (e.g. 64 of them, from `harness keygen`)")]
    NotHex,
    #[error("the herd key is {0} bytes; at least {MIN_KEY_BYTES} (32 hex digits) are needed")]
    TooShort(usize),
}

impl HerdKey {
    /// A fresh random 256-bit key.
    pub fn generate() -> Self {
        let mut key = [0_u8; 32];
        fill_random(&mut key);
        Self(key.into())
    }

    /// Parses the hex text of a key file (surrounding white space ignored).
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let key = decode_hex(text.trim()).ok_or(KeyError::NotHex)?;
        if key.len() < MIN_KEY_BYTES {
            return Err(KeyError::TooShort(key.len()));
        }
        Ok(Self(key.into()))
    }

    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        Self::from_hex(&std::fs::read_to_string(path)?)
    }

    /// The key as a key file holds it: lower-case hex and a newline.
    pub fn to_hex(&self) -> String {
        let mut text = encode_hex(&self.0);
        text.push('\n');
        text
    }

    /// The proof that whoever sent it holds this key, for one handshake.
    pub fn proof(&self, role: Role, names: Names<'_>, nonces: &Nonces) -> [u8; PROOF_BYTES] {
        self.mac(role, names, nonces).finalize().into_bytes().into()
    }

    /// Whether `proof` is this key's proof for the handshake (constant-time comparison).
    pub fn verify(&self, role: Role, names: Names<'_>, nonces: &Nonces, proof: &[u8]) -> bool {
        self.mac(role, names, nonces).verify_slice(proof).is_ok()
    }

    fn mac(&self, role: Role, names: Names<'_>, nonces: &Nonces) -> Hmac<Sha256> {
        // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!());
        mac.update(CONTEXT);
        mac.update(role.label());
        for name in [names.opener, names.acceptor] {
            // Names are herd names from the command line: short. Longer ones are cut to 255
            // bytes in the prefix and still hashed whole, which keeps the encoding unambiguous
            // for every name a herd can have.
            mac.update(&[u8::try_from(name.len()).unwrap_or(u8::MAX)]);
            mac.update(name.as_bytes());
        }
        mac.update(&nonces.opener);
        mac.update(&nonces.acceptor);
        mac
    }
}

/// Which side a proof comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Opener,
    Acceptor,
}

impl Role {
    fn label(self) -> &'static [u8] {
        match self {
            Role::Opener => b"open",
            Role::Acceptor => b"accept",
        }
    }
}

/// The two members of a handshake.
#[derive(Debug, Clone, Copy)]
pub struct Names<'a> {
    pub opener: &'a str,
    pub acceptor: &'a str,
}

/// The two nonces of a handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nonces {
    pub opener: [u8; NONCE_BYTES],
    pub acceptor: [u8; NONCE_BYTES],
}

/// A fresh random nonce.
pub fn nonce() -> [u8; NONCE_BYTES] {
    let mut n = [0_u8; NONCE_BYTES];
    fill_random(&mut n);
    n
}

/// Fills `buf` from the operating system's generator. A server that cannot get randomness must not
/// go on pretending to authenticate: it stops here (this never happens on Linux past early boot).
fn fill_random(buf: &mut [u8]) {
    if let Err(e) = getrandom::fill(buf) {
        panic!("no randomness from the operating system: {e}");
    }
}

/// The acceptor's answer to a `PEER` line with a nonce.
pub fn accept_line(acceptor: &str, nonce: &[u8; NONCE_BYTES], proof: &[u8; PROOF_BYTES]) -> Vec<u8> {
    format!("HERD {acceptor} {} {}\n", encode_hex(nonce), encode_hex(proof)).into_bytes()
}

/// The length of [`auth_line`]'s line: `AUTH`, a space, the proof in hex and the newline.
pub const AUTH_LINE_BYTES: usize = 5 + 2 * PROOF_BYTES + 1;

/// The opener's last handshake line.
pub fn auth_line(proof: &[u8; PROOF_BYTES]) -> Vec<u8> {
    format!("AUTH {}\n", encode_hex(proof)).into_bytes()
}

/// The opener's first line.
pub fn hello_line(opener: &str, nonce: Option<&[u8; NONCE_BYTES]>) -> Vec<u8> {
    match nonce {
        Some(nonce) => format!("PEER {opener} {}\n", encode_hex(nonce)).into_bytes(),
        None => format!("PEER {opener}\n").into_bytes(),
    }
}

/// A parsed `HERD <name> <nonce> <proof>` line (without its newline).
#[derive(Debug, PartialEq, Eq)]
pub struct Accept<'a> {
    pub name: &'a str,
    pub nonce: [u8; NONCE_BYTES],
    pub proof: [u8; PROOF_BYTES],
}

impl<'a> Accept<'a> {
    pub fn parse(line: &'a [u8]) -> Option<Self> {
        let text = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
        let mut f = text.split(' ');
        let (Some("HERD"), Some(name), Some(nonce), Some(proof), None) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            return None;
        };
        Some(Self { name, nonce: decode_fixed(nonce)?, proof: decode_fixed(proof)? })
    }
}

/// Decodes exactly `N` bytes of hex.
pub fn decode_fixed<const N: usize>(hex: &str) -> Option<[u8; N]> {
    decode_hex(hex)?.try_into().ok()
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    hex.as_bytes().chunks(2).map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?)).collect()
}

fn encode_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        text.push(DIGITS[usize::from(b >> 4)] as char);
        text.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_auth_lines_length_is_its_constant() {
        assert_eq!(auth_line(&[7; PROOF_BYTES]).len(), AUTH_LINE_BYTES);
    }

    const NAMES: Names<'static> = Names { opener: "Alford", acceptor: "Hamilton" };
    const NONCES: Nonces = Nonces { opener: [1; NONCE_BYTES], acceptor: [2; NONCE_BYTES] };

    fn key(hex: &str) -> HerdKey {
        HerdKey::from_hex(hex).expect("valid key")
    }

    #[test]
    fn proofs_bind_key_role_names_and_both_nonces() {
        let k = key("00112233445566778899aabbccddeeff");
        let p = k.proof(Role::Opener, NAMES, &NONCES);
        assert!(k.verify(Role::Opener, NAMES, &NONCES, &p));
        assert!(!k.verify(Role::Acceptor, NAMES, &NONCES, &p), "not reflectable as the other side's");
        let other_key = key("00112233445566778899aabbccddeefe");
        assert!(!other_key.verify(Role::Opener, NAMES, &NONCES, &p), "another herd's key");
        let swapped = Names { opener: "Hamilton", acceptor: "Alford" };
        assert!(!k.verify(Role::Opener, swapped, &NONCES, &p));
        let glued = Names { opener: "Alfor", acceptor: "dHamilton" };
        assert!(!k.verify(Role::Opener, glued, &NONCES, &p), "names are length-prefixed");
        let replayed = Nonces { acceptor: [3; NONCE_BYTES], ..NONCES };
        assert!(!k.verify(Role::Opener, NAMES, &replayed, &p), "an old proof answers an old nonce");
        assert!(!k.verify(Role::Opener, NAMES, &NONCES, &p[..31]), "truncated");
    }

    #[test]
    fn proof_is_hmac_sha256_over_the_documented_message() {
        // The same MAC computed by hand from the module docs' layout.
        let k = key("000102030405060708090a0b0c0d0e0f");
        let mut msg = b"herdbench link v1open".to_vec();
        msg.extend_from_slice(b"\x06Alford\x08Hamilton");
        msg.extend_from_slice(&[1; 16]);
        msg.extend_from_slice(&[2; 16]);
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&k.0).expect("any length");
        mac.update(&msg);
        let expected: [u8; 32] = mac.finalize().into_bytes().into();
        assert_eq!(k.proof(Role::Opener, NAMES, &NONCES), expected);
    }

    #[test]
    fn key_files_are_hex_of_at_least_128_bits_and_never_printed() {
        assert!(matches!(HerdKey::from_hex("abc"), Err(KeyError::NotHex)));
        assert!(matches!(HerdKey::from_hex("zz112233445566778899aabbccddeeff"), Err(KeyError::NotHex)));
        assert!(matches!(HerdKey::from_hex("00112233"), Err(KeyError::TooShort(4))));
        let k = HerdKey::generate();
        assert_eq!(HerdKey::from_hex(&k.to_hex()).expect("round trip"), k);
        assert_eq!(format!("{k:?}"), "HerdKey(32 bytes)");
        assert_ne!(HerdKey::generate(), k, "fresh keys differ");
    }

    #[test]
    fn handshake_lines_round_trip() {
        let hello = hello_line("Alford", Some(&[0xab; 16]));
        assert_eq!(hello, format!("PEER Alford {}\n", "ab".repeat(16)).into_bytes());
        assert_eq!(hello_line("Alford", None), b"PEER Alford\n");
        let line = accept_line("Hamilton", &[7; 16], &[9; 32]);
        let parsed = Accept::parse(line.strip_suffix(b"\n").expect("newline")).expect("parses");
        assert_eq!(parsed, Accept { name: "Hamilton", nonce: [7; 16], proof: [9; 32] });
        assert_eq!(auth_line(&[0x10; 32]), format!("AUTH {}\n", "10".repeat(32)).into_bytes());
        for bad in
            [&b"HERD Hamilton 07"[..], b"HERD Hamilton", b"HELLO x y z", &line[..line.len() - 3], b"HERD a b c d"]
        {
            assert_eq!(Accept::parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
