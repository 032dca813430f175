"""Flood links: one task per neighbour connects, proves membership and carries the AT lines.

::

    connection task ── FloodLink.send(line) ── queue (bounded in bytes, drops counted) ── wake ──┐
                                                                                                 │
    link task: loop {                                                                            │
      down: wait until a retry is due, or an update asks for one (Event.wait under a timeout) ◄──┤
      asyncio.timeout_at(attempt + --link-connect-timeout):                                      │
          open_connection, PEER <me> <nonce> ── read the HERD answer ── check its proof          │
      up: AUTH + the queue ── transport.write ── wait for the next wake ◄────────────────────────┘
          a watcher task reads the socket: any byte, end of stream or error means the neighbour
          is gone; no bytes taken for --link-write-stall also closes the link
    }

herd-core's ``FloodLink`` (``policy/link.rs``), whose rules this follows: the link is down,
connecting, handshaking or up; a down link retries every ``--link-retry`` (the first attempt one
interval after start), and an update that finds it down with a retry due starts one at once,
waiting behind the hello; an update that finds it down with no retry due is dropped. Updates
queued while connecting go out once the link is up and are lost if it fails. The queue toward
a neighbour is bounded in bytes (``--link-queue-bytes``), counting both what waits here and
what the transport holds that the socket has not taken; past it updates are dropped. Every drop
is counted (``floods_dropped``); an episode of drops is logged once when it starts
(``floods_dropping``) and once when an update is queued again (``floods_resumed``). Old updates
are never replayed after a reconnect.

What the socket has taken is known from the transport: bytes handed to ``transport.write`` less
``get_write_buffer_size()``. An update counts as sent (``floods_out``) once all its bytes are
taken; the link's stall clock restarts whenever some are.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import deque

import auth
from events import EventLog, Stats, os_error_text

DOWN, CONNECTING, HANDSHAKING, UP = "down", "connecting", "handshaking", "up"
#: The longest handshake answer a link reads (a real one is 136 bytes).
MAX_ANSWER = 256


def duration_text(seconds: float) -> str:
    """A duration as Rust's ``Debug`` prints one: ``5s``, ``1.5s``, ``500ms``."""
    if seconds >= 1:
        return f"{seconds:g}s"
    if seconds >= 0.001:
        return f"{seconds * 1000:g}ms"
    return f"{seconds * 1e6:g}µs"


class Refused(Exception):
    """The neighbour's handshake answer did not prove it holds the herd key."""


