"""The places upstream: ``twisted.web.client.Agent`` over a persistent ``HTTPConnectionPool``.

One Agent and one pool serve every WHATSAT of the server. The pool keeps HTTP/1.1 connections
alive and reuses them (at most ``--upstream-idle-max`` idle ones are kept, as herd-core's
``PlacesPool``), and retries a request once on a fresh connection when a kept-alive one turns
out to have been closed by the backend before any byte of the answer came back — herd-core's
one stale-connection retry, which Twisted does for idempotent requests on its own. The whole
exchange (connect, the retry, the body) has one deadline, ``--upstream-timeout``:
``Deferred.addTimeout`` cancels the exchange at it, and the cancellation reaches whatever the
exchange waits on and aborts that connection (a timed-out connection never goes back to the
pool, and the pool does not retry a cancelled request). The deadline is also checked when the
exchange ends, because the timeout's call can be overdue: see ``Places._settle``.

``lookup`` never fails: an upstream failure becomes herd-core's error JSON, so the client's
WHATSAT reply is always framed (the AT line, JSON, two newlines).
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    ResponseDone,
    ResponseNeverReceived,
    _RetryingHTTP11ClientProtocol,
)
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from core import MAX_RESPONSE, Limits, PlacesError, PlacesQuery, trim_places

NEARBY_PATH = "/maps/api/place/nearbysearch/json"

#: herd-core keeps idle connections until the backend closes them; the pool needs a number.
IDLE_TIMEOUT = 240.0


class ResponseTooLargeError(Exception):
    def __str__(self) -> str:
        return f"response larger than {MAX_RESPONSE} bytes"


class _Pool(HTTPConnectionPool):
    """``HTTPConnectionPool`` handing out the most recently returned idle connection first.

    Twisted's pool takes the oldest (``pop(0)``), which keeps every connection a burst opened in
    rotation; herd-core (and the contract, §8) take the newest: the one least likely to have been
    closed by the backend, and the others age out. ``_putConnection`` already drops the oldest
    when more than ``maxPersistentPerHost`` are idle. The rest is Twisted's ``getConnection``.
    """

    def getConnection(self, key, endpoint):
        connections = self._connections.get(key)
        while connections:
            connection = connections.pop()
            self._timeouts.pop(connection).cancel()
            if connection.state == "QUIESCENT":
                if self.retryAutomatically:
                    connection = _RetryingHTTP11ClientProtocol(
                        connection, lambda: self._newConnection(key, endpoint)
                    )
                return succeed(connection)
        return self._newConnection(key, endpoint)


@implementer(IStreamClientEndpoint)
class _Counted:
    """The backend's endpoint, counting the connections the pool opens (``upstream_connects``)."""

    def __init__(self, endpoint: IStreamClientEndpoint, stats: dict[str, int]) -> None:
        self._endpoint, self._stats = endpoint, stats

    def connect(self, factory):
        self._stats["upstream_connects"] += 1
        return self._endpoint.connect(factory)


@implementer(IAgentEndpointFactory)
class _Backend:
    """Every request goes to the one places backend."""

    def __init__(self, endpoint: IStreamClientEndpoint) -> None:
        self._endpoint = endpoint

    def endpointForURI(self, uri):
        return self._endpoint


class _Body(Protocol):
    """Collects a response body, at most ``MAX_RESPONSE`` bytes (a broken upstream must not
    eat memory); ``done`` fires with the bytes or fails."""

    def __init__(self) -> None:
        self.done: Deferred[bytes] = Deferred(lambda _: self.transport.stopProducing())
        self._parts: list[bytes] = []
        self._size = 0

    def dataReceived(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > MAX_RESPONSE:
            self._parts.clear()
            if not self.done.called:
                self.done.errback(ResponseTooLargeError())
            self.transport.stopProducing()
        else:
            self._parts.append(data)

    def connectionLost(self, reason: Failure) -> None:
        if self.done.called:
            return
        if reason.check(ResponseDone):
            self.done.callback(b"".join(self._parts))
        else:
            self.done.errback(reason)


class Places:
    """The places client of one server: ``lookup(query)`` fires with the WHATSAT reply."""

    def __init__(self, reactor, address: tuple[str, int] | None, limits: Limits, herd) -> None:
        self._reactor, self._herd = reactor, herd
        self._timeout = limits.upstream_timeout
        self._address = address
        if address is None:
            return
        host, port = address
        pool = _Pool(reactor, persistent=True)
        pool.maxPersistentPerHost = limits.upstream_idle_max
        pool.cachedConnectionTimeout = IDLE_TIMEOUT
        pool.retryAutomatically = True  # the one retry of a stale kept-alive connection
        endpoint = _Counted(TCP4ClientEndpoint(reactor, host, port, timeout=self._timeout), herd.stats)
        self._agent = Agent.usingEndpointFactory(reactor, _Backend(endpoint), pool=pool)
        self._prefix = f"http://{host}:{port}{NEARBY_PATH}?".encode()

    def lookup(self, query: PlacesQuery) -> Deferred[bytes]:
        if self._address is None:
            return succeed(self._herd.complete(query, None, "no places backend configured"))
        url = self._prefix + f"location={query.location}&radius={query.radius_m}&key=herdbench".encode()
        deadline = self._reactor.seconds() + self._timeout
        d = self._agent.request(b"GET", url)
        d.addCallback(self._read)
        d.addTimeout(self._timeout, self._reactor)
        d.addBoth(self._settle, query, deadline)
        return d

    def _settle(self, outcome: tuple[int, bytes] | Failure, query: PlacesQuery, deadline: float) -> bytes:
        """The reply, once the exchange ended: answered, failed, or cancelled at the deadline.

        Whatever ends the exchange at or past its deadline is the timeout, as in herd-core. The
        ``addTimeout`` call alone does not ensure that: after a stall of the reactor thread (a
        starved CPU, a slow write in a timer such as the log's flush), the reactor handles the
        reads that became ready during it before the timed calls that came due during it, so a
        late answer can end the exchange before its overdue timeout call runs (and cancels that
        call). Such an answer was read whole, so its connection went back to the pool clean.
        """
        if self._reactor.seconds() >= deadline:
            return self._herd.complete(query, None, "upstream timed out")
        if isinstance(outcome, Failure):
            return self._herd.complete(query, None, _describe(outcome))
        return self._answered(outcome, query)

    @staticmethod
    def _read(response) -> Deferred[tuple[int, bytes]]:
        body = _Body()
        response.deliverBody(body)  # read it whatever the status, so the connection can be reused
        return body.done.addCallback(lambda data: (response.code, data))

    def _answered(self, answer: tuple[int, bytes], query: PlacesQuery) -> bytes:
        status, body = answer
        if status != 200:
            return self._herd.complete(query, None, f"upstream status {status}")
        try:
            places = trim_places(body, query.bound)
        except PlacesError as e:
            return self._herd.complete(query, None, str(e))
        return self._herd.complete(query, places, None)


def _describe(failure: Failure) -> str:
    """herd-core's ``UpstreamError`` text for what went wrong."""
    e = failure.value
    if failure.check(ConnectError):
        return f"upstream unreachable: {e}"
    if failure.check(ResponseNeverReceived):
        return "upstream unreachable: connection closed by upstream (no response)"
    if failure.check(ResponseTooLargeError):
        return str(e)
    reasons = getattr(e, "reasons", None)  # ResponseFailed and friends wrap the real failures
    detail = "; ".join(r.getErrorMessage() for r in reasons) if reasons else failure.getErrorMessage()
    return f"malformed HTTP response: {detail}"
