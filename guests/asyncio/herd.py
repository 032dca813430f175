"""The proxy herd on Python's asyncio: coroutines on one event loop, streams for every socket.

How the style works
-------------------
One thread runs one event loop (``asyncio.run``; ``uvloop.run`` with ``--event-loop uvloop``).
Everything is a coroutine on it, and every ``await`` is a point where a coroutine hands the loop
back until its socket is ready, its timer is due or another coroutine sets its event::

    asyncio.start_server ──► one task per client connection (server.py)
                               readuntil(b"\\n") ─► protocol.Herd.handle ─► reply, flood, or lookup
                               WHATSAT: await places.fetch(...)   (places.py: keep-alive pool)
                               flood: FloodLink.send ── Event.set ──┐
    links.start ─────────────► one task per neighbour (links.py)   ◄┘
                               connect, handshake, write the queue, wait for the next wake

The hand-offs are plain calls and ``asyncio.Event``s: with one thread, no state needs a lock,
and a coroutine runs undisturbed from one ``await`` to the next. Waiting is the loop's: on
readiness of sockets (epoll, under libuv with uvloop), on timers (``asyncio.timeout`` for the
places deadline and the link deadlines), on events (a link's wake-up). The protocol itself
(protocol.py, auth.py) performs no I/O and could run under any loop.

Layout
------
- herd.py: the command line, start-up, signals, the stats file.
- server.py: client connections: lines in, replies out, back-pressure, the connection cap.
- protocol.py: the protocol: parsing, the location store, the herd's replies and floods.
- auth.py: the herd key and the link handshake.
- links.py: flood links to the neighbours.
- places.py: the places backend's HTTP/1.1 client and codec.
- events.py: counters and the event log.

Settings are ``harness serve``'s (guests/CONTRACT.md): sizes in bytes, durations in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import socket
import sys
import time

import auth
import events
import links
import protocol
import server
from places import PlacesClient

#: Connections the kernel queues for accept (the harness's own servers listen with 4096).
LISTEN_BACKLOG = 4096
_SIZE_UNITS = {"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}
_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0}


def _split_unit(text: str) -> tuple[str, str]:
    """``"64KiB"`` → ``("64", "KiB")``."""
    text = text.strip()
    for i, c in enumerate(text):
        if c.isalpha():
            return text[:i].strip(), text[i:]
    return text, ""


def size(text: str) -> int:
    """Bytes: a plain number (what the harness passes), or with a unit (``64KiB``, ``1MiB``)."""
    number, unit = _split_unit(text)
    try:
        value = float(number) * _SIZE_UNITS[unit.lower()]
    except (KeyError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of bytes, e.g. 65536") from None
    if value < 0 or value != int(value):
        raise argparse.ArgumentTypeError(f"{text!r}: not a whole number of bytes")
    return int(value)


def duration(text: str) -> float:
    """Seconds, from ``2000ms`` (what the harness passes), ``250us``, ``5s``; a bare number is s."""
    number, unit = _split_unit(text)
    try:
        value = float(number) * _SECONDS[unit or "s"]
    except (KeyError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a duration such as 500ms") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a duration is not negative")
    return value


def count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of at least 0")
    return value


def address(text: str) -> tuple[str, int]:
    """``IP:PORT`` (``[v6]:PORT`` too) as (host, port)."""
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected IP:PORT, e.g. 127.0.0.1:8000")
    return host.strip("[]"), int(port)


def peer(text: str) -> tuple[str, tuple[str, int]]:
    """``NAME=IP:PORT``."""
    name, equals, where = text.partition("=")
    if not equals or not name or any(c.isspace() for c in name):
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=IP:PORT, e.g. Hamilton=127.0.0.1:8002")
    return name, address(where)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """``harness serve``'s settings (every flag of guests/CONTRACT.md), plus ``--event-loop``.
    An unknown flag or a bad value ends the program with status 2 and a message."""
    p = argparse.ArgumentParser(
        prog="herd.py", description="A proxy-herd server on asyncio streams.", allow_abbrev=False
    )
    p.add_argument("--event-loop", choices=("asyncio", "uvloop"), default="asyncio")
    p.add_argument("--name", default="Alford")
    p.add_argument("--listen", type=address, default=("127.0.0.1", 0))
    p.add_argument("--peer", dest="peers", type=peer, action="append", default=[])
    p.add_argument("--places", type=address)
    p.add_argument("--mode", choices=("herd", "echo"), default="herd")
    p.add_argument("--threads", type=count, help="ignored: one event loop, one thread")
    p.add_argument("--io-threads", type=count, help="ignored")
    p.add_argument("--stack-kib", type=count, help="ignored: coroutines have no stack of their own")
    p.add_argument("--log")
    p.add_argument("--log-io", action="store_true")
    p.add_argument("--stats")
    p.add_argument("--samples")
    p.add_argument("--sample-every", type=duration, default=0.1)
    p.add_argument("--ttl", type=count, default=protocol.DEFAULT_TTL_SECS)
    p.add_argument("--herd-key")
    p.add_argument("--insecure-herd", action="store_true")
    # The policy's limits (herd-core's Limits), with its defaults.
    p.add_argument("--max-line", type=size, default=64 * 1024)
    p.add_argument("--link-retry", type=duration, default=0.1)
    p.add_argument("--link-connect-timeout", type=duration, default=0.5)
    p.add_argument("--link-queue-bytes", type=size, default=1024 * 1024)
    p.add_argument("--link-write-stall", type=duration, default=5.0)
    p.add_argument("--upstream-timeout", type=duration, default=3.0)
    p.add_argument("--upstream-idle-max", type=count, default=256)
    p.add_argument("--flush-at", type=size, default=64 * 1024)
    p.add_argument("--pause-output", type=size, default=256 * 1024)
    p.add_argument("--max-output", type=size, default=4 * 1024 * 1024)
    p.add_argument("--write-stall", type=duration, default=5.0)
    p.add_argument("--max-in-flight", type=count, default=64, help="honoured: one request at a time")
    p.add_argument("--max-clients", type=count, default=4_000_000)
    p.add_argument("--max-connections", type=count, default=16_000)
    p.add_argument("--accept-backoff", type=duration, default=0.01, help="ignored: asyncio's own")
    p.add_argument("--accept-backoff-max", type=duration, default=1.0, help="ignored: asyncio's own")
    args = p.parse_args(argv)
    if args.mode == "herd" and (args.herd_key is None) == (not args.insecure_herd):
        p.error("herd mode needs one of --herd-key FILE and --insecure-herd")
    if args.max_line < 1 or args.pause_output < 1:
        p.error("--max-line and --pause-output must be at least 1")
    args.key = None
    if args.mode == "herd" and args.herd_key:
        try:
            args.key = auth.load_key(args.herd_key)
        except (OSError, ValueError) as e:
            p.error(f"--herd-key {args.herd_key}: {e}")
    return args


async def serve(args: argparse.Namespace) -> None:
    """Runs one server until SIGTERM, SIGINT or SIGHUP; then writes the stats and exits."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(signum, stop.set)
    stats = events.Stats()
    log = events.EventLog(args.log, args.name, args.log_io)
    if args.mode == "herd":
        neighbours = [name for name, _ in args.peers]
        service = protocol.Herd(args.name, neighbours, args.key, args.ttl, args.max_clients, stats, log)
        flood_links = links.start(args.name, args.peers, args.key, args, stats, log)
        places = None
        if args.places:
            places = PlacesClient(*args.places, args.upstream_timeout, args.upstream_idle_max, stats)
    else:
        service, flood_links, places = protocol.Echo(stats, log), [], None
    clients = server.Server(service, flood_links, places, args, stats, log)
    host, port = args.listen
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        # Bound here rather than by start_server(host, port): uvloop resolves a host on libuv's
        # thread pool, which would start four threads that then sit idle.
        sock = socket.create_server((host, port), family=family, backlog=LISTEN_BACKLOG)
    except OSError as e:
        # "Address already in use" is what the harness looks for to retry on other ports.
        sys.exit(f"herd.py: binding {host}:{port}: {os.strerror(e.errno) if e.errno else e}")
    listener = await asyncio.start_server(
        clients.client_connected, sock=sock, limit=args.max_line, backlog=LISTEN_BACKLOG
    )
    bound_host, bound_port = sock.getsockname()[:2]
    bound = f"[{bound_host}]:{bound_port}" if family == socket.AF_INET6 else f"{bound_host}:{bound_port}"
    log.event("listening", addr=bound)
    log.flush_every(loop)
    if args.samples:
        Sampler(args.samples, args.sample_every, stats).start(loop)

    # Everything made so far lives as long as the process: keep the collector off it.
    gc.freeze()
    async with listener:  # accepting until told to stop
        await stop.wait()

    log.event("stopping")
    if args.stats:
        stats.write(args.stats)
    log.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    # As the harness's own servers do: the process ends here, without unwinding every
    # connection's task one by one (thousands of them would take longer than the 3 s allowed).
    os._exit(0)


