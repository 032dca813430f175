"""Unit tests: the protocol rules against herd-core's own test cases, and the protocols driven
over in-memory transports and a fake clock (``twisted.internet.testing``), as Twisted tests do.

Run with Twisted's runner, in this folder (impl.toml's lint does)::

    .guest/venv/bin/python -m twisted.trial --temp-directory .guest/trial test_herd

The black-box conformance cases are ``harness verify --impl twisted``.
"""

from __future__ import annotations

import json

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import TestCase

import core
from core import Herd, Limits, Link, PlacesQuery
from events import EventLog
from links import UP, FloodLink
from places import Places
from serving import HerdServer

NOW = core.parse_time("1479413884.655887836")
KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")


class Transport(StringTransport):
    """A StringTransport with the TCP option our protocols set."""

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.nodelay = enabled


def herd(name: str = "Alford", neighbours=("Hamilton", "Welsh"), key: bytes | None = None) -> Herd:
    return Herd(name, list(neighbours), key, 3600, 4_000_000, core.new_stats(), EventLog(None, name, False))


class ProtocolRules(TestCase):
    def test_the_sample_iamat_gets_the_sample_reply_and_floods_everywhere(self) -> None:
        h = herd()
        line = b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450"
        reply, flood = h.handle(line, Link(), NOW)
        expected = b"AT Alford +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450\n"
        self.assertEqual(reply, expected)
        self.assertEqual((flood.line, flood.to), (expected, [0, 1]))

    def test_white_space_runs_tabs_and_crlf_are_accepted(self) -> None:
        line = b"  IAMAT\tkiwi   +34.068930-118.445127 \t1479413884.392014450 \r"
        reply, _ = herd().handle(line, Link(), NOW)
        self.assertTrue(reply.startswith(b"AT Alford +0.263873386 kiwi +34.068930"))

    def test_invalid_forms_are_quoted_back(self) -> None:
        bad = [
            b"IAMTA kiwi +34.068930-118.445127 1479413884.392014450",
            b"IAMAT kiwi +34.068930-118.445127",
            b"IAMAT kiwi 34.068930-118.445127 1479413884.392014450",
            b"IAMAT kiwi +94.068930-118.445127 1479413884.392014450",
            b"IAMAT kiwi +34.068930-118.445127 -1479413884.392014450",
            b"IAMAT kiwi +34.068930-118.445127 1479413884.",
            b"WHATSAT kiwi 0 5",
            b"WHATSAT kiwi 51 5",
            b"WHATSAT kiwi -1 5",
            b"WHATSAT kiwi 10 21",
            b"WHATSAT kiwi 10 0",
            b"WHATSAT nobody 10 5",
            b"PEER",
            b"PEER Mallory",
            b"",
            b"\xff\xfe IAMAT",
        ]
        h = herd()
        h.handle(b"IAMAT kiwi +34.068930-118.445127 1479413884.392014450", Link(), NOW)
        for line in bad:
            self.assertEqual(h.handle(line + b"\r", Link(), NOW), (b"? " + line + b"\n", None), line)

    def test_times_locations_and_deltas_are_exact(self) -> None:
        self.assertEqual(core.parse_time("1.0000000019"), 1_000_000_001)
        for text in ["-1.5", "+1.5", "abc", "", ".5", "5.", "1e9", "1.2.3", " 1", "1" * 21]:
            self.assertIsNone(core.parse_time(text), text)
        self.assertEqual(core.format_delta(-1_500_000_000), "-1.500000000")
        self.assertEqual(core.format_delta(0), "+0.000000000")
        self.assertIsNotNone(core.parse_location("-90+180"))
        for text in ["+34.068930118.445127", "+34.0-180.5", "+34.-118.0", "+34.0-118.0+1", "+1e1-118"]:
            self.assertIsNone(core.parse_location(text), text)

    def test_newer_wins_and_only_what_is_stored_floods_on(self) -> None:
        h = herd("Hamilton", ["Alford", "Holiday", "Welsh"])
        from_holiday = Link(peer=1)
        at = b"AT Alford +0.1 kiwi +1.0-2.0 1479413884.5"
        self.assertEqual(h.handle(at, from_holiday, NOW)[1].to, [2])  # not back, not to the origin
        self.assertIsNone(h.handle(at, Link(), NOW)[1])  # the same again ends the flood
        self.assertIsNone(h.handle(at.replace(b".5", b".4"), Link(), NOW)[1])  # older: ignored
        query, _ = h.handle(b"WHATSAT kiwi 10.0005 2", Link(), NOW)
        self.assertEqual(query, PlacesQuery(at.decode(), "1.0,-2.0", 10001, 2))

    def test_the_store_forgets_after_the_ttl_and_evicts_the_oldest_at_the_cap(self) -> None:
        def update(client: str, time: int, now: int) -> str:
            return store.update(client, f"AT A +0 {client} +1-2 {time}", time, now * core.NANOS)

        store = core.LocationStore(10, 2)
        self.assertEqual(update("a", 5, 0), "stored")
        self.assertIsNotNone(store.get("a", 10 * core.NANOS))
        self.assertIsNone(store.get("a", 11 * core.NANOS))
        self.assertEqual(update("a", 4, 11), "stored")  # expired: an older time is stored again
        update("b", 1, 12)
        self.assertEqual(update("c", 1, 13), "evicting")
        self.assertIsNone(store.get("a", 13 * core.NANOS))

    def test_the_handshake_matches_the_contract_test_vector(self) -> None:
        nonces = (bytes(range(0xA0, 0xB0)), bytes(range(0xB0, 0xC0)))
        accept = core.proof(KEY, b"accept", "Alford", "Hamilton", nonces)
        opened = core.proof(KEY, b"open", "Alford", "Hamilton", nonces)
        self.assertEqual(accept.hex(), "ece5013f5ddb19df280b5acc4b66298655087898253208085b6f5755d632e607")
        self.assertEqual(opened.hex(), "cae3932d617d48cec1bda95935499d10953c9a6dea4530b2cf35bc7e40ba010d")

    def test_places_json_is_trimmed_and_printed_as_serde_json_does(self) -> None:
        results = b'[{"n":"a\\nb","lat":34.1220361},{"n":2},{"n":3}]'
        body = b'{"html_attributions":[],"results":' + results + b',"status":"OK"}'
        text = core.trim_places(body, 2)
        self.assertEqual(json.loads(text)["results"], [{"n": "a\nb", "lat": 34.1220361}, {"n": 2}])
        self.assertTrue(text.startswith('{\n  "html_attributions": [],\n  "results": [\n    {\n'))
        self.assertNotIn("\n\n", text)
        for value, printed in [
            (5.0, "5.0"),
            (1e-7, "1e-7"),
            (1e16, "1e16"),
            (0.00001, "0.00001"),
            (-0.0, "-0.0"),
        ]:
            self.assertEqual(core.pretty_json(value), printed)
        for broken in [b"{not json", b"[]", b'{"results": 3}', b'{"a": NaN}']:
            self.assertRaises(core.PlacesError, core.trim_places, broken, 1)
        error = json.loads(core.error_places("upstream timed out"))
        self.assertEqual((error["status"], error["results"]), ("UNKNOWN_ERROR", []))


