"""Flood links: one ``ReconnectingClientFactory`` per neighbour, herd-core's ``FloodLink`` policy.

The factory is the link: it outlives its connections, holds the queue toward the neighbour and
decides what to drop; each connection's ``LinkProtocol`` only speaks the handshake. The link is
also the connection's *pull producer*: the transport calls ``resumeProducing`` each time it has
handed everything it was given to the kernel, and only then does the link hand over the next
batch (every update queued meanwhile, in one write). So what is "queued toward the neighbour"
is exactly herd-core's: the updates waiting here plus the batch the transport still holds, and
it is that sum that ``--link-queue-bytes`` bounds.

::

    Down ──connect, every --link-retry──► Connecting ──TCP up──► Handshaking ──proof holds──► Up
     ▲ (updates dropped)                     │ failed, timed out     │ refused, or past       │ lost, peer
     └───────────────────────────────────────┴───────────────────────┴ --link-connect-timeout ┘ sent, stalled

On the wire (see core.py and impls/core/src/auth.rs)::

    → PEER Alford 3b9f0c2e5d7a41c68e0f2b4d6a8c1e3f
    ← HERD Hamilton 6d1e08a4c3b5f7e29d0c1b3a5f7e9d2c 9c4f…(64 hex digits)
    → AUTH 51a0…(64 hex digits)
    → AT Alford +0.000213 kiwi +34.068930-118.445127 1479413884.392014450
      … (the acceptor never sends again: any byte from it, or its close, ends the link)

Updates queued while connecting or handshaking go out once the link is up and are dropped if
it fails; old updates are never replayed after a reconnect. Every drop is counted
(``floods_dropped``) and each episode logged when it starts and when it ends.
"""

from __future__ import annotations

import hmac
import os
from collections import deque

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPullProducer
from twisted.internet.protocol import Protocol, ReconnectingClientFactory
from zope.interface import implementer

from core import NONCE_BYTES, Limits, hello_line, parse_accept, proof, rust_duration

DOWN, CONNECTING, HANDSHAKING, UP = "down", "connecting", "handshaking", "up"

#: The longest handshake answer read (a real one is 136 bytes).
MAX_ANSWER = 256


class LinkProtocol(Protocol):
    """The opener's side of one link connection: the hello, the check of the neighbour's
    answer, our proof; after that it only writes (what its factory, the link, hands it)."""

    factory: FloodLink

    def connectionMade(self) -> None:
        link = self.factory
        self.transport.setTcpNoDelay(True)
        if link.key is None:  # an insecure herd: the hello, then the updates at once
            link.up(self, hello_line(link.me, None))
            return
        self._nonce = os.urandom(NONCE_BYTES)
        self._answer = b""
        self.transport.write(hello_line(link.me, self._nonce))
        link.handshaking(self)

    def dataReceived(self, data: bytes) -> None:
        link = self.factory
        if link.state != HANDSHAKING:
            link.close(self, "peer sent data on a flood link")
            return
        line, newline, rest = data.partition(b"\n")
        self._answer += line
        if len(self._answer) > MAX_ANSWER:
            return self._refuse("handshake answer too long")
        if not newline:
            return None  # the answer is not complete yet
        if rest:
            return self._refuse("peer sent data after its handshake answer")
        accept = parse_accept(self._answer)
        if accept is None:
            return self._refuse("malformed handshake answer")
        name, nonce, tag = accept
        if name != link.peer:
            return self._refuse("the answer names another server")
        nonces = (self._nonce, nonce)
        if not hmac.compare_digest(tag, proof(link.key, b"accept", link.me, link.peer, nonces)):
            return self._refuse("the answer's proof does not match the herd key")
        ours = proof(link.key, b"open", link.me, link.peer, nonces)
        link.up(self, b"AUTH " + ours.hex().encode() + b"\n")
        return None

    def _refuse(self, reason: str) -> None:
        self.factory.refused(reason)
        self.transport.abortConnection()


