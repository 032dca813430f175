"""Client connections: one ``LineReceiver`` each, and the ``ServerFactory`` that holds the herd.

::

    epoll ─► doRead ─► dataReceived (the read's wall-clock time) ─► LineReceiver ─► lineReceived
                 Herd.handle(line) ─┬─ reply ─► transport.write (or held behind an unanswered WHATSAT)
                                    ├─ PlacesQuery ─► Places.lookup ─► Deferred ─► reply, in request order
                                    └─ Flood ─► FloodLink.send, one per neighbour named
    transport buffer past --pause-output ─► pauseProducing: stop reading, stop handling lines
    transport buffer drained ─► resumeProducing: handle the lines already read, read again

Every line takes effect the moment it is read, in order (a WHATSAT sees the IAMAT before it);
only a WHATSAT's reply waits, for its Deferred, and the replies after it wait behind it, so
they leave in request order. A connection is herd-core's ``OutputBuffer`` policy in Twisted's
own terms: the transport is the output buffer, and this protocol is its streaming producer —
the transport pauses it once more than ``--pause-output`` bytes are owed (its ``bufferSize``),
resumes it once they are all written, and reading also pauses while ``--max-in-flight`` lines
are unanswered. A client paused for ``--write-stall`` (taking none of the buffer), or owed more
than ``--max-output``, is dropped. A line longer than ``--max-line`` is answered ``? <its first
64 bytes>`` and its connection closed once that reply is written.
"""

from __future__ import annotations

import time
from collections import deque

from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import ServerFactory
from twisted.protocols.basic import LineReceiver
from zope.interface import implementer

from core import OVERSIZED_QUOTE, Flood, Limits, Link, PlacesQuery, rust_duration


