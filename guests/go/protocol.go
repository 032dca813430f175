package main

// The protocol's lines, parsed and formatted exactly as herd-core's command.rs, time.rs and
// location.rs do:
//
//	IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450
//	AT Alford +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450
//	WHATSAT kiwi.cs.ucla.edu 10 5
//	PEER Hamilton 3b9f0c2e5d7a41c68e0f2b4d6a8c1e3f
//	AUTH 51a0…(64 hex digits)
//	? <the line as received>

import (
	"math"
	"math/big"
	"math/bits"
	"strconv"
	"strings"
	"unicode/utf8"
)

const (
	maxRadiusKm = 50.0
	maxBound    = 20
)

// nanos is a signed 128-bit count of nanoseconds. Client times may have up to 20 digits of
// seconds (herd-core keeps them in an i128), more than an int64 of nanoseconds holds.
type nanos struct {
	hi int64
	lo uint64
}

func nanosOf(v int64) nanos { return nanos{hi: v >> 63, lo: uint64(v)} }

func (a nanos) add(b nanos) nanos {
	lo, carry := bits.Add64(a.lo, b.lo, 0)
	return nanos{hi: a.hi + b.hi + int64(carry), lo: lo}
}

func (a nanos) sub(b nanos) nanos {
	lo, borrow := bits.Sub64(a.lo, b.lo, 0)
	return nanos{hi: a.hi - b.hi - int64(borrow), lo: lo}
}

func (a nanos) cmp(b nanos) int {
	switch {
	case a.hi < b.hi:
		return -1
	case a.hi > b.hi:
		return 1
	case a.lo < b.lo:
		return -1
	case a.lo > b.lo:
		return 1
	}
	return 0
}

// mulAdd is a*m + d, for the non-negative values parsing builds.
func (a nanos) mulAdd(m, d uint64) nanos {
	hi, lo := bits.Mul64(a.lo, m)
	lo, carry := bits.Add64(lo, d, 0)
	return nanos{hi: a.hi*int64(m) + int64(hi) + int64(carry), lo: lo}
}