class FloodLink:
    """One neighbour's outbound link: its queue, its policy, and the task that drives it."""

    def __init__(
        self,
        me: str,
        peer: str,
        address: tuple[str, int],
        key: bytes | None,
        limits,
        stats: Stats,
        log: EventLog,
    ) -> None:
        self.me, self.peer, self.address, self.key = me, peer, address, key
        self.retry = limits.link_retry
        self.connect_timeout = limits.link_connect_timeout
        self.queue_bytes = limits.link_queue_bytes
        self.write_stall = limits.link_write_stall
        self.stats, self.log = stats, log
        self.loop = asyncio.get_running_loop()
        self.state = DOWN
        #: The first idle retry is one interval after start: the herd's members start together.
        self.created = self.loop.time()
        self.last_attempt: float | None = None
        #: This attempt's nonce (keyed herds).
        self.nonce: bytes | None = None
        #: Bytes not yet handed to the transport.
        self.pending = bytearray()
        #: Bytes handed to the transport that the socket has not been seen to take.
        self.in_flight = 0
        #: Every queued byte (in flight, then pending), as [length, is an update], oldest first.
        self.segments: deque[list] = deque()
        #: When the socket last took bytes, or when bytes became owed to an idle link.
        self.last_progress = self.created
        #: Updates dropped in the current episode (None: not dropping).
        self.dropping: int | None = None
        self.transport: asyncio.Transport | None = None
        self.wake = asyncio.Event()
        self.task: asyncio.Task | None = None

    # -- what the connection tasks call ------------------------------------------------------------

    def send(self, line: bytes, now: float) -> None:
        """Queues one update line (newline included), or drops and counts it."""
        if self.state == DOWN:
            if self.last_attempt is not None and now < self.last_attempt + self.retry:
                return self._drop(1, "neighbour down")
            self._start_attempt(now)  # connect on demand; the update waits behind the hello
        self._sync(now)
        queued = len(self.pending) + self.in_flight
        if queued + len(line) > self.queue_bytes:
            return self._drop(1, "queue full")
        if self.dropping is not None:
            self.log.event("floods_resumed", peer=self.peer, dropped=self.dropping)
            self.dropping = None
        if queued == 0:
            self.last_progress = now
        self.pending += line
        self.segments.append([len(line), True])
        self.wake.set()

    # -- the link task -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Drives the link for as long as the server runs."""
        while True:
            await self._until_attempt()
            writer = None
            try:
                async with asyncio.timeout_at(self.last_attempt + self.connect_timeout):
                    reader, writer = await asyncio.open_connection(*self.address)
                    self._connected(writer.transport)
                    if self.key is not None:
                        await self._handshake(reader)
            except Refused as refusal:
                self.stats.links_refused += 1
                self.log.event("link_refused", peer=self.peer, direction="outbound", reason=str(refusal))
                self._go_down()
            except (OSError, EOFError):  # refused, unreachable, reset, or past the deadline
                self._go_down()
            except Exception as e:  # a bug: said, and the link starts over
                self.log.error("link", f"{self.peer}: {e!r}")
                self._go_down()
            if self.state != UP:
                if writer is not None:
                    writer.transport.abort()
                continue
            watcher = asyncio.create_task(self._watch(reader))
            try:
                await self._carry()
            finally:
                watcher.cancel()
                writer.transport.abort()

    async def _until_attempt(self) -> None:
        """Waits while the link is down: until a retry is due (then starts one), or until an
        update started one."""
        while self.state == DOWN:
            due = (self.last_attempt if self.last_attempt is not None else self.created) + self.retry
            if self.loop.time() >= due:
                self._start_attempt(self.loop.time())
                return
            self.wake.clear()
            try:
                async with asyncio.timeout_at(due):
                    await self.wake.wait()
            except TimeoutError:
                pass

    def _connected(self, transport: asyncio.Transport) -> None:
        """The attempt connected: the hello may go. In an insecure herd the link is up and the
        updates queued behind the hello go too; otherwise they wait for the neighbour's answer."""
        self.transport = transport
        self.last_progress = self.loop.time()
        if self.key is None:
            self._go_up()
            self._transmit()
            return
        self.state = HANDSHAKING
        hello = self.segments[0][0]
        self._write(bytes(self.pending[:hello]))
        del self.pending[:hello]

    async def _handshake(self, reader: asyncio.StreamReader) -> None:
        """Reads the neighbour's answer (one line) and checks it; on success our proof goes ahead
        of the queued updates and the link is up."""
        answer = bytearray()
        while True:
            data = await reader.read(MAX_ANSWER)
            if not data:
                raise EOFError("closed by peer")
            line, newline, rest = data.partition(b"\n")
            answer += line
            if len(answer) > MAX_ANSWER:
                raise Refused("handshake answer too long")
            if newline:
                break
        if rest:
            raise Refused("peer sent data after its handshake answer")
        accept = auth.parse_accept(bytes(answer))
        if accept is None:
            raise Refused("malformed handshake answer")
        name, nonce, accept_proof = accept
        if name != self.peer:
            raise Refused("the answer names another server")
        if not auth.verify(self.key, auth.ACCEPT, self.me, self.peer, self.nonce, nonce, accept_proof):
            raise Refused("the answer's proof does not match the herd key")
        proof_line = auth.auth_line(auth.proof(self.key, auth.OPEN, self.me, self.peer, self.nonce, nonce))
        # The proof goes ahead of the first update (behind the hello, if that is still queued).
        first_update = next((i for i, (_, update) in enumerate(self.segments) if update), len(self.segments))
        self.segments.insert(first_update, [len(proof_line), False])
        self.pending[0:0] = proof_line
        self._go_up()

    async def _carry(self) -> None:
        """The link is up: hands what is queued to the transport whenever woken, and gives the
        neighbour up when it takes nothing for --link-write-stall."""
        while self.state == UP:
            now = self.loop.time()
            self._sync(now)
            self._transmit()
            owed = self.in_flight + len(self.pending)
            if owed and now >= self.last_progress + self.write_stall:
                reason = f"neighbour took no bytes for {duration_text(self.write_stall)}"
                self._closed(reason)
                return
            self.wake.clear()
            try:
                async with asyncio.timeout_at(self.last_progress + self.write_stall if owed else None):
                    await self.wake.wait()
            except TimeoutError:
                pass

    async def _watch(self, reader: asyncio.StreamReader) -> None:
        """Peers never send on a flood link once it is up: any byte, the end of the stream or an
        error means the neighbour is gone."""
        try:
            data = await reader.read(MAX_ANSWER)
            reason = "peer sent data on a flood link" if data else "closed by peer"
        except OSError as e:
            reason = os_error_text(e)
        self._closed(reason)
        self.wake.set()

    # -- the queue ---------------------------------------------------------------------------------

    def _start_attempt(self, now: float) -> None:
        self.state = CONNECTING
        self.last_attempt = now
        self.nonce = secrets.token_bytes(auth.NONCE_BYTES) if self.key is not None else None
        hello = auth.hello_line(self.me, self.nonce)
        self.pending[:] = hello
        self.segments.append([len(hello), False])
        self.wake.set()

    def _go_up(self) -> None:
        self.state = UP
        self.log.event("link_up", peer=self.peer, direction="outbound")

    def _closed(self, reason: str) -> None:
        """The connection ended (the peer closed it, sent something, a write failed, or it
        stalled): what was queued is lost."""
        if self.state == UP:
            self._go_down()
            self.log.event("link_down", peer=self.peer, reason=reason)
        elif self.state != DOWN:
            self._go_down()

    def _go_down(self) -> None:
        lost = sum(1 for _, update in self.segments if update)
        self.state = DOWN
        self.pending.clear()
        self.segments.clear()
        self.in_flight = 0
        self.transport = None
        if lost:
            self._drop(lost, "link lost")

    def _drop(self, n: int, reason: str) -> None:
        self.stats.floods_dropped += n
        if self.dropping is None:
            self.dropping = n
            self.log.event("floods_dropping", peer=self.peer, reason=reason)
        else:
            self.dropping += n

    def _transmit(self) -> None:
        """Hands everything queued to the transport (which sends what the socket takes now and
        buffers the rest)."""
        if self.pending and self.state == UP:
            data, self.pending = self.pending, bytearray()
            self._write(data)

    def _write(self, data: bytes | bytearray) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return  # the watcher is about to report the close
        transport.write(data)
        self.in_flight += len(data)
        self._sync(self.loop.time())

    def _sync(self, now: float) -> None:
        """Counts what the socket took since the last look: updates wholly taken are sent."""
        transport = self.transport
        if not self.in_flight or transport is None or transport.is_closing():
            return
        taken = self.in_flight - transport.get_write_buffer_size()
        if taken <= 0:
            return
        self.in_flight -= taken
        self.last_progress = now
        sent = 0
        segments = self.segments
        while taken and segments:
            front = segments[0]
            if taken < front[0]:
                front[0] -= taken
                break
            taken -= front[0]
            sent += front[1]
            segments.popleft()
        self.stats.floods_out += sent


def start(
    me: str,
    peers: list[tuple[str, tuple[str, int]]],
    key: bytes | None,
    limits,
    stats: Stats,
    log: EventLog,
) -> list[FloodLink]:
    """One link per neighbour, in ``--peer`` order (flood targets are indices into it), each
    driven by a task of its own on the running loop."""
    links = [FloodLink(me, name, address, key, limits, stats, log) for name, address in peers]
    for link in links:
        link.task = asyncio.create_task(link.run(), name=f"link-{link.peer}")
    return links
