"""The places backend: a small keep-alive HTTP/1.1 client over asyncio streams, and its codec.

::

    fetch(lookup) ── asyncio.timeout(--upstream-timeout) ─────────────────────────────────────┐
      exchange: an idle kept-alive connection (last returned, first used) or open_connection  │
        write the GET ── read ── decode_response: partial → read again                        │
                                                complete → back to the pool if keep-alive      │
        closed before any byte of the answer, on a reused connection → once more, fresh        │
      the deadline passed: the connection is aborted, never pooled: "upstream timed out" ◄────┘

herd-core's ``places.rs`` (request, response decoder, JSON trimming) and ``policy/upstream.rs``
(``PlacesCall``, ``PlacesPool``): one deadline for the whole exchange, connecting and the retry
included; a reused connection that fails before any byte of the answer is retried once on a
fresh one (the request never reached the backend); a connection goes back to the pool only if
the response allowed keep-alive and nothing followed it; at most ``--upstream-idle-max`` idle.

Why not a library: the standard library's only HTTP client (``http.client``) blocks, and the
asyncio ecosystem's (aiohttp, httpx) would be the guest's only third-party dependency for one GET
to one backend. The exchange is a request line, two headers, and a response with Content-Length
or chunked; written on asyncio streams it is the hundred lines below, and every rule of the
policy (the one retry, the pool's order and bound, keep-or-close) is visible instead of
configured. aiohttp is what an expert would reach for in a service that talks to many backends.
"""

from __future__ import annotations

import asyncio
import json
import re
from json.encoder import encode_basestring as _string

from events import os_error_text

NEARBY_PATH = "/maps/api/place/nearbysearch/json"
#: Upper bound on a response, headers and body, so a broken backend cannot eat memory.
MAX_RESPONSE = 4 * 1024 * 1024
#: httparse's header array in herd-core holds this many; more is a malformed response.
MAX_HEADERS = 32
READ_SIZE = 64 * 1024

_HEAD_END = re.compile(rb"\r?\n\r?\n")
_STATUS_LINE = re.compile(rb"HTTP/1\.([0-9]) ([0-9]{3})(?: [^\r\n]*)?\r?")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEX = frozenset(b"0123456789abcdefABCDEF")


class UpstreamError(Exception):
    """Why an exchange failed; its text is herd-core's ``UpstreamError`` display, which goes into
    the error JSON a client gets."""


def _http_error(message: str) -> UpstreamError:
    return UpstreamError(f"malformed HTTP response: {message}")


def encode_request(location: str, radius_m: int, host: str) -> bytes:
    return (
        f"GET {NEARBY_PATH}?location={location}&radius={radius_m}&key=herdbench HTTP/1.1\r\n"
        f"Host: {host}\r\nConnection: keep-alive\r\n\r\n"
    ).encode()


def decode_response(data: bytes | bytearray) -> tuple[int, bytes, int, bool] | None:
    """One response from the start of ``data``: (status, body, bytes used, keep-alive), or None
    while it is incomplete. Raises UpstreamError when it cannot be one."""
    head_end = _HEAD_END.search(data)
    if head_end is None:
        if not data[:7] == b"HTTP/1."[: len(data)]:
            raise _http_error("invalid HTTP version")
        return _too_large_or_partial(data)
    head_len = head_end.end()
    lines = bytes(data[: head_end.start()]).split(b"\n")
    status = _STATUS_LINE.fullmatch(lines[0])
    if status is None:
        raise _http_error("invalid response status")
    if len(lines) - 1 > MAX_HEADERS:
        raise _http_error("too many headers")
    keep_alive = status[1] == b"1"
    content_length = None
    chunked = False
    for raw in lines[1:]:
        name, colon, value = raw.rstrip(b"\r").partition(b":")
        if not colon or _TOKEN.fullmatch(name) is None:
            raise _http_error("invalid header name")
        name, value = name.lower(), value.strip(b" \t")
        if name == b"content-length":
            if not value.isdigit():
                raise _http_error("bad Content-Length")
            content_length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            keep_alive = value.lower() != b"close"
    if chunked:
        done = _decode_chunked(data, head_len)
        if done is None:
            return _too_large_or_partial(data)
        body, used = done
    else:
        if content_length is None:
            raise _http_error("no Content-Length and not chunked")
        if content_length > MAX_RESPONSE - head_len:
            raise UpstreamError(f"response larger than {MAX_RESPONSE} bytes")
        if len(data) - head_len < content_length:
            return None
        body, used = bytes(data[head_len : head_len + content_length]), head_len + content_length
    return int(status[2]), body, used, keep_alive


def _too_large_or_partial(data: bytes | bytearray) -> None:
    if len(data) > MAX_RESPONSE:
        raise UpstreamError(f"response larger than {MAX_RESPONSE} bytes")


