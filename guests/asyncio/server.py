"""Client connections: one task per connection, reading lines and writing replies in order.

::

    asyncio.start_server ──► client_connected(reader, writer)   (a task per connection)
      past --max-connections: closed at once, counted, logged once per episode
      loop:
        line = await reader.readuntil(b"\\n")       (limit = --max-line: LimitOverrunError past it)
        service.handle(line) ─┬─ reply bytes ──► owed ──► transport.write: at --flush-at, or
                              │                          when the task next waits (loop.call_soon)
                              ├─ WHATSAT: write what is owed, await places.fetch(...) (in line:
                              │           the next line waits, so replies leave in request order)
                              └─ flood ──► FloodLink.send (queued; the link task writes it)
        owed ≥ --pause-output: await writer.drain()  (reading stops; TCP slows the client down)

The task reads one line at a time with ``readuntil``, which hands back every complete line that
is buffered without waiting, so a burst of pipelined lines is handled before the task yields.
Replies gathered meanwhile go out in one write: a ``loop.call_soon`` callback writes them when
the task next waits (for input, the places backend, or the socket), or at once when they reach
``--flush-at``. ``readline`` would do too, but on a line past the limit it throws the buffered
bytes away, and herd-core quotes the line's first 64 bytes in its ``?`` reply.

Back-pressure is asyncio's own: the transport's high-water mark is ``--pause-output``, so
``drain()`` waits while a client owes that much and the task reads no more meanwhile (the
kernel's buffers fill and TCP stops the client). A client owed more than ``--max-output`` while
its socket is full, or that takes none of its replies for ``--write-stall``, is disconnected: a
sweep every quarter of that watches the connections that owe bytes (herd-core's
``OutputBuffer``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from events import EventLog, Stats
from links import FloodLink, duration_text
from places import PlacesClient
from protocol import Link, Lookup

#: Bytes of an oversized line quoted back in its ``?`` reply.
OVERSIZED_QUOTE = 64


class Server:
    """What every connection of one server shares, and the cap on their number."""

    def __init__(
        self,
        service,
        links: list[FloodLink],
        places: PlacesClient | None,
        limits,
        stats: Stats,
        log: EventLog,
    ) -> None:
        self.service, self.links, self.places = service, links, places
        self.limits, self.stats, self.log = limits, stats, log
        self.loop = asyncio.get_running_loop()
        self.open = 0
        #: Refusing connections since the last one admitted (the episode being logged).
        self.refusing = False
        #: Connections that owe bytes their socket has not taken, watched for a stall.
        self.owing: set[Connection] = set()
        self._sweep_every = max(limits.write_stall / 4, 0.001)
        self._sweeper = self.loop.call_later(self._sweep_every, self._sweep)

    async def client_connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """``start_server``'s callback: one task per accepted connection."""
        if self.open >= self.limits.max_connections:
            self.stats.connections_refused += 1
            if not self.refusing:
                self.refusing = True
                self.log.event("connections_refused", max_connections=self.limits.max_connections)
            writer.transport.abort()
            return
        self.refusing = False
        self.open += 1
        self.stats.connections += 1
        connection = Connection(self, reader, writer)
        try:
            await connection.serve()
        finally:
            self.open -= 1
            self.owing.discard(connection)
            writer.transport.abort()  # a no-op once closed; frees a connection given up on

    def _sweep(self) -> None:
        """Closes the connections that took none of their replies for --write-stall."""
        now = self.loop.time()
        for connection in list(self.owing):
            if not connection.still_owing(now):
                self.owing.discard(connection)
        self._sweeper = self.loop.call_later(self._sweep_every, self._sweep)