class Handshake(TestCase):
    """The opener (FloodLink + LinkProtocol) against the acceptor (Herd.handle), in memory."""

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.stats = core.new_stats()
        log = EventLog(None, "Alford", False)
        self.link = FloodLink(
            "Alford", "Hamilton", ("127.0.0.1", 1), KEY, Limits(), self.stats, log, self.clock
        )
        self.hamilton = herd("Hamilton", ["Alford"], KEY)
        self.acceptor_link = Link()

    def connect(self, acceptor: Herd) -> tuple[object, Transport, bytes]:
        """Connects the link; returns its protocol, its transport and ``acceptor``'s answer."""
        self.link.startedConnecting(None)
        proto = self.link.buildProtocol(None)
        transport = Transport()
        proto.makeConnection(transport)
        hello = transport.value()
        self.assertTrue(hello.startswith(b"PEER Alford ") and hello.endswith(b"\n"))
        answer, _ = acceptor.handle(hello.rstrip(b"\n"), self.acceptor_link, NOW)
        self.assertTrue(answer.startswith(b"HERD Hamilton "))
        transport.clear()
        return proto, transport, answer

    def test_the_link_proves_the_key_and_then_sends_its_queued_updates(self) -> None:
        proto, transport, answer = self.connect(self.hamilton)
        update = b"AT Alford +0.1 kiwi +1.0-2.0 1479413884.5\n"
        self.link.send(update)
        self.assertEqual(transport.value(), b"", "nothing but the hello before the answer")
        proto.dataReceived(answer)
        self.assertEqual(self.link.state, UP)
        self.link.resumeProducing()  # what a real transport does on registerProducer
        auth, sent = transport.value().split(b"\n", 1)
        self.assertEqual(sent, update, "the proof, then the update queued meanwhile")
        self.assertEqual(self.hamilton.handle(auth, self.acceptor_link, NOW), (None, None))
        self.assertEqual(self.acceptor_link.peer, 0, "Hamilton takes the link as Alford's")
        self.link.resumeProducing()  # the kernel took the batch
        self.assertEqual(self.stats["floods_out"], 1)

    def test_an_answer_made_with_another_key_is_refused_and_the_queue_dropped(self) -> None:
        proto, transport, answer = self.connect(herd("Hamilton", ["Alford"], bytes(32)))
        self.link.send(b"AT Alford +0.1 kiwi +1.0-2.0 1479413884.5\n")
        proto.dataReceived(answer)
        self.assertTrue(transport.disconnected)
        self.assertEqual((self.stats["links_refused"], self.stats["floods_dropped"]), (1, 1))

    def test_the_queue_is_bounded_in_bytes_held_here_and_in_the_transport(self) -> None:
        self.link._queue_max = 1000
        proto, _, answer = self.connect(self.hamilton)
        proto.dataReceived(answer)
        self.link.resumeProducing()  # AUTH (70 bytes) is handed to the transport
        update = b"x" * 99 + b"\n"
        for _ in range(20):
            self.link.send(update)
        self.assertEqual(self.stats["floods_dropped"], 11, "AUTH held by the transport + 9 queued here")
        self.link.resumeProducing()  # the kernel took AUTH; the 9 updates are handed over
        self.link.send(update)
        self.assertEqual(self.stats["floods_dropped"], 11, "900 + 100 bytes owed: at the bound, not past it")
        self.link.send(update)
        self.assertEqual(self.stats["floods_dropped"], 12)


