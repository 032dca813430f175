package main

// The service: what one line does, as herd-core's service.rs decides it. A connection
// goroutine calls handle for each line, in order; a WHATSAT comes back as a lookup, which the
// goroutine answers (blocking on the places backend) with complete before it reads on.

import (
	"strings"
	"sync/atomic"
	"time"
)

// service is the herd or echo mode.
type service interface {
	// handle appends the reply to one line (received at now) to out; a WHATSAT returns a lookup
	// instead, to be answered with complete.
	handle(line []byte, conn *peerState, now time.Time, out []byte) ([]byte, *lookup)
	// complete appends a WHATSAT's answer to out (after asking the places backend).
	complete(l *lookup, out []byte) []byte
}

// peerState is what a connection is to the herd: a flood link once its opener proved it holds
// the key (or said its name, in an insecure herd).
type peerState struct {
	peer        int    // index of the neighbour this is a link from; -1: a client
	challenge   bool   // a handshake this server answered awaits its AUTH
	challenged  int    // the neighbour that handshake is with
	nonces      []byte // the opener's nonce, then ours
	warnedForAt bool   // an unauthenticated AT was logged already (each one is counted)
}

// lookup is a WHATSAT waiting for the places backend.
type lookup struct {
	atLine   string // the stored AT line, newline included
	loc      location
	radiusKm float64
	bound    int
}

// evictionEpisodeGap: an eviction episode ends after this long without one; the next is logged.
const evictionEpisodeGap = int64(time.Second)

type herd struct {
	name         string
	neighbours   []string
	key          []byte // nil: an insecure herd
	maxClients   int
	store        *locationStore
	links        links
	places       *placesClient
	stats        *counters
	log          *eventLog
	lastEviction atomic.Int64 // ns since the epoch
}

func (h *herd) neighbour(name string) int {
	for i, n := range h.neighbours {
		if n == name {
			return i
		}
	}
	return -1
}

func (h *herd) handle(line []byte, conn *peerState, now time.Time, out []byte) ([]byte, *lookup) {
	h.log.input(line)
	req := parseRequest(line)
	nowNs := now.UnixNano()
	switch req.kind {
	case kindIamat:
		at := atLine(h.name, &req, nanosOf(nowNs))
		h.storeAndFlood(req.client, at, req.time, -1, h.name, nowNs)
		h.log.outputString(at)
		out = append(out, at...)
	case kindAt:
		if h.key != nil && conn.peer < 0 {
			h.stats.unauthenticatedAt.Add(1)
			if !conn.warnedForAt {
				conn.warnedForAt = true
				shown := line
				if len(shown) > 200 {
					shown = shown[:200]
				}
				h.log.event("unauthenticated_at", str("line", lossy(shown)))
			}
			return h.invalid(line, out), nil
		}
		if h.storeAndFlood(req.client, req.line+"\n", req.time, conn.peer, req.server, nowNs) {
			h.stats.floodsStored.Add(1)
		}
	case kindWhatsat:
		at := h.store.get(req.client, nowNs)
		if at == "" {
			return h.invalid(line, out), nil
		}
		// The stored line was validated when it was stored; its fifth field is the location.
		loc, ok := parseLocation(nthField(at, 4))
		if !ok {
			return h.invalid(line, out), nil
		}
		h.stats.whatsat.Add(1)
		return out, &lookup{atLine: at, loc: loc, radiusKm: req.radiusKm, bound: req.bound}
	case kindPeer:
		if req.auth {
			return h.auth(line, &req, conn, out)
		}
		return h.hello(line, &req, conn, out)
	default:
		return h.invalid(line, out), nil
	}
	h.stats.count(req.kind)
	return out, nil
}

// nthField is field n (from 0) of a single-spaced line, its newline left out.
func nthField(line string, n int) string {
	for ; n > 0; n-- {
		i := strings.IndexByte(line, ' ')
		if i < 0 {
			return ""
		}
		line = line[i+1:]
	}
	if i := strings.IndexAny(line, " \n"); i >= 0 {
		line = line[:i]
	}
	return line
}