class Connection:
    """One client connection, served by its task. Herd-core's ``Session`` and ``OutputBuffer``."""

    def __init__(self, server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader, self.writer = reader, writer
        self.transport = writer.transport
        limits = server.limits
        self.flush_at = limits.flush_at
        self.pause_output = limits.pause_output
        self.max_output = limits.max_output
        self.write_stall = limits.write_stall
        # drain() waits while the transport holds pause_output bytes or more, and returns as
        # soon as it holds less: herd-core reads while owed < pause_output.
        mark = max(limits.pause_output - 1, 0)
        self.transport.set_write_buffer_limits(high=mark, low=mark)
        #: Replies gathered and not yet handed to the transport.
        self.owed = bytearray()
        self.flush_scheduled = False
        #: Bytes handed to the transport in all; less what it still holds, what the socket took.
        self.handed = 0
        #: The stall clock: since when the socket took nothing, and how much it had taken then.
        self.stalled_since: float | None = None
        self.taken_then = 0

    async def serve(self) -> None:
        service, places, links = self.server.service, self.server.places, self.server.links
        reader, loop = self.reader, self.server.loop
        link = Link()
        closing = False
        while True:
            try:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.LimitOverrunError:
                    # The line is past --max-line: quote its start, answer, and read no more.
                    # Its first bytes are still buffered (readuntil leaves them there).
                    quote = (await reader.read(OVERSIZED_QUOTE)).partition(b"\n")[0]
                    self.send(service.oversized(quote))
                    closing = True
                    break
            except asyncio.IncompleteReadError:
                break  # end of stream: an unterminated fragment is not a command
            except OSError:
                return  # reset: nothing more to answer
            reply, flood = service.handle(line[:-1], link, time.time_ns())
            if flood is not None:
                now = loop.time()
                for i in flood.to:
                    links[i].send(flood.line, now)
            if reply is None:
                continue
            if isinstance(reply, Lookup):
                self.flush()  # what was answered before the WHATSAT goes out first
                json_text, error = (
                    await places.fetch(reply.location, reply.radius_m, reply.bound)
                    if places is not None
                    else (None, "no places backend configured")
                )
                reply = service.complete(reply, json_text, error)
            self.send(reply)
            if self.transport.get_write_buffer_size() + len(self.owed) >= self.pause_output:
                self.flush()
                try:
                    await self.writer.drain()
                except OSError:
                    return
        # What is owed still goes out (a half-closed client reads it); after an oversized line
        # the sending side is shut once it has, so the last reply is not lost to a reset.
        self.flush()
        if closing and not self.transport.is_closing():
            self.writer.write_eof()
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()

    def send(self, reply: bytes) -> None:
        """Queues a reply: written at --flush-at, or when the task next waits."""
        self.owed += reply
        if len(self.owed) >= self.flush_at:
            self.flush()
        elif not self.flush_scheduled:
            self.flush_scheduled = True
            self.server.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Hands what is owed to the transport; gives up on a client owed more than
        --max-output while its socket is full."""
        self.flush_scheduled = False
        if not self.owed or self.transport.is_closing():
            return
        data, self.owed = self.owed, bytearray()
        self.transport.write(data)
        self.handed += len(data)
        held = self.transport.get_write_buffer_size()
        if held > self.max_output:
            self.give_up(f"client is not reading its replies ({held} bytes owed); closing")
        elif held:
            self.server.owing.add(self)

    def still_owing(self, now: float) -> bool:
        """The sweep's look at a connection that owed bytes: False once it owes none (or was
        closed, for taking none of them for --write-stall)."""
        held = self.transport.get_write_buffer_size()
        if not held:  # all taken (or the transport aborted, which empties it)
            self.stalled_since = None
            return False
        taken = self.handed - held
        if self.stalled_since is None or taken > self.taken_then:
            self.stalled_since, self.taken_then = now, taken
        elif now - self.stalled_since >= self.write_stall:
            self.give_up(f"client took none of its replies for {duration_text(self.write_stall)}; closing")
            return False
        return True

    def give_up(self, why: str) -> None:
        self.server.log.error("write", why)
        self.transport.abort()
