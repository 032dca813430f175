"""The proxy-herd protocol with no I/O: what herd-core (impls/core) is to the Rust styles.

Parsing and formatting of the lines, exact timestamps and coordinates, the newest-wins
location store, the flood decision, the link handshake's proofs and the places JSON
trimming. Nothing here touches a socket, a clock or the reactor: callers pass ``now``
(nanoseconds since the epoch) and get bytes back, so every rule can be read beside its
Rust original (the file named in each section's comment).

Wire shapes::

    IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450
    AT Alford +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450
    WHATSAT kiwi.cs.ucla.edu 10 5
    PEER Hamilton 3b9f0c2e5d7a41c68e0f2b4d6a8c1e3f            (opener → acceptor)
    HERD Alford <nonce, 32 hex> <proof("accept"), 64 hex>     (acceptor → opener)
    AUTH <proof("open"), 64 hex>                             (opener → acceptor)
    ? <the line as received>
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from json.encoder import encode_basestring

# --- policy/mod.rs: every bound a server keeps, one value (durations in seconds) ------------


@dataclass(frozen=True, slots=True)
class Limits:
    """herd-core's ``Limits``, filled from the command line; the defaults are herd-core's."""

    max_line: int = 64 * 1024
    link_retry: float = 0.1
    link_connect_timeout: float = 0.5
    link_queue_bytes: int = 1024 * 1024
    link_write_stall: float = 5.0
    upstream_timeout: float = 3.0
    upstream_idle_max: int = 256
    flush_at: int = 64 * 1024
    pause_output: int = 256 * 1024
    max_output: int = 4 * 1024 * 1024
    write_stall: float = 5.0
    max_in_flight: int = 64
    max_clients: int = 4_000_000
    max_connections: int = 16_000
    accept_backoff: float = 0.01
    accept_backoff_max: float = 1.0


def rust_duration(seconds: float) -> str:
    """A duration as Rust's ``Debug`` prints it in herd-core's messages: ``5s``, ``1.5s``, ``500ms``."""
    ms = round(seconds * 1000)
    if ms < 1000:
        return f"{ms}ms"
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms / 1000:g}s"


# --- time.rs: POSIX times in integer nanoseconds, parsed and printed without floats ---------

NANOS = 1_000_000_000
_TIME = re.compile(r"[0-9]{1,20}(?:\.[0-9]+)?")


def parse_time(text: str) -> int | None:
    """``digits[.digits]`` → nanoseconds; fraction digits past the ninth are ignored."""
    if not _TIME.fullmatch(text):
        return None
    whole, _, frac = text.partition(".")
    return int(whole) * NANOS + int((frac[:9]).ljust(9, "0"))


def parse_delta(text: str) -> int | None:
    """``+S.F`` or ``-S.F`` (the sign is required, as the AT line prints it)."""
    if text[:1] not in ("+", "-"):
        return None
    magnitude = parse_time(text[1:])
    if magnitude is None:
        return None
    return -magnitude if text[0] == "-" else magnitude


def format_delta(nanos: int) -> str:
    """``+0.263873386`` / ``-1.500000000``: signed, nine decimals."""
    sign = "-" if nanos < 0 else "+"
    seconds, fraction = divmod(abs(nanos), NANOS)
    return f"{sign}{seconds}.{fraction:09d}"


# --- location.rs: ISO 6709 ``±DD.D±DDD.D``, kept as spelled ---------------------------------

_LOCATION = re.compile(r"([+-][0-9]+(?:\.[0-9]+)?)([+-][0-9]+(?:\.[0-9]+)?)")


def parse_location(text: str) -> tuple[str, str] | None:
    """``(latitude, longitude)`` as spelled, or None: both signs required, ±90 / ±180."""
    m = _LOCATION.fullmatch(text)
    if m is None or abs(float(m[1])) > 90.0 or abs(float(m[2])) > 180.0:
        return None
    return m[1], m[2]


# --- command.rs: the lines -------------------------------------------------------------------

MAX_RADIUS_KM = 50.0
MAX_BOUND = 20
_FIELD_SEPARATORS = re.compile("[ \t]+")
_RADIUS = re.compile(r"[0-9.]+")
_BOUND = re.compile(r"[0-9]{1,3}")


@dataclass(slots=True)
class PlacesQuery:
    """One WHATSAT's upstream question, and the stored AT line its answer starts with."""

    at_line: str
    location: str  # ``lat,long`` as the places API wants it, the client's digits
    radius_m: int
    bound: int