class Connections(TestCase):
    """A client connection's order and back-pressure, over a StringTransport."""

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        stats = core.new_stats()
        log = EventLog(None, "Alford", False)
        self.herd = Herd("Alford", [], None, 3600, 100, stats, log)
        self.answers = []
        places = self  # lookup() below: answers come when the test says
        self.server = HerdServer(self.clock, self.herd, [], places, Limits(max_line=100), stats, log)
        self.conn = self.server.buildProtocol(None)
        self.transport = Transport()
        self.conn.makeConnection(self.transport)

    def lookup(self, query):
        d = Deferred()
        self.answers.append((d, query))
        return d

    def test_replies_after_a_whatsat_wait_for_it_and_leave_in_order(self) -> None:
        self.conn.dataReceived(b"IAMAT k +1-2 1.5\nWHATSAT k 1 1\nIAMAT k +1-2 1.6\nBAD\n")
        self.assertTrue(self.transport.value().startswith(b"AT Alford "))
        self.assertEqual(self.transport.value().count(b"\n"), 1)
        d, query = self.answers[0]
        self.assertEqual(query.at_line.split()[-1], "1.5", "the WHATSAT saw the IAMAT before it")
        d.callback(b"PLACES\n\n")
        lines = self.transport.value().split(b"\n")
        self.assertEqual((lines[1], lines[4]), (b"PLACES", b"? BAD"))

    def test_a_paused_connection_handles_nothing_until_resumed(self) -> None:
        self.conn.pauseProducing()  # the transport holds more than --pause-output
        self.assertEqual(self.transport.producerState, "paused")
        self.conn.dataReceived(b"IAMAT k +1-2 1.5\n")
        self.assertEqual(self.transport.value(), b"")
        self.conn.resumeProducing()
        self.assertTrue(self.transport.value().startswith(b"AT Alford "))

    def test_a_client_that_takes_nothing_for_the_write_stall_is_dropped(self) -> None:
        self.conn.pauseProducing()
        self.clock.advance(Limits().write_stall)
        self.assertTrue(self.transport.disconnected)

    def test_an_oversized_line_is_quoted_and_closes_after_the_replies_before_it(self) -> None:
        self.conn.dataReceived(b"IAMAT k +1-2 1.5\n" + b"y" * 101)
        out = self.transport.value().split(b"\n")
        self.assertEqual(out[1], b"? " + b"y" * 64)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.herd.stats["oversized"], 1)


