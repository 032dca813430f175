"""The proxy-herd protocol, with no I/O: lines in, replies and floods out.

herd-core's ``command``, ``time``, ``location``, ``store`` and ``service`` modules, written again
in plain Python. Nothing here awaits or touches a socket; the caller passes the time a line was
received (``time.time_ns()``), so every function can be tried with literals::

    IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450
    AT Alford +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450
    WHATSAT kiwi.cs.ucla.edu 10 5
    PEER Hamilton 3b9f0c2e5d7a41c68e0f2b4d6a8c1e3f     (a flood link's hello, see auth.py)
    ? <the line as received>

``Herd.handle`` returns what one line asks for: bytes to write, a ``Lookup`` to send to the places
backend, or nothing; and the AT line to flood to which neighbours. Times are exact integers of
nanoseconds (no floating point), so a reply's delta is exactly what herd-core prints.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from typing import NamedTuple

import auth
import places
from events import EventLog, Stats

NANOS = 1_000_000_000
MAX_RADIUS_KM = 50.0
MAX_BOUND = 20
DEFAULT_TTL_SECS = 3600
#: An eviction episode ends after this long without an eviction; the next one is logged again.
EVICTION_EPISODE_GAP_NS = NANOS


# ------------------------------------------------------------------------------------------------
# Fields: times, deltas, locations


def _digits(text: str) -> bool:
    """One or more ASCII digits (``str.isdigit`` alone would take other scripts' digits)."""
    return text.isascii() and text.isdigit()


def parse_time(text: str) -> int | None:
    """A non-negative POSIX time, ``digits[.digits]``, in nanoseconds; digits past the ninth
    decimal are ignored. Signs, exponents, letters and empty parts are refused."""
    whole, dot, frac = text.partition(".")
    if not _digits(whole) or len(whole) > 20:
        return None
    if dot and not _digits(frac):
        return None
    return int(whole) * NANOS + (int(frac[:9].ljust(9, "0")) if dot else 0)


def parse_delta(text: str) -> int | None:
    """``+S.FFFFFFFFF`` or ``-S.FFFFFFFFF``: the sign is required, as the AT line prints it."""
    if not text or text[0] not in "+-":
        return None
    magnitude = parse_time(text[1:])
    if magnitude is None:
        return None
    return -magnitude if text[0] == "-" else magnitude


def format_delta(nanos: int) -> str:
    sign = "-" if nanos < 0 else "+"
    seconds, fraction = divmod(abs(nanos), NANOS)
    return f"{sign}{seconds}.{fraction:09d}"


def _degrees(text: str, limit: float) -> bool:
    """One signed decimal number of degrees within ``limit``: sign, digits, optional fraction."""
    whole, dot, frac = text[1:].partition(".")
    if not _digits(whole) or (dot and not _digits(frac)):
        return False
    return abs(float(text)) <= limit


def split_location(text: str) -> tuple[str, str] | None:
    """An ISO 6709 ``±DD.D±DDD.D`` pair as (latitude, longitude) texts, or None. Both signs are
    required; the latitude is within ±90, the longitude within ±180."""
    if not text or text[0] not in "+-":
        return None
    signs = [i for i in (text.find("+", 1), text.find("-", 1)) if i > 0]
    if not signs:
        return None
    split = min(signs)
    latitude, longitude = text[:split], text[split:]
    if not _degrees(latitude, 90.0) or not _degrees(longitude, 180.0):
        return None
    return latitude, longitude


def _radius_km(text: str) -> float | None:
    """A positive decimal number of km (digits and points only), at most 50."""
    if not text.isascii() or not text.replace(".", "").isdigit():
        return None
    try:
        radius = float(text)
    except ValueError:
        return None
    return radius if 0.0 < radius <= MAX_RADIUS_KM else None


def _round_half_away(value: float) -> int:
    """Rust's ``f64::round`` for a non-negative value (Python's ``round`` rounds half to even)."""
    whole = int(value)
    return whole + 1 if value - whole >= 0.5 else whole


def invalid_reply(line: bytes) -> bytes:
    """``? <line>``: the answer to anything the protocol does not accept (one trailing CR dropped)."""
    return b"? " + line.removesuffix(b"\r") + b"\n"


def _fields(line: bytes) -> list[str] | None:
    """The line's fields, split on runs of spaces and tabs; None if it is not UTF-8."""
    try:
        text = line.decode()
    except UnicodeDecodeError:
        return None
    return [f for f in text.rstrip("\r").replace("\t", " ").split(" ") if f]


# ------------------------------------------------------------------------------------------------
# The store


class LocationStore:
    """Newest-wins map from client id to its last AT line, bounded by a TTL and a client cap.

    Entries are kept in store order, oldest first (an ``OrderedDict``: moving an entry to the end
    and dropping the first are O(1)), so both bounds are cheap: the TTL counts from store time,
    so expired entries are always at the front and leave as updates arrive; and a new client
    past ``max_clients`` evicts the front entry, the one stored longest ago.
    """

    IGNORED, STORED, EVICTING = range(3)

    def __init__(self, ttl_secs: int, max_clients: int) -> None:
        self._ttl = ttl_secs * NANOS
        self._max = max(1, max_clients)
        # client -> (client time, when stored, the AT line without its newline)
        self._entries: OrderedDict[str, tuple[int, int, str]] = OrderedDict()

    def update(self, client: str, time: int, line: str, now: int) -> int:
        """Stores ``line`` if its client time is newer than what is held (or that expired)."""
        entries = self._entries
        self._expire(now)
        held = entries.get(client)
        if held is not None:
            if now - held[1] <= self._ttl and held[0] >= time:
                return self.IGNORED
            entries[client] = (time, now, line)
            entries.move_to_end(client)
            return self.STORED
        evicting = len(entries) >= self._max
        if evicting:
            entries.popitem(last=False)
        entries[client] = (time, now, line)
        return self.EVICTING if evicting else self.STORED

    def get(self, client: str, now: int) -> str | None:
        held = self._entries.get(client)
        if held is None or now - held[1] > self._ttl:
            return None
        return held[2]

    def _expire(self, now: int) -> None:
        entries = self._entries
        while entries:
            _, stored_at, _ = entries[next(iter(entries))]
            if now - stored_at <= self._ttl:
                return
            entries.popitem(last=False)


# ------------------------------------------------------------------------------------------------
# The service


class Lookup(NamedTuple):
    """A WHATSAT waiting for the places backend."""

    at_line: str
    #: ``lat,long`` as the places API wants it: the client's digits, no leading ``+``.
    location: str
    radius_m: int
    bound: int


class Flood(NamedTuple):
    """An AT line (newline included) to send to the neighbours at these indices."""

    line: bytes
    to: list[int]


class Link:
    """Per-connection protocol state: is this connection a flood link, and from whom."""

    __slots__ = ("challenge", "peer", "warned")

    def __init__(self) -> None:
        #: The neighbour (index) this connection is a flood link from, once it proved membership.
        self.peer: int | None = None
        #: A handshake this server answered: (neighbour, opener's nonce, our nonce).
        self.challenge: tuple[int, bytes, bytes] | None = None
        #: An unauthenticated AT on this connection was logged already.
        self.warned = False


#: One line's outcome: bytes to write, a lookup to make, or None; and a flood, or None.
Outcome = tuple["bytes | Lookup | None", "Flood | None"]


class Service:
    """What herd and echo mode share: counters, the event log, and the answer to a long line."""

    stats: Stats
    log: EventLog

    def oversized(self, quote: bytes) -> bytes:
        """The reply to a line over the limit (the caller then closes the connection)."""
        self.stats.oversized += 1
        self.log.error("framing", "line over the limit; closing the connection")
        return invalid_reply(quote)


class Herd(Service):
    """One proxy-herd server's protocol state: herd-core's ``Herd`` (``service.rs``)."""

    def __init__(
        self,
        name: str,
        neighbours: list[str],
        key: bytes | None,
        ttl_secs: int,
        max_clients: int,
        stats: Stats,
        log: EventLog,
    ) -> None:
        self.name = name
        self.neighbours = neighbours
        self.key = key
        self.max_clients = max_clients
        self.stats = stats
        self.log = log
        self.store = LocationStore(ttl_secs, max_clients)
        self._last_eviction = 0

    def handle(self, line: bytes, link: Link, now: int) -> Outcome:
        """Handles one complete input line (without its newline) received at ``now``."""
        log, stats = self.log, self.stats
        if log.io:
            log.input(line)
        f = _fields(line)
        if not f:
            return self._invalid(line)
        verb, n = f[0], len(f)
        if verb == "IAMAT" and n == 4:
            client, location, time_text = f[1], f[2], f[3]
            time = parse_time(time_text)
            if time is None or split_location(location) is None:
                return self._invalid(line)
            at = f"AT {self.name} {format_delta(now - time)} {client} {location} {time_text}"
            flood = self._store_and_flood(client, time, at, None, self.name, now)
            reply = at.encode() + b"\n"
            if log.io:
                log.output(reply)
            stats.iamat += 1
            return reply, flood
        if verb == "WHATSAT" and n == 4:
            return self._whatsat(line, f[1], f[2], f[3], now)
        if verb == "AT" and n == 6:
            server, delta, client, location, time_text = f[1:]
            time = parse_time(time_text)
            if parse_delta(delta) is None or time is None or split_location(location) is None:
                return self._invalid(line)
            if self.key is not None and link.peer is None:
                return self._unauthenticated_at(line, link)
            # The fields as received, single-spaced: a flood carries the origin's spelling.
            at = f"AT {server} {delta} {client} {location} {time_text}"
            flood = self._store_and_flood(client, time, at, link.peer, server, now)
            if flood is not None:
                stats.floods_stored += 1
            stats.at += 1
            return None, flood
        if verb == "PEER" and n in (2, 3):
            return self._peer(line, f[1], f[2] if n == 3 else None, link)
        if verb == "AUTH" and n == 2:
            return self._auth(line, f[1], link)
        return self._invalid(line)

    def complete(self, lookup: Lookup, json_text: str | None, error: str | None) -> bytes:
        """The reply to a WHATSAT once the places backend answered (``json_text``, trimmed) or
        failed (``error``, which still gets the AT line and a JSON body in the API's error shape,
        so the client's framing holds)."""
        if error is None:
            self.stats.upstream_ok += 1
        else:
            self.stats.upstream_errors += 1
            self.log.error("places", error)
            json_text = places.error_json(error)
        reply = f"{lookup.at_line}\n{json_text}\n\n".encode()
        if self.log.io:
            self.log.output(reply)
        return reply

    # -- the parts of handle ----------------------------------------------------------------------

    def _whatsat(self, line: bytes, client: str, radius: str, bound: str, now: int) -> Outcome:
        radius_km = _radius_km(radius)
        if radius_km is None or not _digits(bound) or len(bound) > 3 or not 1 <= int(bound) <= MAX_BOUND:
            return self._invalid(line)
        at_line = self.store.get(client, now)
        if at_line is None:
            return self._invalid(line)
        # The stored line was validated when it was stored; its fifth field is the location.
        latitude, longitude = split_location(at_line.split(" ")[4]) or ("", "")
        location = f"{latitude.lstrip('+')},{longitude.lstrip('+')}"
        self.stats.whatsat += 1
        return Lookup(at_line, location, _round_half_away(radius_km * 1000.0), int(bound)), None

    def _store_and_flood(
        self, client: str, time: int, at: str, source: int | None, origin: str, now: int
    ) -> Flood | None:
        """Stores the update if newer; then floods it to every neighbour but the link it came
        from and the server that made it (storing only what is newer ends the flood)."""
        update = self.store.update(client, time, at, now)
        if update == LocationStore.IGNORED:
            return None
        if update == LocationStore.EVICTING:
            self.stats.store_evictions += 1
            last, self._last_eviction = self._last_eviction, now
            if now - last > EVICTION_EPISODE_GAP_NS:
                self.log.event("store_evicting", max_clients=self.max_clients)
        to = [i for i, n in enumerate(self.neighbours) if i != source and n != origin]
        return Flood(at.encode() + b"\n", to)

    def _peer(self, line: bytes, name: str, nonce_hex: str | None, link: Link) -> Outcome:
        """A link's hello. Keyed herd: answer with our nonce and proof (a connection gets one
        handshake: a second PEER replaces the first). Insecure herd: the connection is a link."""
        if name not in self.neighbours:
            return self._invalid(line)
        peer = self.neighbours.index(name)
        if self.key is None and nonce_hex is None:
            link.peer = peer
            self.log.event("link_up", peer=name, direction="inbound")
            self.stats.peer += 1
            return None, None
        opener_nonce = auth.decode_hex(nonce_hex, auth.NONCE_BYTES) if nonce_hex else None
        if self.key is None or opener_nonce is None:
            return self._invalid(line)
        nonce = secrets.token_bytes(auth.NONCE_BYTES)
        proof = auth.proof(self.key, auth.ACCEPT, name, self.name, opener_nonce, nonce)
        reply = auth.accept_line(self.name, nonce, proof)
        link.peer = None
        link.challenge = (peer, opener_nonce, nonce)
        if self.log.io:
            self.log.output(reply)
        self.stats.peer += 1
        return reply, None

    def _auth(self, line: bytes, proof_hex: str, link: Link) -> Outcome:
        """The opener's proof: the connection becomes the link from that neighbour, or is refused."""
        challenge, link.challenge = link.challenge, None
        if challenge is None:
            return self._invalid(line)
        peer, opener_nonce, nonce = challenge
        name = self.neighbours[peer]
        proof = auth.decode_hex(proof_hex, auth.PROOF_BYTES)
        if (
            self.key is None
            or proof is None
            or not auth.verify(self.key, auth.OPEN, name, self.name, opener_nonce, nonce, proof)
        ):
            self.stats.links_refused += 1
            reason = "the proof does not match the herd key (or answers another handshake)"
            self.log.event("link_refused", peer=name, direction="inbound", reason=reason)
            return self._invalid(line)
        link.peer = peer
        self.log.event("link_up", peer=name, direction="inbound")
        self.stats.peer += 1
        return None, None

    def _unauthenticated_at(self, line: bytes, link: Link) -> Outcome:
        """An AT from a connection that is not an authenticated link: refused like an invalid
        line, counted, logged once per connection. Nothing is stored or flooded."""
        self.stats.unauthenticated_at += 1
        if not link.warned:
            link.warned = True
            self.log.event("unauthenticated_at", line=line[:200].decode(errors="replace"))
        return self._invalid(line)

    def _invalid(self, line: bytes) -> Outcome:
        self.stats.invalid += 1
        reply = invalid_reply(line)
        if self.log.io:
            self.log.output(reply)
        return reply, None


class Echo(Service):
    """Echo mode: every line comes back unchanged, framed like the herd's."""

    def __init__(self, stats: Stats, log: EventLog) -> None:
        self.stats = stats
        self.log = log

    def handle(self, line: bytes, link: Link, now: int) -> Outcome:
        self.stats.echo += 1
        return line + b"\n", None