@implementer(IPullProducer)
class FloodLink(ReconnectingClientFactory):
    """One neighbour's link: reconnects every ``--link-retry``, queues what the herd floods
    toward it (bounded in bytes), and feeds the current connection as its pull producer."""

    protocol = LinkProtocol
    noisy = False  # no "Starting factory" lines in twisted's log
    factor = 1.0  # a fixed interval, not exponential back-off
    jitter = 0.0

    def __init__(
        self,
        me: str,
        peer: str,
        address: tuple[str, int],
        key: bytes | None,
        limits: Limits,
        stats: dict[str, int],
        log,
        reactor,
    ) -> None:
        self.me, self.peer, self.key = me, peer, key
        self._address = address
        self._retry = limits.link_retry
        self._connect_timeout = limits.link_connect_timeout
        self._queue_max = limits.link_queue_bytes
        self._write_stall = limits.link_write_stall
        self.initialDelay = self.delay = self.maxDelay = self._retry
        self.clock = reactor
        self.stats, self.log = stats, log
        self.state = DOWN
        self._last_attempt = reactor.seconds()
        self._conn: LinkProtocol | None = None
        # Updates (and the hello/AUTH line) not yet handed to the transport…
        self._pending: deque[bytes] = deque()
        self._pending_bytes = self._pending_updates = 0
        # …and the batch the transport holds, until it says it took all of it.
        self._handed_bytes = self._handed_updates = 0
        self._idle = False  # the transport asked for more and we had nothing
        self._dropping: int | None = None  # updates dropped in the current episode
        self._deadline = None  # the attempt's connect + handshake deadline
        self._stall = None  # the handed batch's write-stall deadline
        self._first = None  # the first attempt's timer

    def start(self) -> None:
        """The first attempt one interval after start (the members of a herd start together,
        and an attempt at once would mostly be refused), or at the first update if sooner."""
        self._first = self.clock.callLater(self._retry, self._connect)

    def _connect(self) -> None:
        host, port = self._address
        self.clock.connectTCP(host, port, self, timeout=self._connect_timeout)

    # -- what the herd does with the link ---------------------------------------------------

    def queued_bytes(self) -> int:
        return self._pending_bytes + self._handed_bytes

    def send(self, line: bytes) -> None:
        """Queues one update (an AT line with its newline), or drops and counts it."""
        if self.state == DOWN:
            if self._first is not None and self._first.active():  # no attempt yet: make one now
                self._first.cancel()
                self._connect()  # startedConnecting: we are connecting
            elif self.clock.seconds() < self._last_attempt + self._retry:
                self._drop(1, "neighbour down")
                return
            # Otherwise a retry is due and its timer about to fire: the update waits for it.
        if self.queued_bytes() + len(line) > self._queue_max:
            self._drop(1, "queue full")
            return
        if self._dropping is not None:
            self.log.event("floods_resumed", peer=self.peer, dropped=self._dropping)
            self._dropping = None
        self._pending.append(line)
        self._pending_bytes += len(line)
        self._pending_updates += 1
        if self._idle:
            self._hand()

    # -- IPullProducer: the connection's transport asks for more ----------------------------

    def resumeProducing(self) -> None:
        """The transport handed everything given so far to the kernel: that batch is sent."""
        self.stats["floods_out"] += self._handed_updates
        self._handed_bytes = self._handed_updates = 0
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        if self._pending:
            self._hand()
        else:
            self._idle = True

    def stopProducing(self) -> None:
        """The connection is gone; ``clientConnectionLost`` says what that means for the link."""

    def _hand(self) -> None:
        data = b"".join(self._pending)
        self._handed_bytes += len(data)
        self._handed_updates += self._pending_updates
        self._pending.clear()
        self._pending_bytes = self._pending_updates = 0
        self._idle = False
        if self._stall is None:
            self._stall = self.clock.callLater(self._write_stall, self._stalled)
        self._conn.transport.write(data)

    # -- the connection's life ----------------------------------------------------------------

    def startedConnecting(self, connector) -> None:
        self.state = CONNECTING
        self._last_attempt = self.clock.seconds()
        # The connector gives up on the TCP connect by itself; this covers connect + handshake.
        self._deadline = self.clock.callLater(self._connect_timeout, self._attempt_expired)

    def handshaking(self, conn: LinkProtocol) -> None:
        self.state, self._conn = HANDSHAKING, conn

    def up(self, conn: LinkProtocol, first: bytes) -> None:
        """The link is up: ``first`` (our hello or our proof) goes ahead of the queued updates."""
        self.state, self._conn = UP, conn
        self._cancel_deadline()
        self._pending.appendleft(first)
        self._pending_bytes += len(first)
        self.log.event("link_up", peer=self.peer, direction="outbound")
        conn.transport.registerProducer(self, False)  # asks us for data at once

    def refused(self, reason: str) -> None:
        """The neighbour did not prove the herd key: counted, logged, down (to retry later)."""
        self.stats["links_refused"] += 1
        self.log.event("link_refused", peer=self.peer, direction="outbound", reason=reason)
        self._go_down()

    def close(self, conn: LinkProtocol, reason: str) -> None:
        """We end an up link (the neighbour sent data, or took nothing for too long)."""
        if self.state == UP:
            self.log.event("link_down", peer=self.peer, reason=reason)
        self._go_down()
        conn.transport.abortConnection()

    def _stalled(self) -> None:
        self._stall = None
        if self._conn is not None:
            self.close(self._conn, f"neighbour took no bytes for {rust_duration(self._write_stall)}")

    def _attempt_expired(self) -> None:
        """No answer within the connect timeout: a hung neighbour, given up like a connect
        (not a refusal). A TCP connect still pending is the connector's own timeout's."""
        self._deadline = None
        if self.state == HANDSHAKING:
            conn = self._conn
            self._go_down()
            conn.transport.abortConnection()

    def clientConnectionFailed(self, connector, reason) -> None:
        self._go_down()
        self._schedule_retry()
        super().clientConnectionFailed(connector, reason)

    def clientConnectionLost(self, connector, reason) -> None:
        if self.state == UP:
            why = "closed by peer" if reason.check(ConnectionDone) else str(reason.value)
            self.log.event("link_down", peer=self.peer, reason=why)
        self._go_down()
        self._schedule_retry()
        super().clientConnectionLost(connector, reason)

    def _schedule_retry(self) -> None:
        """The next attempt one ``--link-retry`` after the last one began (at once if that has
        passed), as herd-core's ``last_attempt + retry``; ``retry()`` waits ``self.delay``."""
        due = self._last_attempt + self._retry - self.clock.seconds()
        self.delay = self.maxDelay = max(0.0, due)

    def _go_down(self) -> None:
        lost = self._pending_updates + self._handed_updates
        self.state, self._conn, self._idle = DOWN, None, False
        self._pending.clear()
        self._pending_bytes = self._pending_updates = 0
        self._handed_bytes = self._handed_updates = 0
        self._cancel_deadline()
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        if lost:
            self._drop(lost, "link lost")

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _drop(self, n: int, reason: str) -> None:
        self.stats["floods_dropped"] += n
        if self._dropping is None:
            self._dropping = n
            self.log.event("floods_dropping", peer=self.peer, reason=reason)
        else:
            self._dropping += n
