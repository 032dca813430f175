package main

// The vectors of herd-core's unit tests (command.rs, time.rs, location.rs, places.rs, auth.rs),
// so the two agree on every edge they pin down.

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
)

const sampleIamat = "IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450"

func mustTime(t *testing.T, s string) nanos {
	t.Helper()
	v, ok := parseTime(s)
	if !ok {
		t.Fatalf("parseTime(%q) failed", s)
	}
	return v
}

func TestSampleIamatGetsTheSampleAtReply(t *testing.T) {
	req := parseRequest([]byte(sampleIamat))
	if req.kind != kindIamat {
		t.Fatalf("kind %v", req.kind)
	}
	got := atLine("Alford", &req, mustTime(t, "1479413884.655887836"))
	want := "AT Alford +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450\n"
	if got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestDeltasPrintSignedWithNineDigits(t *testing.T) {
	server, client := mustTime(t, "1479413884.655887836"), mustTime(t, "1479413884.392014450")
	for _, c := range []struct {
		d    nanos
		want string
	}{
		{server.sub(client), "+0.263873386"},
		{client.sub(server), "-0.263873386"},
		{nanosOf(-1_500_000_000), "-1.500000000"},
		{nanosOf(0), "+0.000000000"},
		{nanos{}.sub(mustTime(t, "99999999999999999999.999999999")), "-99999999999999999999.999999999"},
	} {
		if got := string(appendDelta(nil, c.d)); got != c.want {
			t.Errorf("got %s, want %s", got, c.want)
		}
	}
	if d, ok := parseDelta("-0.263873386"); !ok || d != client.sub(server) {
		t.Errorf("parseDelta: %v %v", d, ok)
	}
}

func TestTimes(t *testing.T) {
	for s, want := range map[string]int64{"5.5": 5_500_000_000, "5": 5_000_000_000, "1.0000000019": 1_000_000_001} {
		if got := mustTime(t, s); got != nanosOf(want) {
			t.Errorf("%s: got %v", s, got)
		}
	}
	for _, bad := range []string{"-1.5", "+1.5", "abc", "", ".5", "5.", "1e9", "12a.3", "1.2.3", " 1", "123456789012345678901"} {
		if _, ok := parseTime(bad); ok {
			t.Errorf("%q accepted", bad)
		}
	}
	if a, b := mustTime(t, "18446744073709551616"), mustTime(t, "18446744073709551615.9"); a.cmp(b) <= 0 {
		t.Errorf("20-digit times compare wrong")
	}
}

func TestLocations(t *testing.T) {
	loc, ok := parseLocation("+34.068930-118.445127")
	if !ok || loc.queryParam() != "34.068930,-118.445127" {
		t.Fatalf("%v %v", loc, ok)
	}
	for _, good := range []string{"-90+180", "+90.0-180.0"} {
		if _, ok := parseLocation(good); !ok {
			t.Errorf("%q refused", good)
		}
	}
	for _, bad := range []string{"34.068930-118.445127", "+34.068930118.445127", "+91.0-118.0", "+34.0-180.5",
		"+34.0-", "+-118.0", "+34.-118.0", "+34.0-118.0x", "+34.0-118.0+1", "+1e1-118", ""} {
		if _, ok := parseLocation(bad); ok {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestWhiteSpaceRunsTabsAndCRs(t *testing.T) {
	req := parseRequest([]byte("  IAMAT\tkiwi.cs.ucla.edu   +34.068930-118.445127 \t1479413884.392014450 \r"))
	if req.kind != kindIamat || req.client != "kiwi.cs.ucla.edu" || req.timeText != "1479413884.392014450" {
		t.Fatalf("%+v", req)
	}
	at := parseRequest([]byte("AT  Alford +0.263873386\tkiwi +34.068930-118.445127 1479413884.392014450"))
	if at.kind != kindAt || at.line != "AT Alford +0.263873386 kiwi +34.068930-118.445127 1479413884.392014450" {
		t.Fatalf("%+v", at)
	}
}

func TestInvalidFormsAreQuotedBack(t *testing.T) {
	for _, line := range []string{
		"IAMTA kiwi +34.068930-118.445127 1479413884.392014450",
		"IAMAT kiwi +34.068930-118.445127",
		"IAMAT kiwi +34.068930-118.445127 1479413884.392014450 extra",
		"IAMAT kiwi 34.068930-118.445127 1479413884.392014450",
		"IAMAT kiwi +94.068930-118.445127 1479413884.392014450",
		"IAMAT kiwi +34.068930-118.445127 -1479413884.392014450",
		"IAMAT kiwi +34.068930-118.445127 abc",
		"WHATSAT kiwi 0 5", "WHATSAT kiwi 51 5", "WHATSAT kiwi 1000 5", "WHATSAT kiwi -1 5",
		"WHATSAT kiwi abc 5", "WHATSAT kiwi 10 0", "WHATSAT kiwi 10 21", "WHATSAT kiwi 10 1000",
		"WHATSAT kiwi 10", "PEER", "", "\xff\xfe IAMAT", "a b c d e f g h",
	} {
		if req := parseRequest([]byte(line)); req.kind != kindInvalid {
			t.Errorf("%q parsed as %v", line, req.kind)
		}
	}
	for line, want := range map[string][2]float64{
		"WHATSAT a 10 5": {10, 5}, "WHATSAT a 50 20": {50, 20}, "WHATSAT a 0.5 1": {0.5, 1}, "WHATSAT a 5. 020": {5, 20},
	} {
		req := parseRequest([]byte(line))
		if req.kind != kindWhatsat || req.radiusKm != want[0] || float64(req.bound) != want[1] {
			t.Errorf("%q: %+v", line, req)
		}
	}
	if got := string(appendInvalid(nil, []byte("IAMTA x\r"))); got != "? IAMTA x\n" {
		t.Errorf("got %q", got)
	}
}

func TestProofIsHMACSHA256OverTheDocumentedMessage(t *testing.T) {
	key, _ := hex.DecodeString("000102030405060708090a0b0c0d0e0f")
	ones, twos := make([]byte, 16), make([]byte, 16)
	for i := range ones {
		ones[i], twos[i] = 1, 2
	}
	msg := append([]byte("herdbench link v1open\x06Alford\x08Hamilton"), append(ones, twos...)...)
	mac := hmac.New(sha256.New, key)
	mac.Write(msg)
	if got := proof(key, roleOpen, "Alford", "Hamilton", ones, twos); !hmac.Equal(got, mac.Sum(nil)) {
		t.Fatalf("proof differs from the documented layout")
	}
	if equalMAC(proof(key, roleAccept, "Alford", "Hamilton", ones, twos), mac.Sum(nil)) {
		t.Fatalf("roles must differ")
	}
}

func TestTrimmingCutsResultsAndPrintsLikeSerde(t *testing.T) {
	body := `{"html_attributions":[],"results":[{"name":"a\nb","n":[1,{"x":{}}]},{"name":"b"},{"name":"c"}],"status":"OK"}`
	got, err := trimPlaces([]byte(body), 2)
	if err != nil {
		t.Fatal(err)
	}
	want := `{
  "html_attributions": [],
  "results": [
    {
      "name": "a\nb",
      "n": [
        1,
        {
          "x": {}
        }
      ]
    },
    {
      "name": "b"
    }
  ],
  "status": "OK"
}`
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	for bound, n := range map[int]int{1: 1, 3: 3, 20: 3} {
		got, _ := trimPlaces([]byte(body), bound)
		if c := strings.Count(got, `"name"`); c != n {
			t.Errorf("bound %d: %d results", bound, c)
		}
	}
	for _, bad := range []string{"{not json", `[1]`, `{"results":5}`, `{"results":[1]} x`} {
		if _, err := trimPlaces([]byte(bad), 2); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if got, _ := trimPlaces([]byte(`{"results":[],"status":"ZERO_RESULTS"}`), 5); got != "{\n  \"results\": [],\n  \"status\": \"ZERO_RESULTS\"\n}" {
		t.Errorf("empty: %q", got)
	}
}

func TestErrorJSONHasTheAPIShape(t *testing.T) {
	want := "{\n  \"html_attributions\": [],\n  \"results\": [],\n  \"status\": \"UNKNOWN_ERROR\",\n  \"error_message\": \"upstream status 503\"\n}"
	if got := errorPlaces(upstreamError("upstream status 503")); got != want {
		t.Fatalf("got %q", got)
	}
}

func TestStoreNewerWinsExpiresAndEvicts(t *testing.T) {
	const sec = int64(1e9)
	s := newLocationStore(10, 16) // one client a shard
	k := nanosOf(100)
	if s.update("kiwi", "a\n", k, 0) != stored || s.update("kiwi", "b\n", k, sec) != ignored {
		t.Fatal("equal times must be ignored")
	}
	if s.update("kiwi", "c\n", nanosOf(101), sec) != stored || s.get("kiwi", sec) != "c\n" {
		t.Fatal("newer must win")
	}
	if s.get("kiwi", 12*sec) != "" {
		t.Fatal("expired after the TTL")
	}
	if s.update("kiwi", "d\n", nanosOf(1), 12*sec) != stored {
		t.Fatal("an expired entry no longer blocks an older time")
	}
	evictions := 0
	for i := 0; i < 200; i++ {
		if s.update("c"+strings.Repeat("x", i%7)+string(rune('a'+i%26)), "x\n", nanosOf(1), 13*sec) == storedEvicting {
			evictions++
		}
	}
	if evictions == 0 {
		t.Fatal("a full shard evicts")
	}
}

// The contract's test vector (guests/CONTRACT.md §6), asserted against herd-core too.
func TestHandshakeVector(t *testing.T) {
	key, _ := hex.DecodeString("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	opener, acceptor := make([]byte, 16), make([]byte, 16)
	for i := range opener {
		opener[i], acceptor[i] = 0xa0+byte(i), 0xb0+byte(i)
	}
	if got := hex.EncodeToString(proof(key, roleAccept, "Alford", "Hamilton", opener, acceptor)); got != "ece5013f5ddb19df280b5acc4b66298655087898253208085b6f5755d632e607" {
		t.Errorf("HERD proof %s", got)
	}
	if got := hex.EncodeToString(proof(key, roleOpen, "Alford", "Hamilton", opener, acceptor)); got != "cae3932d617d48cec1bda95935499d10953c9a6dea4530b2cf35bc7e40ba010d" {
		t.Errorf("AUTH proof %s", got)
	}
}

func TestNthFieldOfAStoredLine(t *testing.T) {
	at := "AT Alford +0.263873386 kiwi +34.068930-118.445127 1479413884.392014450\n"
	for n, want := range []string{"AT", "Alford", "+0.263873386", "kiwi", "+34.068930-118.445127", "1479413884.392014450"} {
		if got := nthField(at, n); got != want {
			t.Errorf("field %d: %q", n, got)
		}
	}
}
