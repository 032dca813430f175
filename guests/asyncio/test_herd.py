"""Unit tests of the parts without I/O, against herd-core's own test literals.

    .guest/venv/bin/python -m unittest -v        (in this folder)

The whole server is checked from outside by ``harness verify --impl asyncio`` (and
``asyncio+uvloop``), which runs the conformance cases against a herd of it.
"""

from __future__ import annotations

import json
import unittest

import auth
import places
from events import EventLog, Stats
from protocol import Herd, Link, LocationStore, Lookup, format_delta, parse_delta, parse_time

NOW = 1_479_413_884_655_887_836
IAMAT = b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450"
AT = b"AT Alford +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450"


def herd(name: str = "Alford", neighbours: tuple[str, ...] = (), key: bytes | None = None) -> Herd:
    return Herd(name, list(neighbours), key, 3600, 4_000_000, Stats(), EventLog(None, name, False))


class Fields(unittest.TestCase):
    def test_times_are_exact_and_strict(self) -> None:
        self.assertEqual(parse_time("1479413884.392014450"), 1_479_413_884_392_014_450)
        self.assertEqual(parse_time("5.5"), 5_500_000_000)
        self.assertEqual(parse_time("1.0000000019"), 1_000_000_001)
        for bad in ["-1.5", "+1.5", "abc", "", ".5", "5.", "1e9", "12a.3", "1.2.3", " 1", "١"]:
            self.assertIsNone(parse_time(bad), bad)
        self.assertEqual(format_delta(-1_500_000_000), "-1.500000000")
        self.assertEqual(parse_delta("-0.263873386"), -263_873_386)


class Service(unittest.TestCase):
    def test_sample_iamat_gets_the_sample_at_reply_and_floods(self) -> None:
        h = herd(neighbours=("Hamilton", "Welsh"))
        reply, flood = h.handle(IAMAT, Link(), NOW)
        self.assertEqual(reply, AT + b"\n")
        self.assertEqual((flood.line, flood.to), (AT + b"\n", [0, 1]))

    def test_invalid_forms_are_quoted_back(self) -> None:
        h = herd()
        h.handle(b"IAMAT kiwi +34.068930-118.445127 1479413884.392014450", Link(), NOW)
        for line in [
            b"IAMTA kiwi +34.068930-118.445127 1479413884.392014450",
            b"IAMAT kiwi +34.068930-118.445127",
            b"IAMAT kiwi 34.068930-118.445127 1479413884.392014450",
            b"IAMAT kiwi +94.068930-118.445127 1479413884.392014450",
            b"IAMAT kiwi +34.-118.0 1479413884.392014450",
            b"IAMAT kiwi +1e1-118 1479413884.392014450",
            b"WHATSAT kiwi 0 5",
            b"WHATSAT kiwi 51 5",
            b"WHATSAT kiwi . 5",
            b"WHATSAT kiwi 10 0",
            b"WHATSAT kiwi 10 21",
            b"WHATSAT nobody 10 5",
            b"PEER",
            b"",
            b"   \t ",
            b"\xff\xfe IAMAT",
        ]:
            self.assertEqual(h.handle(line, Link(), NOW), (b"? " + line + b"\n", None), line)
        self.assertEqual(h.handle(b"IAMTA x\r", Link(), NOW)[0], b"? IAMTA x\n")

    def test_whatsat_asks_for_the_stored_location_with_the_radius_in_metres(self) -> None:
        h = herd()
        h.handle(b" IAMAT\tkiwi  +34.068930-118.445127 1479413884.392014450 \r", Link(), NOW)
        lookup, _ = h.handle(b"WHATSAT kiwi 0.0005 20", Link(), NOW)
        self.assertEqual(
            lookup, Lookup(AT.decode().replace("kiwi.cs.ucla.edu", "kiwi"), "34.068930,-118.445127", 1, 20)
        )

    def test_floods_end_and_skip_their_link_and_origin(self) -> None:
        h = herd("Hamilton", ("Alford", "Holiday", "Welsh"))
        from_holiday = Link()
        self.assertEqual(h.handle(b"PEER Holiday", from_holiday, NOW), (None, None))
        at = b"AT Alford +0.1 kiwi +1.0-2.0 1479413884.5"
        self.assertEqual(h.handle(at, from_holiday, NOW)[1].to, [2])
        self.assertIsNone(h.handle(at, Link(), NOW)[1], "not newer: not flooded again")

    def test_keyed_herd_takes_updates_only_over_a_proven_link(self) -> None:
        key = bytes(range(16))
        h = herd("Alford", ("Hamilton",), key)
        at = b"AT Hamilton +0.1 kiwi +1.0-2.0 1479413884.5"
        self.assertEqual(h.handle(at, Link(), NOW)[0], b"? " + at + b"\n")
        self.assertEqual(h.stats.unauthenticated_at, 1)
        link, nonce = Link(), bytes(16)
        answer, _ = h.handle(auth.hello_line("Hamilton", nonce).strip(), link, NOW)
        name, theirs, proof = auth.parse_accept(answer.strip())
        self.assertEqual(name, "Alford")
        self.assertTrue(auth.verify(key, auth.ACCEPT, "Hamilton", "Alford", nonce, theirs, proof))
        mine = auth.proof(key, auth.OPEN, "Hamilton", "Alford", nonce, theirs)
        self.assertEqual(h.handle(auth.auth_line(mine).strip(), link, NOW), (None, None))
        self.assertEqual(h.handle(at, link, NOW)[1].to, [])
        self.assertEqual(h.stats.floods_stored, 1)