@implementer(IHalfCloseableProtocol, IPushProducer)
class Connection(LineReceiver):
    """One client connection (a client, or a neighbour's inbound flood link)."""

    delimiter = b"\n"  # a trailing CR is white space to the protocol, not part of the delimiter

    def __init__(self, server: HerdServer) -> None:
        self.server = server
        self.limits: Limits = server.limits
        self.MAX_LENGTH = self.limits.max_line
        self.link = Link()
        self._received = 0  # when the bytes being handled arrived (ns since the epoch)
        # Replies behind the oldest unanswered WHATSAT, in request order: [bytes] or [None]
        # (a WHATSAT still waiting). Its length is herd-core's "in flight".
        self._held: deque[list[bytes | None]] = deque()
        self._output_full = False  # the transport paused us: more than --pause-output owed
        self._owed_past_pause = 0  # written since then
        self._stall = None
        self._input_done = False  # end of input, or an oversized line: no more lines
        self._closing = False  # an oversized line was answered: close once it is written
        self._finished = False
        self._gone = False

    # -- the connection -------------------------------------------------------------------------

    def connectionMade(self) -> None:
        transport = self.transport
        transport.setTcpNoDelay(True)  # replies are small and go out at once
        transport.bufferSize = self.limits.pause_output  # past it, the transport pauses us
        transport.registerProducer(self, True)

    def connectionLost(self, reason) -> None:
        self._gone = True
        if self._stall is not None and self._stall.active():
            self._stall.cancel()
        self.server.closed()

    def readConnectionLost(self) -> None:
        """The client closed its side: answer what it sent, then close ours."""
        self._input_done = True
        self._maybe_finish()

    def writeConnectionLost(self) -> None:
        """Never asked for: we close both sides at once."""

    # -- input ------------------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if data:  # not the replay of buffered lines on resume: they keep their read's time
            self._received = time.time_ns()
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        server = self.server
        reply, flood = server.service.handle(line, self.link, self._received)
        if flood is not None:
            server.flood(flood)
        if isinstance(reply, PlacesQuery):
            slot: list[bytes | None] = [None]
            self._held.append(slot)
            server.places.lookup(reply).addCallback(self._answered, slot)
            self._gate()
        elif self._held:
            self._held.append([reply or b""])
            self._gate()
        elif reply:
            self._write(reply)

    def lineLengthExceeded(self, line: bytes) -> None:
        """``line`` holds the buffer from the oversized line on: quote that line's start."""
        quote = line.split(b"\n", 1)[0][:OVERSIZED_QUOTE]
        reply = self.server.service.oversized(quote)
        if self._held:
            self._held.append([reply])
        else:
            self._write(reply)
        self._input_done = self._closing = True
        self._gate()
        self._maybe_finish()

    # -- output -----------------------------------------------------------------------------------

    def _answered(self, reply: bytes, slot: list[bytes | None]) -> None:
        """A WHATSAT's reply is in: release every reply now at the front, in order."""
        if self._gone:
            return
        slot[0] = reply
        ready = []
        while self._held and self._held[0][0] is not None:
            ready.append(self._held.popleft()[0])
        if ready:
            self._write(b"".join(ready))
        self._gate()
        self._maybe_finish()

    def _write(self, data: bytes) -> None:
        if self._gone:
            return
        if self._output_full:
            self._owed_past_pause += len(data)
            owed = self.limits.pause_output + self._owed_past_pause
            if owed > self.limits.max_output:
                self._give_up(f"client is not reading its replies ({owed} bytes owed); closing")
                return
        self.transport.write(data)

    # IPushProducer: the transport pauses us when it holds more than --pause-output bytes, and
    # resumes us once it has written them all.

    def pauseProducing(self) -> None:
        if not self._output_full:
            self._output_full = True
            self._owed_past_pause = 0
            stall = self.limits.write_stall
            message = f"client took none of its replies for {rust_duration(stall)}; closing"
            self._stall = self.server.reactor.callLater(stall, self._give_up, message)
            self._gate()

    def resumeProducing(self) -> None:
        self._output_full = False
        if self._stall is not None and self._stall.active():
            self._stall.cancel()
        self._stall = None
        self._gate()
        self._maybe_finish()

    def stopProducing(self) -> None:
        """The connection is gone (``connectionLost`` follows)."""

    # -- reading or not ---------------------------------------------------------------------------

    def _gate(self) -> None:
        """Handles lines and reads only while little is owed, few lines are unanswered and no
        oversized line ended the input (``paused`` is LineReceiver's own flag: it stops
        handling the lines of a read already received)."""
        hold = self._output_full or self._closing or len(self._held) >= self.limits.max_in_flight
        if hold == self.paused or self._gone:
            return
        self.paused = hold
        if hold:
            self.transport.pauseProducing()  # stop reading
        else:
            if not self._input_done:
                self.transport.resumeProducing()
            self.dataReceived(b"")  # the lines read before the pause

    def _maybe_finish(self) -> None:
        """After the end of input, close once every reply is written."""
        if self._finished or self._gone or not self._input_done or self._held:
            return
        if self.paused and not self._closing:
            return  # lines read before the end of input wait to be handled
        self._finished = True
        self.transport.unregisterProducer()  # else loseConnection would wait for us
        self.transport.loseConnection()  # writes what is owed, then closes

    def _give_up(self, message: str) -> None:
        """Drops a client that does not read (its ``connectionLost`` comes on the next turn)."""
        self._stall = None
        if not self._gone:
            self._gone = True
            self.server.log.error("write", message)
            self.transport.abortConnection()


class HerdServer(ServerFactory):
    """What every connection of one server shares: the service (herd or echo), the flood
    links, the places client, and the cap on connections (``--max-connections``)."""

    noisy = False

    def __init__(self, reactor, service, links: list, places, limits: Limits, stats, log) -> None:
        self.reactor, self.service, self.links, self.places = reactor, service, links, places
        self.limits, self.stats, self.log = limits, stats, log
        self.open = 0
        self._refusing = False  # in an episode of refusals (logged once)

    def buildProtocol(self, addr) -> Connection | None:
        """Past the cap a connection is closed at once (the port closes it when we return
        None): counted, and logged once per episode, which ends when one is admitted."""
        if self.open >= self.limits.max_connections:
            self.stats["connections_refused"] += 1
            if not self._refusing:
                self._refusing = True
                self.log.event("connections_refused", max_connections=self.limits.max_connections)
            return None
        self._refusing = False
        self.open += 1
        self.stats["connections"] += 1
        return Connection(self)

    def closed(self) -> None:
        self.open -= 1

    def flood(self, flood: Flood) -> None:
        for i in flood.to:
            self.links[i].send(flood.line)
