"""herdbench's Twisted guest: the proxy herd (and echo) as event handlers on one reactor.

How the style works: one thread runs Twisted's epoll reactor. Everything is a callback the
reactor makes when something happened — a socket became readable or writable, a timer came
due, a Deferred fired — and every callback returns at once. Nothing blocks and nothing is
handed to another thread:

- the loop: ``reactor.run()``; epoll says which sockets are ready, the reactor calls their
  protocols (``dataReceived``, ``connectionLost``), then the timers that are due (``callLater``);
- hand-offs: none between threads; within the loop a flood is a method call on the neighbour's
  ``FloodLink`` (a ``ReconnectingClientFactory`` that queues it), and a WHATSAT is a
  ``Deferred`` from ``twisted.web.client.Agent`` whose callback writes the reply;
- waiting: a WHATSAT's upstream call waits as a pending Deferred (its connection registered
  with the reactor); a client that reads too slowly is waited out by pausing it as the
  transport's streaming producer; a neighbour by the transport pulling from its link.

Layout: ``core.py`` the protocol without I/O (herd-core's counterpart), ``serving.py`` client
connections (``LineReceiver``) and their factory, ``links.py`` flood links, ``places.py`` the
places client, ``events.py`` the event log, samples and stats files; here the command line
(``harness serve``'s settings) and the wiring.
"""

from __future__ import annotations

import argparse
import gc
import re
import signal
import sys

from twisted.internet import epollreactor

epollreactor.install()  # Linux: epoll, not the select/poll fallbacks

from twisted.internet import reactor  # noqa: E402  (after choosing the reactor)
from twisted.internet.error import CannotListenError  # noqa: E402
from twisted.internet.task import LoopingCall  # noqa: E402
from twisted.logger import (  # noqa: E402
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)

import core  # noqa: E402
from events import EventLog, Samples, write_stats  # noqa: E402
from links import FloodLink  # noqa: E402
from places import Places  # noqa: E402
from serving import HerdServer  # noqa: E402

#: The listen backlog every herdbench server uses (net.core.somaxconn caps it).
LISTEN_BACKLOG = 4096

_SIZE = re.compile(r"(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 10**6, "mib": 2**20, "gb": 10**9, "gib": 2**30}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|m|h)?")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def size(text: str) -> int:
    """Bytes: ``65536`` (the harness's form) or ``64KiB``."""
    m = _SIZE.fullmatch(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 65536 or 64KiB)")
    return int(m[1]) * _SIZE_UNITS[(m[2] or "").lower()]


def duration(text: str) -> float:
    """Seconds: ``2000ms`` (the harness's form), ``5s``."""
    m = _DURATION.fullmatch(text.strip())
    if not m or not m[2]:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 2000ms)")
    return float(m[1]) * _DURATION_UNITS[m[2]]


def count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a count")
    return int(text)


def address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected IP:PORT")
    return host.strip("[]"), int(port)


def peer(text: str) -> tuple[str, tuple[str, int]]:
    name, sep, addr = text.partition("=")
    if not sep or not name or any(c.isspace() for c in name):
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=IP:PORT, e.g. Hamilton=127.0.0.1:12001")
    return name, address(addr)