class PlacesDeadline(TestCase):
    """One deadline for the whole places exchange, over the real Agent and pool on a fake
    reactor: the backend's side of each connection is a StringTransport."""

    BODY = b'{"results": [{"name": "a"}, {"name": "b"}], "status": "OK"}'
    ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.herd = herd("Alford", [])
        self.places = Places(self.clock, ("127.0.0.1", 9), Limits(upstream_timeout=0.6), self.herd)
        self.query = PlacesQuery("AT Alford +0.1 k +1-2 1.5", "+1,-2", 10_000, 5)

    def lookup(self) -> list[bytes]:
        replies: list[bytes] = []
        self.places.lookup(self.query).addCallback(replies.append)
        return replies

    def accept(self, n: int) -> tuple[object, Transport]:
        """The n-th connection the pool opened, made: its request is written."""
        factory = self.clock.tcpClients[n][2]
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 9))
        transport = Transport()
        protocol.makeConnection(transport)
        self.assertIn(b"GET /maps/api/place/nearbysearch/json?location=+1,-2", transport.value())
        return protocol, transport

    def test_an_answer_in_time_is_used_and_its_connection_kept_for_the_next(self) -> None:
        replies = self.lookup()
        protocol, transport = self.accept(0)
        self.clock.advance(0.5)
        protocol.dataReceived(self.ANSWER)
        self.assertIn(b'"status": "OK"', replies[0])
        transport.clear()
        self.lookup()
        self.assertEqual(len(self.clock.tcpClients), 1, "the kept-alive connection is reused")
        self.assertIn(b"GET /maps/api/place/nearbysearch/json", transport.value())

    def test_at_the_deadline_the_connection_is_aborted_and_never_reused(self) -> None:
        replies = self.lookup()
        _, transport = self.accept(0)
        self.clock.advance(0.6)
        self.assertIn(b'"status": "UNKNOWN_ERROR"', replies[0])
        self.assertIn(b"upstream timed out", replies[0])
        self.assertTrue(transport.disconnected, "aborted: its late answer is never read")
        self.lookup()
        self.assertEqual(len(self.clock.tcpClients), 2, "the next exchange opens a fresh connection")

    def test_an_answer_handled_after_the_deadline_is_a_timeout(self) -> None:
        """A stalled reactor handles the reads that became ready before the timeout's overdue
        call: the answer that ends the exchange past its deadline must not be taken."""
        replies = self.lookup()
        protocol, _ = self.accept(0)
        self.clock.rightNow += 1.0  # a stall: the deadline passed, its call has not run yet
        protocol.dataReceived(self.ANSWER)
        self.assertIn(b'"status": "UNKNOWN_ERROR"', replies[0])
        self.assertIn(b"upstream timed out", replies[0])
        self.assertEqual((self.herd.stats["upstream_ok"], self.herd.stats["upstream_errors"]), (0, 1))
        self.clock.advance(0)  # the overdue call finds the exchange over
        self.assertEqual(len(replies), 1)