class Sampler:
    """``--samples``: appends ``{"t_ns", "rss_kib", "floods_dropped"}`` every ``--sample-every``
    (a timer callback on the loop; each line is flushed, so a killed server's are all there)."""

    def __init__(self, path: str, every: float, stats: events.Stats) -> None:
        self._out = open(path, "a", encoding="utf-8")  # noqa: SIM115 (open while the server runs)
        self._every = max(every, 0.001)
        self._stats = stats
        self._page_kib = max(os.sysconf("SC_PAGE_SIZE") // 1024, 1)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._sample()

    def _sample(self) -> None:
        with open("/proc/self/statm", encoding="ascii") as statm:
            rss_kib = int(statm.read().split()[1]) * self._page_kib
        t_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        dropped = self._stats.floods_dropped
        self._out.write(f'{{"t_ns":{t_ns},"rss_kib":{rss_kib},"floods_dropped":{dropped}}}\n')
        self._out.flush()
        self._loop.call_later(self._every, self._sample)


def main() -> None:
    args = parse_args(sys.argv[1:])
    # Fewer, larger young-generation collections: a server allocates many short-lived objects
    # per request and holds few cycles (the default threshold is 700).
    gc.set_threshold(20_000, 20, 20)
    if args.event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            sys.exit("herd.py: --event-loop uvloop: uvloop is not installed (run setup.sh)")
        uvloop.run(serve(args))
    else:
        asyncio.run(serve(args))


if __name__ == "__main__":
    main()