LIMIT_FLAGS = {  # flag → its parser; one per field of herd-core's Limits
    "max-line": size,
    "link-retry": duration,
    "link-connect-timeout": duration,
    "link-queue-bytes": size,
    "link-write-stall": duration,
    "upstream-timeout": duration,
    "upstream-idle-max": count,
    "flush-at": size,
    "pause-output": size,
    "max-output": size,
    "write-stall": duration,
    "max-in-flight": count,
    "max-clients": count,
    "max-connections": count,
    "accept-backoff": duration,
    "accept-backoff-max": duration,
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="herd.py", description="herdbench's Twisted guest (harness serve's settings)"
    )
    p.add_argument("--name", default="Alford")
    p.add_argument("--listen", type=address, default=("127.0.0.1", 0))
    p.add_argument("--peer", type=peer, action="append", default=[], dest="peers")
    p.add_argument("--places", type=address)
    p.add_argument("--mode", choices=["herd", "echo"], default="herd")
    p.add_argument("--threads", type=count, help="ignored: one reactor thread")
    p.add_argument("--io-threads", type=count, help="ignored")
    p.add_argument("--stack-kib", type=count, help="ignored")
    p.add_argument("--log")
    p.add_argument("--log-io", action="store_true")
    p.add_argument("--stats")
    p.add_argument("--samples")
    p.add_argument("--sample-every", type=duration, default=0.1)
    p.add_argument("--ttl", type=count, default=3600)
    keys = p.add_mutually_exclusive_group()
    keys.add_argument("--herd-key", metavar="FILE")
    keys.add_argument("--insecure-herd", action="store_true")
    for flag, parse in LIMIT_FLAGS.items():
        p.add_argument(f"--{flag}", type=parse)
    args = p.parse_args(argv)
    if not args.name or any(c.isspace() for c in args.name):
        p.error(f"server name {args.name!r} must be one word")
    if args.mode == "herd" and not (args.herd_key or args.insecure_herd):
        p.error("a herd server needs --herd-key FILE (or --insecure-herd)")
    if args.sample_every <= 0:
        p.error("--sample-every must be above 0")
    given = {flag.replace("-", "_"): getattr(args, flag.replace("-", "_")) for flag in LIMIT_FLAGS}
    args.limits = core.Limits(**{k: v for k, v in given.items() if v is not None})
    return args


def serve(args: argparse.Namespace) -> None:
    limits = args.limits
    log = EventLog(args.log, args.name, args.log_io)
    stats = core.new_stats()
    neighbours = [name for name, _ in args.peers]
    links: list[FloodLink] = []
    if args.mode == "herd":
        try:
            key = core.load_key(args.herd_key) if args.herd_key else None
        except (OSError, ValueError) as e:
            print(f"herd.py: --herd-key {args.herd_key}: {e}", file=sys.stderr)
            sys.exit(2)
        service = core.Herd(args.name, neighbours, key, args.ttl, limits.max_clients, stats, log)
        links = [FloodLink(args.name, n, a, key, limits, stats, log, reactor) for n, a in args.peers]
        places = Places(reactor, args.places, limits, service)
    else:
        service, places = core.Echo(stats, log), None
    server = HerdServer(reactor, service, links, places, limits, stats, log)
    host, port = args.listen
    try:
        listening = reactor.listenTCP(port, server, backlog=LISTEN_BACKLOG, interface=host)
    except CannotListenError as e:  # the message has the system's reason: "Address already in use"
        sys.exit(f"herd.py: {e}")
    addr = listening.getHost()
    log.event("listening", addr=f"{addr.host}:{addr.port}")
    log.start()
    for link in links:
        link.start()
    if args.samples:
        LoopingCall(Samples(args.samples, stats).sample).start(args.sample_every)

    def stop(signum, frame) -> None:
        reactor.callFromThread(shut_down)

    stopping = False

    def shut_down() -> None:
        """Counters and log first (what the harness waits for), then stop the reactor."""
        nonlocal stopping
        if stopping:
            return  # a second signal while stopping
        stopping = True
        log.event("stopping")
        if args.stats:
            write_stats(args.stats, stats)
        log.flush()
        for link in links:
            link.stopTrying()
        reactor.stop()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    # Everything made so far (modules, the reactor, the links) lives as long as the server: move
    # it out of the cyclic collector's way, so its collections walk only per-request objects.
    gc.freeze()
    reactor.run(installSignalHandlers=False)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    # Twisted's own log (unhandled errors in callbacks, mostly) to stderr, warnings and worse only;
    # starting an observer also keeps Twisted from buffering its early log in memory.
    level = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr), [level])], redirectStandardIO=False
    )
    serve(args)


if __name__ == "__main__":
    main(sys.argv[1:])