def _decode_chunked(data: bytes | bytearray, start: int) -> tuple[bytes, int] | None:
    """A chunked body from ``start``: (body, bytes used up to the end) once the last chunk and
    the trailers are in, None before."""
    body = bytearray()
    pos = start
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            return None
        size_text = bytes(data[pos:eol]).split(b";")[0].strip()
        if not size_text or not _HEX.issuperset(size_text):
            raise _http_error("bad chunk size")
        size = int(size_text, 16)
        pos = eol + 2
        if size == 0:
            while True:  # trailers, then an empty line
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    return None
                empty, pos = eol == pos, eol + 2
                if empty:
                    return bytes(body), pos
        if size > MAX_RESPONSE - len(body):
            raise UpstreamError(f"response larger than {MAX_RESPONSE} bytes")
        if len(data) - pos < size + 2:
            return None
        if data[pos + size : pos + size + 2] != b"\r\n":
            raise _http_error("chunk not followed by CRLF")
        body += data[pos : pos + size]
        pos += size + 2


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _pretty(value: object, indent: str = "\n") -> str:
    """``value`` as serde_json's ``to_string_pretty`` writes it (two-space indent, ``": "``,
    ``[]`` and ``{}`` when empty, field order kept), which is what herd-core sends. Twice as fast
    as ``json.dumps(value, indent=2)``, whose indenting encoder is pure Python; the strings go
    through the same C escaper. Its output has no blank lines and no trailing newline, so
    herd-core's collapsing of newline runs has nothing to do."""
    kind = type(value)
    if kind is str:
        return _string(value)
    if kind is dict:
        if not value:
            return "{}"
        inner = indent + "  "
        fields = [f"{inner}{_string(k)}: {_pretty(v, inner)}" for k, v in value.items()]
        return "{" + ",".join(fields) + indent + "}"
    if kind is list:
        if not value:
            return "[]"
        inner = indent + "  "
        return "[" + ",".join([inner + _pretty(v, inner) for v in value]) + indent + "]"
    if kind is float:
        return _float(value)
    if kind is int:
        # serde_json holds integers outside i64/u64 as floats.
        return str(value) if -(1 << 63) <= value < 1 << 64 else _float(float(value))
    return "null" if value is None else "true" if value else "false"


def _float(value: float) -> str:
    """A float as serde_json (ryu) prints it: the shortest digits that read back the same, like
    Python's ``repr``, but in plain notation from 1e-5 up to 1e16 and with exponents written
    ``1e-7`` and ``1.5e20`` (``repr``: ``1e-07``, ``1.5e+20``)."""
    text = repr(value)
    if "e" not in text:
        if text in ("inf", "-inf", "nan"):  # 1e400 reads as inf here; serde_json refuses it
            raise UpstreamError("malformed places JSON: number out of range")
        return text
    mantissa, _, exponent = text.partition("e")
    exp = int(exponent)
    if exp == -5:  # 1e-5 <= |value| < 1e-4: plain for ryu
        sign, digits = ("-", mantissa[1:]) if mantissa[0] == "-" else ("", mantissa)
        return f"{sign}0.0000{digits.replace('.', '')}"
    return f"{mantissa}e{exp}"


def trim_places(body: bytes, bound: int) -> str:
    """The places JSON for a reply: ``results`` cut to ``bound``, pretty-printed, field order kept."""
    try:
        value = json.loads(body.decode(), parse_constant=_no_constants)
    except ValueError as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise UpstreamError(f"malformed places JSON: {e}") from None
    if not isinstance(value, dict):
        raise UpstreamError("malformed places JSON: not an object")
    results = value.get("results")
    if isinstance(results, list):
        del results[bound:]
    elif "results" in value:
        raise UpstreamError("malformed places JSON: results is not an array")
    return _pretty(value)


def error_json(message: str) -> str:
    """The JSON sent when the backend failed: the Nearby Search error shape, so clients parse one
    format."""
    error = {
        "html_attributions": [],
        "results": [],
        "status": "UNKNOWN_ERROR",
        "error_message": message,
    }
    return _pretty(error)


class PlacesClient:
    """Kept-alive connections to one places backend, shared by every connection task (one event
    loop, so one pool: the upstream connections follow the WHATSAT concurrency)."""

    def __init__(self, host: str, port: int, timeout: float, idle_max: int, stats) -> None:
        self._address = (host, port)
        self._host = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._timeout = timeout
        self._idle_max = idle_max
        #: Idle connections, the most recently returned last (used first: the least likely to
        #: have been closed by the backend).
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._stats = stats

    async def fetch(self, location: str, radius_m: int, bound: int) -> tuple[str | None, str | None]:
        """The trimmed places JSON for one WHATSAT, or why there is none: (json, None) or
        (None, error)."""
        request = encode_request(location, radius_m, self._host)
        try:
            async with asyncio.timeout(self._timeout):
                status, body = await self._exchange(request)
            if status != 200:
                raise UpstreamError(f"upstream status {status}")
            return trim_places(body, bound), None
        except TimeoutError:
            return None, "upstream timed out"
        except UpstreamError as e:
            return None, str(e)

    async def _exchange(self, request: bytes) -> tuple[int, bytes]:
        """Sends ``request`` on an idle connection or a fresh one, and reads the response."""
        retried = False
        while True:
            reused = bool(self._idle) and not retried
            if reused:
                reader, writer = self._idle.pop()
            else:
                try:
                    reader, writer = await asyncio.open_connection(*self._address)
                except OSError as e:
                    raise UpstreamError(f"upstream unreachable: {os_error_text(e)}") from None
                self._stats.upstream_connects += 1
            received = bytearray()
            keep = False
            try:
                writer.write(request)
                while (response := decode_response(received)) is None:
                    data = await reader.read(READ_SIZE)
                    if not data:
                        raise EOFError("end of stream")
                    received += data
                status, body, used, keep_alive = response
                # Bytes past the response would be a second, unasked-for answer: do not reuse.
                keep = keep_alive and used == len(received)
                return status, body
            except (OSError, EOFError) as e:
                reason = os_error_text(e) if isinstance(e, OSError) else str(e)
            finally:
                if keep and len(self._idle) < self._idle_max:
                    self._idle.append((reader, writer))
                else:
                    writer.transport.abort()
            # The connection failed or closed before the whole answer was in.
            if not received and reused:
                # The backend closed a kept-alive connection while it sat idle: the request
                # never reached it, so sending it again cannot do it twice.
                retried = True
                self._stats.upstream_stale_retries += 1
                continue
            if not received:
                raise UpstreamError(f"upstream unreachable: connection closed by upstream ({reason})")
            raise _http_error(f"connection closed mid-response ({reason})")