def _fields(line: bytes) -> list[str] | None:
    """Fields split on runs of spaces and tabs (a trailing CR is white space); None if not UTF-8."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return [f for f in _FIELD_SEPARATORS.split(text.rstrip("\r")) if f]


def invalid_reply(line: bytes) -> bytes:
    """``? <line>\\n``: the answer to anything the protocol does not accept."""
    return b"? " + line.removesuffix(b"\r") + b"\n"


def _round_half_away(x: float) -> int:
    """Rust's ``f64::round`` for a positive x (Python's round() rounds halves to even)."""
    whole = math.floor(x)
    return whole + 1 if x - whole >= 0.5 else whole


def parse_radius(text: str) -> float | None:
    if not _RADIUS.fullmatch(text):
        return None
    try:
        radius = float(text)
    except ValueError:  # "." or "1.2.3"
        return None
    return radius if 0.0 < radius <= MAX_RADIUS_KM else None


def parse_bound(text: str) -> int | None:
    if not _BOUND.fullmatch(text):
        return None
    bound = int(text)
    return bound if 1 <= bound <= MAX_BOUND else None


# --- auth.rs: the link handshake ----------------------------------------------------------------

NONCE_BYTES = 16
PROOF_BYTES = 32
MIN_KEY_BYTES = 16
_CONTEXT = b"herdbench link v1"
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")


def decode_hex(text: str, size: int | None = None) -> bytes | None:
    """Hex digits only (either case), an even count, exactly ``size`` bytes if given."""
    if not _HEX.fullmatch(text) or (size is not None and len(text) != 2 * size):
        return None
    return bytes.fromhex(text)


def load_key(path: str) -> bytes:
    """A herd key file: hex text (surrounding white space ignored), at least 128 bits."""
    with open(path, encoding="utf-8") as f:
        key = decode_hex(f.read().strip())
    if key is None:
        raise ValueError(
            "the herd key file must hold only hex digits (e.g. 64 of them, from `harness keygen`)"
        )
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"the herd key is {len(key)} bytes; at least {MIN_KEY_BYTES} are needed")
    return key


def proof(key: bytes, role: bytes, opener: str, acceptor: str, nonces: tuple[bytes, bytes]) -> bytes:
    """HMAC-SHA256(key, context ‖ role ‖ len ‖ opener ‖ len ‖ acceptor ‖ opener's ‖ acceptor's nonce).

    ``role`` is ``b"open"`` or ``b"accept"``; names are length-prefixed (one byte, capped at 255).
    """
    mac = hmac.new(key, _CONTEXT + role, hashlib.sha256)
    for name in (opener.encode(), acceptor.encode()):
        mac.update(bytes([min(len(name), 255)]) + name)
    mac.update(nonces[0] + nonces[1])
    return mac.digest()


def hello_line(me: str, nonce: bytes | None) -> bytes:
    """The opener's first line: ``PEER <me> <nonce>`` (keyed) or ``PEER <me>`` (insecure)."""
    return f"PEER {me} {nonce.hex()}\n".encode() if nonce else f"PEER {me}\n".encode()


