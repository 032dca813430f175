"""The event log (``--log``), the samples file (``--samples``) and the stats file (``--stats``).

Events are herd-core's ``Event`` (impls/core/src/log.rs), one JSON object a line, stamped the
way the harness's own sink stamps them::

    {"ts":"2026-01-02T03:04:05.123456Z","server":"Alford","event":"link_up","peer":"Hamilton","direction":"outbound"}

Logging never blocks a handler: an event is appended to a list in memory (at most 65,536 wait;
past that they are dropped and counted) and a ``LoopingCall`` writes the list out every 200 ms
and at shutdown. The write itself is one buffered ``write`` on the reactor thread, as Twisted's
own file log observers do.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime

from twisted.internet.task import LoopingCall

FLUSH_EVERY = 0.2
MAX_QUEUED = 65_536


class EventLog:
    """Structured events of one server; a no-op without a file."""

    def __init__(self, path: str | None, server: str, log_io: bool) -> None:
        self._file = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115 (lives as long as the server)
        self._server = server
        self._queued: list[tuple[float, str, dict]] = []
        self.dropped = 0
        self.log_io = log_io and self._file is not None
        self._flusher = LoopingCall(self.flush)

    def start(self) -> None:
        if self._file is not None:
            self._flusher.start(FLUSH_EVERY, now=False)

    def event(self, kind: str, **fields: object) -> None:
        if self._file is None:
            return
        if len(self._queued) >= MAX_QUEUED:
            self.dropped += 1
            return
        self._queued.append((time.time(), kind, fields))

    def error(self, context: str, message: object) -> None:
        self.event("error", context=context, message=str(message))

    def input(self, line: bytes) -> None:
        if self.log_io:
            self.event("input", line=line.decode("utf-8", "replace"))

    def output(self, data: bytes) -> None:
        if self.log_io and data:
            self.event("output", text=data.decode("utf-8", "replace"))

    def flush(self) -> None:
        if self._file is None or not self._queued:
            return
        queued, self._queued = self._queued, []
        lines = []
        for ts, kind, fields in queued:
            stamp = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            record = {"ts": stamp, "server": self._server, "event": kind, **fields}
            lines.append(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
        self._file.write("\n".join(lines) + "\n")
        self._file.flush()


def write_stats(path: str, stats: dict[str, int]) -> None:
    """The counters file the harness reads after SIGTERM (``ServerCounters``), written beside
    ``path`` and renamed over it, so it is never read half-written."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"counters": stats, "extra": {}}, f, indent=2)
    os.replace(tmp, path)


class Samples:
    """``--samples``: a line every ``--sample-every`` with the monotonic clock, the resident
    memory and the dropped floods (what a scenario's timeline shows)."""

    def __init__(self, path: str, stats: dict[str, int]) -> None:
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115
        self._stats = stats
        self._page_kib = max(1, os.sysconf("SC_PAGE_SIZE") // 1024)

    def sample(self) -> None:
        try:
            with open("/proc/self/statm", encoding="ascii") as statm:
                rss_kib = int(statm.read().split()[1]) * self._page_kib
        except (OSError, IndexError, ValueError):
            rss_kib = 0
        line = {
            "t_ns": time.clock_gettime_ns(time.CLOCK_MONOTONIC),
            "rss_kib": rss_kib,
            "floods_dropped": self._stats["floods_dropped"],
        }
        self._file.write(json.dumps(line) + "\n")
        self._file.flush()
