"""Herd membership: the key every member holds and the link handshake that proves it.

herd-core's ``auth.rs``, byte for byte (guests/CONTRACT.md §6 has the test vector)::

    opener -> acceptor   PEER Alford 3b9f0c2e5d7a41c68e0f2b4d6a8c1e3f
    acceptor -> opener   HERD Hamilton 6d1e08a4c3b5f7e29d0c1b3a5f7e9d2c <proof("accept"): 64 hex>
    opener -> acceptor   AUTH <proof("open"): 64 hex>

    proof(role) = HMAC-SHA256(key, "herdbench link v1" || role || len || opener || len || acceptor
                                   || opener's nonce || acceptor's nonce)

The opener's side runs in links.py, the acceptor's in protocol.Herd. Proofs are compared in
constant time (``hmac.compare_digest``).
"""

from __future__ import annotations

import hmac

NONCE_BYTES = 16
PROOF_BYTES = 32
MIN_KEY_BYTES = 16
CONTEXT = b"herdbench link v1"
OPEN = b"open"
ACCEPT = b"accept"
_HEX = frozenset("0123456789abcdefABCDEF")


def load_key(path: str) -> bytes:
    """The herd key file's hex text (surrounding white space ignored), decoded; ValueError if it
    is not hex or shorter than 128 bits."""
    with open(path, encoding="utf-8") as file:
        text = file.read().strip()
    key = decode_hex(text)
    if key is None:
        raise ValueError(
            "the herd key file must hold only hex digits (e.g. 64 of them, from `harness keygen`)"
        )
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"the herd key is {len(key)} bytes; at least {MIN_KEY_BYTES} are needed")
    return key


def decode_hex(text: str, size: int | None = None) -> bytes | None:
    """Hex digits (either case) as bytes, exactly ``size`` of them if given; None otherwise.
    Stricter than ``bytes.fromhex``, which also skips white space."""
    if len(text) % 2 or not _HEX.issuperset(text):
        return None
    if size is not None and len(text) != 2 * size:
        return None
    return bytes.fromhex(text)


def proof(
    key: bytes, role: bytes, opener: str, acceptor: str, opener_nonce: bytes, acceptor_nonce: bytes
) -> bytes:
    """The proof that whoever sent it holds ``key``, for one handshake."""
    message = bytearray(CONTEXT + role)
    for name in (opener.encode(), acceptor.encode()):
        message.append(min(len(name), 255))
        message += name
    message += opener_nonce + acceptor_nonce
    return hmac.digest(key, message, "sha256")


def verify(
    key: bytes,
    role: bytes,
    opener: str,
    acceptor: str,
    opener_nonce: bytes,
    acceptor_nonce: bytes,
    given: bytes,
) -> bool:
    expected = proof(key, role, opener, acceptor, opener_nonce, acceptor_nonce)
    return hmac.compare_digest(expected, given)


def hello_line(opener: str, nonce: bytes | None) -> bytes:
    """The opener's first line (no nonce in an insecure herd)."""
    return f"PEER {opener} {nonce.hex()}\n".encode() if nonce else f"PEER {opener}\n".encode()


def accept_line(acceptor: str, nonce: bytes, acceptor_proof: bytes) -> bytes:
    """The acceptor's answer to a keyed ``PEER``."""
    return f"HERD {acceptor} {nonce.hex()} {acceptor_proof.hex()}\n".encode()


def auth_line(opener_proof: bytes) -> bytes:
    """The opener's last handshake line."""
    return f"AUTH {opener_proof.hex()}\n".encode()


def parse_accept(line: bytes) -> tuple[str, bytes, bytes] | None:
    """``HERD <name> <nonce> <proof>`` (single spaces, a trailing CR tolerated) as
    (name, nonce, proof), or None."""
    try:
        fields = line.decode().rstrip("\r").split(" ")
    except UnicodeDecodeError:
        return None
    if len(fields) != 4 or fields[0] != "HERD":
        return None
    nonce = decode_hex(fields[2], NONCE_BYTES)
    accept_proof = decode_hex(fields[3], PROOF_BYTES)
    if nonce is None or accept_proof is None:
        return None
    return fields[1], nonce, accept_proof