def parse_accept(line: bytes) -> tuple[str, bytes, bytes] | None:
    """``HERD <name> <nonce> <proof>`` (single spaces, as sent) → (name, nonce, proof)."""
    try:
        parts = line.decode("utf-8").rstrip("\r").split(" ")
    except UnicodeDecodeError:
        return None
    if len(parts) != 4 or parts[0] != "HERD":
        return None
    nonce, tag = decode_hex(parts[2], NONCE_BYTES), decode_hex(parts[3], PROOF_BYTES)
    if nonce is None or tag is None:
        return None
    return parts[1], nonce, tag


# --- store.rs: newest wins, a TTL, and a cap on clients ------------------------------------------

STORE_SHARDS = 16  # as herd-core's Herd: the cap is split evenly, so eviction starts alike


class LocationStore:
    """The newest AT line per client, in store order (oldest first), so both bounds are cheap:
    expired entries are always at the front, and at the cap the front entry is evicted. An
    entry is the line itself (the WHATSAT reply's first line), its client time and when it was
    stored, as herd-core's."""

    __slots__ = ("_entries", "_max", "_ttl")

    def __init__(self, ttl_secs: int, max_clients: int) -> None:
        # client → (AT line, client time, stored at); an OrderedDict keeps store order.
        self._entries: OrderedDict[str, tuple[str, int, int]] = OrderedDict()
        self._ttl = ttl_secs * NANOS
        self._max = max(1, max_clients)

    def update(self, client: str, line: str, time: int, now: int) -> str:
        """``"ignored"`` (not newer), ``"stored"``, or ``"evicting"`` (stored, the oldest dropped)."""
        entries = self._entries
        while entries:  # drop what expired (all at the front)
            if now - next(iter(entries.values()))[2] <= self._ttl:
                break
            entries.popitem(last=False)
        held = entries.get(client)
        if held is not None:
            if held[1] >= time:  # (an expired one was dropped above)
                return "ignored"
            entries[client] = (line, time, now)
            entries.move_to_end(client)
            return "stored"
        evicting = len(entries) >= self._max
        if evicting:
            entries.popitem(last=False)
        entries[client] = (line, time, now)
        return "evicting" if evicting else "stored"

    def get(self, client: str, now: int) -> str | None:
        """The client's live AT line."""
        held = self._entries.get(client)
        if held is None or now - held[2] > self._ttl:
            return None
        return held[0]


def _shard(client: str) -> int:
    """The client's shard. herd-core hashes ids with FNV-1a; any good hash spreads them alike,
    and CPython's own string hash is computed in C and cached on the string."""
    return hash(client) % STORE_SHARDS


# --- places.rs: the JSON as serde_json's pretty printer writes it --------------------------------

MAX_RESPONSE = 4 * 1024 * 1024


class PlacesError(Exception):
    """Why an upstream exchange failed; the message is herd-core's ``UpstreamError`` text."""


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def trim_places(body: bytes, bound: int) -> str:
    """The places JSON for a reply: ``results`` cut to ``bound``, pretty-printed, no blank lines."""
    try:
        doc = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError included
        raise PlacesError(f"malformed places JSON: {e}") from None
    if not isinstance(doc, dict):
        raise PlacesError("malformed places JSON: not an object")
    results = doc.get("results")
    if "results" in doc and not isinstance(results, list):
        raise PlacesError("malformed places JSON: results is not an array")
    if results is not None:
        del results[bound:]
    return pretty_json(doc)


def error_places(message: str) -> str:
    """The JSON sent when the upstream failed: the Nearby Search error shape."""
    doc = {"html_attributions": [], "results": [], "status": "UNKNOWN_ERROR", "error_message": message}
    return pretty_json(doc)


def whatsat_reply(at_line: str, places_json: str) -> bytes:
    return f"{at_line}\n{places_json}\n\n".encode()


