"""Counters and the event log: what the server says about itself.

``Stats`` holds herd-core's counters under herd-core's names (``stats.rs``); at shutdown they go
to the ``--stats`` file as ``{"counters": {...}, "extra": {}}``. ``EventLog`` writes herd-core's
events (``log.rs``), one JSON object a line in the harness's shape::

    {"ts":"2026-12-07T09:15:37.123456Z","server":"Alford","event":"link_up","peer":"Hamilton","direction":"outbound"}

Logging never blocks the request path: an event is a tuple appended to a list (bounded: past
65,536 waiting events further ones are dropped and counted, as the harness's sink does); a timer
on the event loop formats, writes and flushes them every 200 ms, and once more at shutdown.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import UTC, datetime

#: herd-core's counters, in its order (``ServerStats::snapshot``).
COUNTERS = (
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
    "upstream_stale_retries",
    "connections",
    "connections_refused",
    "store_evictions",
    "unauthenticated_at",
    "links_refused",
)


def os_error_text(error: OSError) -> str:
    """An OS error as Rust prints one (``Connection refused (os error 111)``), for messages that
    herd-core's styles also write."""
    if error.errno:
        return f"{os.strerror(error.errno)} (os error {error.errno})"
    return str(error) or type(error).__name__


class Stats:
    """The server's counters, as plain attributes: one event loop thread bumps them all."""

    __slots__ = COUNTERS

    def __init__(self) -> None:
        for name in COUNTERS:
            setattr(self, name, 0)

    def write(self, path: str) -> None:
        """Writes the stats file, through a temporary name so it is never read half written."""
        counters = {name: getattr(self, name) for name in COUNTERS}
        temporary = f"{path}.tmp"
        with open(temporary, "w", encoding="utf-8") as file:
            json.dump({"counters": counters, "extra": {}}, file, indent=2)
        os.replace(temporary, path)


#: Events waiting to be written, past which further ones are dropped (and counted).
QUEUE_BOUND = 64 * 1024
FLUSH_EVERY = 0.2


class EventLog:
    """Structured events to a file, one JSON object a line; see the module docs."""

    def __init__(self, path: str | None, server: str, log_io: bool) -> None:
        self._file = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115
        self._server = server
        #: (time in ns, event name, fields) not yet written.
        self._queue: list[tuple[int, str, dict]] = []
        #: Log every input and output line (part of what a run measures, so off by default).
        self.io = bool(log_io and path)
        self.dropped = 0

    def event(self, kind: str, **fields: object) -> None:
        if self._file is None:
            return
        if len(self._queue) >= QUEUE_BOUND:
            self.dropped += 1
            return
        self._queue.append((time.time_ns(), kind, fields))

    def error(self, context: str, message: object) -> None:
        self.event("error", context=context, message=str(message))

    def input(self, line: bytes) -> None:
        self.event("input", line=line.decode(errors="replace"))

    def output(self, text: bytes) -> None:
        if text:
            self.event("output", text=text.decode(errors="replace"))

    def flush_every(self, loop: asyncio.AbstractEventLoop, period: float = FLUSH_EVERY) -> None:
        """Writes what was logged every ``period`` seconds, on a timer of ``loop``, for as long as
        the server runs."""
        self.flush()
        loop.call_later(period, self.flush_every, loop, period)

    def flush(self) -> None:
        if self._file is None or not self._queue:
            return
        queue, self._queue = self._queue, []
        lines = []
        for ns, kind, fields in queue:
            stamp = datetime.fromtimestamp(ns // 1_000_000_000, UTC)
            stamp = stamp.replace(microsecond=ns // 1000 % 1_000_000)
            head = {"ts": stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "server": self._server}
            head["event"] = kind
            head.update(fields)
            lines.append(json.dumps(head, ensure_ascii=False, separators=(",", ":")))
        lines.append("")
        self._file.write("\n".join(lines))
        self._file.flush()