// appendDelta appends a signed difference as the AT line prints it: +0.263873386, -1.500000000.
func appendDelta(dst []byte, d nanos) []byte {
	sign := byte('+')
	if d.hi < 0 {
		sign = '-'
		d = nanos{}.sub(d)
	}
	const billion = 1_000_000_000
	hi := uint64(d.hi)
	secsHi, rem := hi/billion, hi%billion
	secsLo, frac := bits.Div64(rem, d.lo, billion)
	dst = append(dst, sign)
	if secsHi == 0 {
		dst = strconv.AppendUint(dst, secsLo, 10)
	} else { // beyond 584 years of seconds: rare enough for math/big
		secs := new(big.Int).Lsh(new(big.Int).SetUint64(secsHi), 64)
		dst = secs.Or(secs, new(big.Int).SetUint64(secsLo)).Append(dst, 10)
	}
	var digits [10]byte
	digits[0] = '.'
	for i := 9; i > 0; i-- {
		digits[i] = byte('0' + frac%10)
		frac /= 10
	}
	return append(dst, digits[:]...)
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// parseTime parses a non-negative POSIX time: digits, optionally '.' and more digits. Fraction
// digits past the ninth are ignored; signs, exponents and empty parts are rejected.
func parseTime(text string) (nanos, bool) {
	whole, frac := text, ""
	if i := strings.IndexByte(text, '.'); i >= 0 {
		whole, frac = text[:i], text[i+1:]
		if frac == "" {
			return nanos{}, false
		}
	}
	if whole == "" || len(whole) > 20 || !allDigits(whole) || !allDigits(frac) {
		return nanos{}, false
	}
	var t nanos
	for i := 0; i < len(whole); i++ {
		t = t.mulAdd(10, uint64(whole[i]-'0'))
	}
	var ns uint64
	for i := 0; i < 9; i++ {
		ns *= 10
		if i < len(frac) {
			ns += uint64(frac[i] - '0')
		}
	}
	return t.mulAdd(1_000_000_000, ns), true
}

// parseDelta parses +S.F or -S.F (the sign is required, as the AT line prints it).
func parseDelta(text string) (nanos, bool) {
	if text == "" || (text[0] != '+' && text[0] != '-') {
		return nanos{}, false
	}
	m, ok := parseTime(text[1:])
	if ok && text[0] == '-' {
		m = nanos{}.sub(m)
	}
	return m, ok
}

// location is an ISO 6709 coordinate pair that keeps its spelling: +34.068930-118.445127.
type location struct {
	text  string
	split int // where the longitude starts
}

// parseLocation accepts ±DD[.D*]±DDD[.D*]: both signs required, |latitude| ≤ 90, |longitude| ≤ 180.
func parseLocation(text string) (location, bool) {
	if text == "" || (text[0] != '+' && text[0] != '-') {
		return location{}, false
	}
	split := strings.IndexAny(text[1:], "+-") + 1
	if split == 0 {
		return location{}, false
	}
	if !degrees(text[:split], 90) || !degrees(text[split:], 180) {
		return location{}, false
	}
	return location{text: text, split: split}, true
}

// degrees checks one signed decimal number of degrees: at least one digit, an optional fraction
// with digits, within ±limit.
func degrees(text string, limit float64) bool {
	body := text[1:]
	whole, frac := body, "0"
	if i := strings.IndexByte(body, '.'); i >= 0 {
		whole, frac = body[:i], body[i+1:]
	}
	if whole == "" || frac == "" || !allDigits(whole) || !allDigits(frac) {
		return false
	}
	v, err := strconv.ParseFloat(text, 64)
	return err == nil && math.Abs(v) <= limit
}

// queryParam is "lat,long" as the places API wants it, the client's digits kept, no leading '+'.
func (l location) queryParam() string {
	return strings.TrimPrefix(l.text[:l.split], "+") + "," + strings.TrimPrefix(l.text[l.split:], "+")
}

// requestKind is what a line is, and the counter it is counted under.
type requestKind int

const (
	kindInvalid requestKind = iota
	kindIamat
	kindWhatsat
	kindAt
	kindPeer // PEER and AUTH
)

// request is one parsed input line. The fields used depend on kind.
type request struct {
	kind requestKind
	// IAMAT, WHATSAT, AT: the client id. AT: the origin server. PEER: the name.
	client, server, name string
	loc                  location
	timeText             string // IAMAT: the time as sent (echoed verbatim)
	time                 nanos  // IAMAT, AT: the client's time
	delta                nanos  // AT
	line                 string // AT: the line single-spaced, without newline
	radiusKm             float64
	bound                int
	nonce, proof         string // PEER (keyed), AUTH: hex, checked later
	hasNonce             bool
	auth                 bool // AUTH rather than PEER
}

// fields splits on runs of spaces and tabs into f (at most len(f)), returning how many there were
// up to len(f): more fields than f holds count as len(f), which no command has.
func fields(text string, f *[7]string) int {
	n := 0
	for i := 0; i < len(text) && n < len(f); {
		for i < len(text) && (text[i] == ' ' || text[i] == '\t') {
			i++
		}
		start := i
		for i < len(text) && text[i] != ' ' && text[i] != '\t' {
			i++
		}
		if i > start {
			f[n] = text[start:i]
			n++
		}
	}
	return n
}

// parseRequest parses one line (without its newline; trailing CRs are white space).
func parseRequest(line []byte) request {
	if !utf8.Valid(line) {
		return request{}
	}
	text := strings.TrimRight(string(line), "\r")
	var f [7]string
	n := fields(text, &f)
	switch {
	case n == 4 && f[0] == "IAMAT":
		loc, ok1 := parseLocation(f[2])
		t, ok2 := parseTime(f[3])
		if ok1 && ok2 {
			return request{kind: kindIamat, client: f[1], loc: loc, timeText: f[3], time: t}
		}
	case n == 4 && f[0] == "WHATSAT":
		radius, ok1 := parseRadius(f[2])
		bound, ok2 := parseBound(f[3])
		if ok1 && ok2 {
			return request{kind: kindWhatsat, client: f[1], radiusKm: radius, bound: bound}
		}
	case n == 6 && f[0] == "AT":
		delta, ok1 := parseDelta(f[2])
		loc, ok2 := parseLocation(f[4])
		t, ok3 := parseTime(f[5])
		if ok1 && ok2 && ok3 {
			// The fields as received, single-spaced: a flood carries the origin's spelling.
			line := "AT " + f[1] + " " + f[2] + " " + f[3] + " " + f[4] + " " + f[5]
			return request{kind: kindAt, server: f[1], delta: delta, client: f[3], loc: loc, time: t, line: line}
		}
	case n == 2 && f[0] == "PEER":
		return request{kind: kindPeer, name: f[1]}
	case n == 3 && f[0] == "PEER":
		return request{kind: kindPeer, name: f[1], nonce: f[2], hasNonce: true}
	case n == 2 && f[0] == "AUTH":
		return request{kind: kindPeer, auth: true, proof: f[1]}
	}
	return request{}
}

// parseRadius: a positive decimal number of km (digits and points only), at most 50.
func parseRadius(s string) (float64, bool) {
	if s == "" || strings.Trim(s, "0123456789.") != "" {
		return 0, false
	}
	r, err := strconv.ParseFloat(s, 64)
	return r, err == nil && r > 0 && r <= maxRadiusKm
}

// parseBound: 1 to 20, at most three digits.
func parseBound(s string) (int, bool) {
	if s == "" || len(s) > 3 || !allDigits(s) {
		return 0, false
	}
	b, _ := strconv.Atoi(s)
	return b, b >= 1 && b <= maxBound
}

// appendInvalid appends `? <line>\n`, the answer to anything the protocol does not accept.
func appendInvalid(dst, line []byte) []byte {
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	dst = append(dst, "? "...)
	dst = append(dst, line...)
	return append(dst, '\n')
}

// atLine is the reply to an IAMAT received by server at now, newline included: the line that is
// stored, flooded and quoted by WHATSAT.
func atLine(server string, req *request, now nanos) string {
	var b strings.Builder
	b.Grow(len(server) + len(req.client) + len(req.loc.text) + len(req.timeText) + 32)
	b.WriteString("AT ")
	b.WriteString(server)
	b.WriteByte(' ')
	var delta [48]byte
	b.Write(appendDelta(delta[:0], now.sub(req.time)))
	b.WriteByte(' ')
	b.WriteString(req.client)
	b.WriteByte(' ')
	b.WriteString(req.loc.text)
	b.WriteByte(' ')
	b.WriteString(req.timeText)
	b.WriteByte('\n')
	return b.String()
}