def pretty_json(value: object, indent: str = "\n") -> str:
    """serde_json's ``to_string_pretty``: two-space indent, ``"key": value``, ``[]`` and ``{}``
    when empty, UTF-8 unescaped, and floats the way ryu prints them (``1e-7``, ``100.0``).

    This runs for every WHATSAT answer on the reactor thread, so it is written for CPython:
    dispatch on ``type`` (JSON gives exact types), strings through ``json``'s C escaper (not
    ``json.dumps``, which builds an encoder per call), list comprehensions, and ``indent``
    carrying its newline, so the output has no blank lines and needs no clean-up pass. The
    recursive, ``json.dumps``-per-string version cost ~0.9 ms per 20-place answer, which at
    herd-query's rate kept the reactor busy enough to queue WHATSATs for seconds."""
    kind = type(value)
    if kind is str:
        return _string(value)
    if kind is dict:
        if not value:
            return "{}"
        inner = indent + "  "
        return (
            "{"
            + ",".join([f"{inner}{_string(k)}: {pretty_json(v, inner)}" for k, v in value.items()])
            + indent
            + "}"
        )
    if kind is list:
        if not value:
            return "[]"
        inner = indent + "  "
        return "[" + ",".join([inner + pretty_json(v, inner) for v in value]) + indent + "]"
    if kind is float:
        return _float(value)
    if kind is int:
        # serde_json holds integers in i64/u64; a larger one was parsed as a float.
        return str(value) if -(2**63) <= value < 2**64 else _float(float(value))
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    return _float(float(value))  # an int or float subclass (not from json.loads)


_string = encode_basestring  # json's C escaper: quotes, escapes, leaves non-ASCII as is


def _float(x: float) -> str:
    """ryu's formatting of the shortest round-trip digits (which Python's repr also finds)."""
    text = repr(x)
    if "e" not in text and "n" not in text:  # plain, finite: 1e-4 <= |x| < 1e16, or 0.0, as ryu
        return text
    if not math.isfinite(x):
        return "null"
    if x == 0.0:
        return "-0.0" if math.copysign(1.0, x) < 0 else "0.0"
    # repr gives "123.45", "0.001", "1e-07" or "1.5e+16": value = digits × 10^k.
    mantissa, _, exp = repr(abs(x)).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    k = int(exp or 0) - len(frac)
    stripped = digits.rstrip("0")  # trailing zeros go into the exponent, as ryu keeps them
    k += len(digits) - len(stripped)
    digits, n = stripped, len(stripped)
    kk = n + k  # 10^(kk−1) ≤ x < 10^kk
    sign = "-" if x < 0 else ""
    if k >= 0 and kk <= 16:
        text = digits + "0" * k + ".0"
    elif 0 < kk <= 16:
        text = digits[:kk] + "." + digits[kk:]
    elif -5 < kk <= 0:
        text = "0." + "0" * -kk + digits
    elif n == 1:
        text = f"{digits}e{kk - 1}"
    else:
        text = f"{digits[0]}.{digits[1:]}e{kk - 1}"
    return sign + text


# --- service.rs: the herd and echo services ------------------------------------------------------


@dataclass(slots=True)
class Link:
    """Per-connection protocol state: which neighbour this connection is a flood link from, once
    proven; a handshake answered whose AUTH is awaited; whether a forged AT was logged already."""

    peer: int | None = None
    challenge: tuple[int, tuple[bytes, bytes]] | None = None
    warned: bool = False


@dataclass(slots=True)
class Flood:
    """An AT line (newline included) for the neighbours at these indices."""

    line: bytes
    to: list[int]


#: herd-core's counters but ``upstream_stale_retries``: Twisted's pool retries a stale kept-alive
#: connection on its own and does not say so, and a counter not kept is left out, not written 0.
COUNTERS = [
    "iamat",
    "whatsat",
    "at",
    "peer",
    "invalid",
    "echo",
    "oversized",
    "floods_stored",
    "floods_out",
    "floods_dropped",
    "upstream_ok",
    "upstream_errors",
    "upstream_connects",
    "connections",
    "connections_refused",
    "store_evictions",
    "unauthenticated_at",
    "links_refused",
]