class Handshake(unittest.TestCase):
    def test_the_contract_vector(self) -> None:
        key = auth.decode_hex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
        o, a = bytes(range(0xA0, 0xB0)), bytes(range(0xB0, 0xC0))
        self.assertEqual(auth.hello_line("Alford", o), b"PEER Alford a0a1a2a3a4a5a6a7a8a9aaabacadaeaf\n")
        accept = auth.accept_line("Hamilton", a, auth.proof(key, auth.ACCEPT, "Alford", "Hamilton", o, a))
        self.assertTrue(
            accept.endswith(b" ece5013f5ddb19df280b5acc4b66298655087898253208085b6f5755d632e607\n")
        )
        self.assertEqual(
            auth.auth_line(auth.proof(key, auth.OPEN, "Alford", "Hamilton", o, a)),
            b"AUTH cae3932d617d48cec1bda95935499d10953c9a6dea4530b2cf35bc7e40ba010d\n",
        )
        self.assertIsNone(auth.decode_hex("5a 5a"), "stricter than bytes.fromhex")


class Store(unittest.TestCase):
    def test_newest_wins_ttl_and_cap(self) -> None:
        s = LocationStore(ttl_secs=10, max_clients=2)
        self.assertEqual(s.update("a", 5, "a5", 0), LocationStore.STORED)
        self.assertEqual(s.update("a", 5, "a5'", 1), LocationStore.IGNORED)
        self.assertEqual(s.update("b", 1, "b1", 2), LocationStore.STORED)
        self.assertEqual(s.update("c", 1, "c1", 3), LocationStore.EVICTING)
        self.assertIsNone(s.get("a", 3), "the one stored longest ago was evicted")
        self.assertIsNone(s.get("b", 2 + 10 * 10**9 + 1), "past its TTL")


class Places(unittest.TestCase):
    OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"

    def test_responses_split_anywhere_and_chunked(self) -> None:
        for cut in range(len(self.OK)):
            self.assertIsNone(places.decode_response(self.OK[:cut]), cut)
        self.assertEqual(places.decode_response(self.OK + b"HTTP"), (200, b"hello", len(self.OK), True))
        wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        wire += b"3\r\nhel\r\n2;x=1\r\nlo\r\n0\r\nX: 1\r\n\r\n"
        self.assertEqual(places.decode_response(wire), (200, b"hello", len(wire), True))
        closing = b"HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        self.assertEqual(places.decode_response(closing), (503, b"", len(closing), False))
        for bad in [b"NOT HTTP\r\n\r\n", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"]:
            with self.assertRaises(places.UpstreamError):
                places.decode_response(bad)

    def test_trimmed_json_is_serde_json_pretty(self) -> None:
        body = b'{"html_attributions":[],"results":[{"n":"a\\nb","x":1.5e-7},{},{}],"empty":{},"status":"OK"}'
        text = places.trim_places(body, 2)
        value = json.loads(body)
        del value["results"][2:]
        self.assertEqual(text, json.dumps(value, indent=2, ensure_ascii=False).replace("1.5e-07", "1.5e-7"))
        self.assertEqual(json.loads(places.error_json("upstream timed out"))["status"], "UNKNOWN_ERROR")
        with self.assertRaises(places.UpstreamError):
            places.trim_places(b'{"results": NaN}', 2)


if __name__ == "__main__":
    unittest.main()