// storeAndFlood stores an update if it is newer and floods it to every neighbour but the link
// it came over and its origin; reports whether it was stored.
func (h *herd) storeAndFlood(client, at string, t nanos, from int, origin string, now int64) bool {
	switch h.store.update(client, at, t, now) {
	case ignored:
		return false
	case storedEvicting:
		h.stats.storeEvictions.Add(1)
		if last := h.lastEviction.Swap(now); now-last > evictionEpisodeGap {
			h.log.event("store_evicting", num("max_clients", uint64(h.maxClients)))
		}
	}
	h.links.flood(at, from, origin)
	return true
}

// hello answers `PEER <name> [<nonce>]`: in a keyed herd with this server's nonce and proof (the
// opener's AUTH must answer both); in an insecure one the name alone marks the link.
func (h *herd) hello(line []byte, req *request, conn *peerState, out []byte) ([]byte, *lookup) {
	i := h.neighbour(req.name)
	if i < 0 || (h.key == nil) == req.hasNonce {
		return h.invalid(line, out), nil
	}
	if h.key == nil {
		conn.peer = i
		h.log.event("link_up", str("peer", req.name), str("direction", "inbound"))
		h.stats.peer.Add(1)
		return out, nil
	}
	theirs := decodeFixed(req.nonce, nonceBytes)
	if theirs == nil {
		return h.invalid(line, out), nil
	}
	ours := newNonce()
	// A connection gets one handshake: a second PEER replaces the first.
	conn.peer, conn.challenge, conn.challenged = -1, true, i
	conn.nonces = append(append(conn.nonces[:0], theirs...), ours...)
	mac := proof(h.key, roleAccept, req.name, h.name, theirs, ours)
	start := len(out)
	out = append(out, "HERD "...)
	out = append(out, h.name...)
	out = append(out, ' ')
	out = hexAppend(out, ours)
	out = append(out, ' ')
	out = hexAppend(out, mac)
	out = append(out, '\n')
	h.log.output(out[start:])
	h.stats.peer.Add(1)
	return out, nil
}

// auth checks the opener's proof against the handshake it ends; a proof that holds makes the
// connection a flood link.
func (h *herd) auth(line []byte, req *request, conn *peerState, out []byte) ([]byte, *lookup) {
	if !conn.challenge {
		return h.invalid(line, out), nil
	}
	conn.challenge = false
	peer := h.neighbours[conn.challenged]
	theirs, ours := conn.nonces[:nonceBytes], conn.nonces[nonceBytes:]
	got := decodeFixed(req.proof, proofBytes)
	if got == nil || h.key == nil || !equalMAC(got, proof(h.key, roleOpen, peer, h.name, theirs, ours)) {
		h.stats.linksRefused.Add(1)
		h.log.event("link_refused", str("peer", peer), str("direction", "inbound"),
			str("reason", "the proof does not match the herd key (or answers another handshake)"))
		return h.invalid(line, out), nil
	}
	conn.peer = conn.challenged
	h.log.event("link_up", str("peer", peer), str("direction", "inbound"))
	h.stats.peer.Add(1)
	return out, nil
}

// invalid appends `? <line>`, counted and logged like any other reply.
func (h *herd) invalid(line, out []byte) []byte {
	h.stats.invalid.Add(1)
	start := len(out)
	out = appendInvalid(out, line)
	h.log.output(out[start:])
	return out
}

// complete answers a WHATSAT: the stored AT line, the places JSON, two newlines. A failure still
// gets the AT line and a JSON body in the API's error shape, so the client's framing holds.
func (h *herd) complete(l *lookup, out []byte) []byte {
	json, err := h.places.fetch(l.loc, l.radiusKm, l.bound)
	if err != nil {
		h.stats.upstreamErrors.Add(1)
		h.log.errorf("places", "%v", err)
		json = errorPlaces(err)
	} else {
		h.stats.upstreamOK.Add(1)
	}
	start := len(out)
	out = append(out, l.atLine...)
	out = append(out, json...)
	out = append(out, "\n\n"...)
	h.log.output(out[start:])
	return out
}

// echo mode: every line comes back unchanged, framed like the herd's so both pay the same per-line cost.
type echo struct{ stats *counters }

func (e echo) handle(line []byte, _ *peerState, _ time.Time, out []byte) ([]byte, *lookup) {
	e.stats.echo.Add(1)
	return append(append(out, line...), '\n'), nil
}

func (e echo) complete(_ *lookup, out []byte) []byte { return out }