OVERSIZED_QUOTE = 64


def new_stats() -> dict[str, int]:
    """herd-core's counters (stats.rs), by name: one dict every part of a server bumps."""
    return dict.fromkeys(COUNTERS, 0)


@dataclass
class Herd:
    """One proxy-herd server's protocol state; ``handle`` is herd-core's ``Herd::handle``."""

    name: str
    neighbours: list[str]
    key: bytes | None  # None: an insecure herd (no handshake; AT accepted from anyone)
    ttl_secs: int
    max_clients: int
    stats: dict[str, int]
    log: object  # events.EventLog
    _stores: list[LocationStore] = field(init=False)
    _last_eviction: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        per_shard = -(-self.max_clients // STORE_SHARDS)
        self._stores = [LocationStore(self.ttl_secs, per_shard) for _ in range(STORE_SHARDS)]

    def handle(self, line: bytes, link: Link, now: int) -> tuple[bytes | PlacesQuery | None, Flood | None]:
        """One input line received at ``now``: the reply (bytes, a places query to answer, or
        None) and the flood it causes, if any."""
        log, stats = self.log, self.stats
        log.input(line)
        f = _fields(line)
        verb, n = (f[0], len(f)) if f else ("", 0)
        if verb == "IAMAT" and n == 4:
            location, when = parse_location(f[2]), parse_time(f[3])
            if location is None or when is None:
                return self._invalid(line), None
            at = f"AT {self.name} {format_delta(now - when)} {f[1]} {f[2]} {f[3]}"
            flood = self._store(self.name, f[1], at, when, None, now)
            reply = at.encode() + b"\n"
            log.output(reply)
            stats["iamat"] += 1
            return reply, flood
        if verb == "AT" and n == 6:
            return self._at(line, f, link, now)
        if verb == "WHATSAT" and n == 4:
            radius, bound = parse_radius(f[2]), parse_bound(f[3])
            if radius is None or bound is None:
                return self._invalid(line), None
            at = self._stores[_shard(f[1])].get(f[1], now)
            if at is None:
                return self._invalid(line), None
            # The stored line was checked when it was stored; its fifth field is the location.
            latitude, longitude = parse_location(at.split(" ")[4]) or ("", "")
            query_location = f"{latitude.lstrip('+')},{longitude.lstrip('+')}"
            stats["whatsat"] += 1
            return PlacesQuery(at, query_location, _round_half_away(radius * 1000), bound), None
        if verb == "PEER" and n in (2, 3):
            return self._peer(line, f, link), None
        if verb == "AUTH" and n == 2:
            return self._auth(line, f[1], link), None
        return self._invalid(line), None

    def oversized(self, quote: bytes) -> bytes:
        """The reply to a line over the limit (the caller then closes the connection)."""
        self.stats["oversized"] += 1
        self.log.error("framing", "line over the limit; closing the connection")
        return invalid_reply(quote)

    def _invalid(self, line: bytes) -> bytes:
        self.stats["invalid"] += 1
        reply = invalid_reply(line)
        self.log.output(reply)
        return reply

    def _store(
        self, origin: str, client: str, at: str, time: int, link: int | None, now: int
    ) -> Flood | None:
        """Stores the AT line if newer; then floods it to every neighbour but the ``link`` it came
        over and its ``origin`` server. Only what was stored is flooded: that ends a flood."""
        update = self._stores[_shard(client)].update(client, at, time, now)
        if update == "ignored":
            return None
        if update == "evicting":
            self.stats["store_evictions"] += 1
            if now - self._last_eviction > NANOS:  # one log line per episode
                self.log.event("store_evicting", max_clients=self.max_clients)
            self._last_eviction = now
        to = [i for i, neighbour in enumerate(self.neighbours) if i != link and neighbour != origin]
        return Flood(at.encode() + b"\n", to)

    def _at(self, line: bytes, f: list[str], link: Link, now: int) -> tuple[bytes | None, Flood | None]:
        delta, location, when = parse_delta(f[2]), parse_location(f[4]), parse_time(f[5])
        if delta is None or location is None or when is None:
            return self._invalid(line), None
        if self.key is not None and link.peer is None:
            # Not over an authenticated link: refused, counted, logged once per connection.
            self.stats["unauthenticated_at"] += 1
            if not link.warned:
                link.warned = True
                self.log.event("unauthenticated_at", line=line[:200].decode("utf-8", "replace"))
            return self._invalid(line), None
        # The fields as received, single-spaced: a flood carries the origin's spelling unchanged.
        at = f"AT {f[1]} {f[2]} {f[3]} {f[4]} {f[5]}"
        flood = self._store(f[1], f[3], at, when, link.peer, now)
        if flood is not None:
            self.stats["floods_stored"] += 1
        self.stats["at"] += 1
        return None, flood

    def _peer(self, line: bytes, f: list[str], link: Link) -> bytes | None:
        try:
            peer = self.neighbours.index(f[1])
        except ValueError:
            return self._invalid(line)
        if self.key is None and len(f) == 2:
            link.peer = peer
            self.log.event("link_up", peer=f[1], direction="inbound")
            self.stats["peer"] += 1
            return None
        opener_nonce = decode_hex(f[2], NONCE_BYTES) if len(f) == 3 else None
        if self.key is None or opener_nonce is None:
            return self._invalid(line)  # a keyed herd needs the nonce; an insecure one can't check it
        # Answer with our nonce and proof; the opener's AUTH must answer both nonces. A second
        # PEER on one connection replaces the first handshake.
        nonces = (opener_nonce, os.urandom(NONCE_BYTES))
        tag = proof(self.key, b"accept", f[1], self.name, nonces)
        link.peer, link.challenge = None, (peer, nonces)
        reply = f"HERD {self.name} {nonces[1].hex()} {tag.hex()}\n".encode()
        self.log.output(reply)
        self.stats["peer"] += 1
        return reply

    def _auth(self, line: bytes, proof_hex: str, link: Link) -> bytes | None:
        if link.challenge is None:
            return self._invalid(line)
        (peer, nonces), link.challenge = link.challenge, None
        name = self.neighbours[peer]
        tag = decode_hex(proof_hex, PROOF_BYTES)
        expected = proof(self.key, b"open", name, self.name, nonces) if self.key else None
        if tag is None or expected is None or not hmac.compare_digest(tag, expected):
            self.stats["links_refused"] += 1
            reason = "the proof does not match the herd key (or answers another handshake)"
            self.log.event("link_refused", peer=name, direction="inbound", reason=reason)
            return self._invalid(line)
        link.peer = peer
        self.log.event("link_up", peer=name, direction="inbound")
        self.stats["peer"] += 1
        return None

    def complete(self, query: PlacesQuery, places_json: str | None, error: str | None) -> bytes:
        """The WHATSAT reply once upstream answered (``places_json``) or failed (``error``):
        a failure still gets the AT line and a JSON body in the API's error shape."""
        if error is None:
            self.stats["upstream_ok"] += 1
        else:
            self.stats["upstream_errors"] += 1
            self.log.error("places", error)
            places_json = error_places(error)
        reply = whatsat_reply(query.at_line, places_json)
        self.log.output(reply)
        return reply


@dataclass
class Echo:
    """Echo mode: every line comes back unchanged, framed like the herd's."""

    stats: dict[str, int]
    log: object

    def handle(self, line: bytes, link: Link, now: int) -> tuple[bytes, None]:
        self.stats["echo"] += 1
        return line + b"\n", None

    def oversized(self, quote: bytes) -> bytes:
        self.stats["oversized"] += 1
        self.log.error("framing", "line over the limit; closing the connection")
        return invalid_reply(quote)
