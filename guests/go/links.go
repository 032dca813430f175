package main

// Flood links: one goroutine per neighbour, following the policy of herd-core's FloodLink
// (policy/link.rs):
//
//	      retry due (an update, or the idle timer)     connected          the answer proves the key
//	Down ─────────────────────────────────────► Connecting ─────► Handshaking ─────────────────────► Up
//	 ▲  updates while down, no retry due: dropped   │ failed, late     │ refused, late, closed       │ closed by peer, any byte
//	 └──────────────────────────────────────────────┴──────────────────┴─────────────────────────────┘ read, a write error, or
//	                                                                                                    link_write_stall
//
// Connection goroutines hand updates to send, which never waits on I/O: under the link's mutex
// it appends the line to a queue bounded in bytes (what waits here plus what the link's
// goroutine took and the socket has not yet accepted), or drops and counts it, and wakes the
// link's goroutine through a one-slot channel. The link's goroutine dials, runs the opener's side
// of the handshake with deadlines, then writes whatever is queued in one Write per wake-up (a
// write deadline of link_write_stall, renewed while the neighbour makes progress); a second
// goroutine per connection blocks in Read, since a neighbour never sends on a flood link once it
// has answered: any byte, end of stream or error means it is gone.

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"time"
)

type linkState int

const (
	linkDown linkState = iota
	linkConnecting
	linkHandshaking
	linkUp
)

// maxAnswer is the longest handshake answer a link reads (a real one is 136 bytes).
const maxAnswer = 256

type floodLink struct {
	me, peer, addr string
	key            []byte // nil: an insecure herd (no handshake)
	lim            *limits
	stats          *counters
	log            *eventLog
	wake           chan struct{}

	mu               sync.Mutex
	state            linkState
	connectRequested bool
	created          time.Time
	lastAttempt      time.Time // zero: none yet
	gen              uint64    // the attempt the link is on; a stale reader's news is ignored
	pending          []byte    // updates not yet taken by the link's goroutine
	inFlight         int       // bytes the link's goroutine holds (hello, proof, updates), not yet taken by the socket
	peerGone         string    // why the reader found the neighbour gone ("" while it is there)
	dropping         bool      // in a dropping episode
	dropped          uint64    // updates dropped in the current episode
}

func newFloodLink(me, peer, addr string, key []byte, lim *limits, stats *counters, log *eventLog) *floodLink {
	return &floodLink{
		me: me, peer: peer, addr: addr, key: key, lim: lim, stats: stats, log: log,
		wake: make(chan struct{}, 1), created: time.Now(),
	}
}

func (l *floodLink) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// send gives the link one update line (newline included). It never waits on I/O.
func (l *floodLink) send(line string, now time.Time) {
	l.mu.Lock()
	started := false
	if l.state == linkDown {
		if !l.lastAttempt.IsZero() && now.Before(l.lastAttempt.Add(l.lim.linkRetry)) {
			l.dropLocked(1, "neighbour down")
			l.mu.Unlock()
			return
		}
		l.startAttemptLocked(now) // connect on demand; the update waits behind the hello
		started = true
	}
	queued := len(l.pending) + l.inFlight
	if queued+len(line) > l.lim.linkQueueBytes {
		l.dropLocked(1, "queue full")
		l.mu.Unlock()
		return
	}
	if l.dropping {
		l.log.event("floods_resumed", str("peer", l.peer), num("dropped", l.dropped))
		l.dropping, l.dropped = false, 0
	}
	// Wake once per attempt and once per idle spell: later updates find the goroutine busy.
	wake := started || (len(l.pending) == 0 && l.state == linkUp)
	l.pending = append(l.pending, line...)
	l.mu.Unlock()
	if wake {
		l.signal()
	}
}

// startAttemptLocked starts an attempt: the hello is owed from now on (it counts in the queue's
// bytes, as herd-core's FloodLink counts it, until the socket takes it).
func (l *floodLink) startAttemptLocked(now time.Time) {
	l.state = linkConnecting
	l.lastAttempt = now
	l.connectRequested = true
	l.inFlight = len("PEER \n") + len(l.me)
	if l.key != nil {
		l.inFlight += 1 + 2*nonceBytes
	}
}

// hello is the opener's first line: `PEER <me> <nonce>` in a keyed herd, `PEER <me>` otherwise.
func (l *floodLink) hello(nonce []byte) []byte {
	b := append([]byte("PEER "), l.me...)
	if nonce != nil {
		b = hexAppend(append(b, ' '), nonce)
	}
	return append(b, '\n')
}

func (l *floodLink) dropLocked(n uint64, reason string) {
	l.stats.floodsDropped.Add(n)
	if l.dropping {
		l.dropped += n
		return
	}
	l.dropping, l.dropped = true, n
	l.log.event("floods_dropping", str("peer", l.peer), str("reason", reason))
}

// goDownLocked drops what was queued (and unsent, the updates the caller still held) and logs
// the end of an up link with why.
func (l *floodLink) goDownLocked(unsent int, reason string) {
	wasUp := l.state == linkUp
	lost := uint64(bytes.Count(l.pending, []byte{'\n'}) + unsent)
	l.state = linkDown
	l.connectRequested = false
	l.pending = l.pending[:0]
	l.inFlight = 0
	if wasUp {
		l.log.event("link_down", str("peer", l.peer), str("reason", reason))
	}
	if lost > 0 {
		l.dropLocked(lost, "link lost")
	}
}

func (l *floodLink) down(unsent int, reason string) {
	l.mu.Lock()
	l.goDownLocked(unsent, reason)
	l.mu.Unlock()
}

// refuse ends a handshake whose answer did not prove the key: logged, counted, retried later.
func (l *floodLink) refuse(reason string) {
	l.stats.linksRefused.Add(1)
	l.log.event("link_refused", str("peer", l.peer), str("direction", "outbound"), str("reason", reason))
	l.down(0, reason)
}

// run is the link's goroutine: wait until an attempt is due (an update asked for one, or the
// retry interval passed while down), make it, and hold the link until it goes down.
func (l *floodLink) run() {
	timer := time.NewTimer(time.Hour)
	for {
		l.mu.Lock()
		now := time.Now()
		due := l.created
		if !l.lastAttempt.IsZero() {
			due = l.lastAttempt
		}
		due = due.Add(l.lim.linkRetry)
		if !l.connectRequested && !now.Before(due) {
			l.startAttemptLocked(now)
		}
		connect := l.connectRequested
		l.connectRequested = false
		l.mu.Unlock()
		if connect {
			l.attempt()
			continue
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(due.Sub(now))
		select {
		case <-l.wake:
		case <-timer.C:
		}
	}
}

// attempt connects, handshakes and then writes updates until the link goes down.
func (l *floodLink) attempt() {
	l.mu.Lock()
	l.gen++
	gen, deadline := l.gen, l.lastAttempt.Add(l.lim.linkConnectTimeout)
	l.peerGone = ""
	l.mu.Unlock()

	conn, err := (&net.Dialer{Deadline: deadline}).Dial("tcp", l.addr)
	if err != nil {
		l.down(0, err.Error())
		return
	}
	defer conn.Close()
	var first []byte // what goes ahead of the updates: the hello (insecure) or the proof
	if l.key == nil {
		first = l.hello(nil)
	} else if first = l.handshake(conn, deadline); first == nil {
		return
	}
	l.mu.Lock()
	l.state = linkUp
	l.mu.Unlock()
	l.log.event("link_up", str("peer", l.peer), str("direction", "outbound"))
	go l.watch(conn, gen)
	l.transmit(conn, gen, first)
}

// handshake runs the opener's side within the attempt's deadline and returns the AUTH line, or
// nil when the link went down (the answer did not prove the key, or never came).
func (l *floodLink) handshake(conn net.Conn, deadline time.Time) []byte {
	l.mu.Lock()
	l.state = linkHandshaking
	l.mu.Unlock()
	conn.SetDeadline(deadline)
	defer conn.SetDeadline(time.Time{})
	nonce := newNonce()
	if _, err := conn.Write(l.hello(nonce)); err != nil {
		l.down(0, err.Error())
		return nil
	}
	l.mu.Lock()
	l.inFlight = 0 // the hello is taken: the answer is awaited with nothing owed
	l.mu.Unlock()
	var answer []byte
	var chunk [maxAnswer]byte
	for {
		n, err := conn.Read(chunk[:])
		if n > 0 {
			got := chunk[:n]
			i := bytes.IndexByte(got, '\n')
			if i < 0 {
				i = n
			}
			answer = append(answer, got[:i]...)
			if len(answer) > maxAnswer {
				l.refuse("handshake answer too long")
				return nil
			}
			if i < n {
				if i+1 < n {
					l.refuse("peer sent data after its handshake answer")
					return nil
				}
				break
			}
			continue
		}
		if err != nil { // closed, failed or late: not a refusal, a neighbour not there
			l.down(0, err.Error())
			return nil
		}
	}
	name, theirNonce, theirProof, ok := parseAccept(answer)
	switch {
	case !ok:
		l.refuse("malformed handshake answer")
	case name != l.peer:
		l.refuse("the answer names another server")
	case !equalMAC(theirProof, proof(l.key, roleAccept, l.me, l.peer, nonce, theirNonce)):
		l.refuse("the answer's proof does not match the herd key")
	default:
		return []byte("AUTH " + hex.EncodeToString(proof(l.key, roleOpen, l.me, l.peer, nonce, theirNonce)) + "\n")
	}
	return nil
}

// watch blocks in Read: a neighbour never sends on an established flood link, so whatever the
// read returns means it is gone. The writer is woken (and unblocked, by the close) to go down.
func (l *floodLink) watch(conn net.Conn, gen uint64) {
	var b [1]byte
	n, err := conn.Read(b[:])
	var reason string
	switch {
	case n > 0:
		reason = "peer sent data on a flood link"
	case err == io.EOF:
		reason = "closed by peer"
	case errors.Is(err, net.ErrClosed):
		return // closed here: the link is down already
	default:
		reason = err.Error()
	}
	l.mu.Lock()
	if l.gen == gen && l.peerGone == "" {
		l.peerGone = reason
	}
	l.mu.Unlock()
	conn.Close()
	l.signal()
}

// transmit writes first, then every update queued, until the link goes down. Updates are
// counted out once the socket took the whole line, and dropped if the link goes down first.
func (l *floodLink) transmit(conn net.Conn, gen uint64, first []byte) {
	buf, skip := first, len(first) // skip: bytes at the front of buf that are not updates
	newline := []byte{'\n'}
	for {
		l.mu.Lock()
		for l.peerGone == "" && len(l.pending) == 0 && len(buf) == 0 {
			l.mu.Unlock()
			<-l.wake
			l.mu.Lock()
		}
		if l.peerGone != "" {
			l.goDownLocked(0, l.peerGone)
			l.mu.Unlock()
			return
		}
		if len(buf) == 0 {
			buf, l.pending = l.pending, buf // swap: the written buffer is the next queue
		} else {
			buf = append(buf, l.pending...)
			l.pending = l.pending[:0]
		}
		l.inFlight = len(buf)
		l.mu.Unlock()

		for off := 0; off < len(buf); {
			conn.SetWriteDeadline(time.Now().Add(l.lim.linkWriteStall))
			n, err := conn.Write(buf[off:])
			sent := 0
			if from := max(off, skip); from < off+n {
				sent = bytes.Count(buf[from:off+n], newline)
			}
			off += n
			l.mu.Lock()
			l.inFlight -= n
			l.stats.floodsOut.Add(uint64(sent))
			l.mu.Unlock()
			if err == nil {
				continue
			}
			var ne net.Error
			timedOut := errors.As(err, &ne) && ne.Timeout()
			if timedOut && n > 0 {
				continue // progress: the stall clock starts again
			}
			reason := err.Error()
			if timedOut {
				reason = "neighbour took no bytes for " + rustDuration(l.lim.linkWriteStall)
			}
			l.mu.Lock()
			if l.peerGone != "" {
				reason = l.peerGone
			}
			l.goDownLocked(bytes.Count(buf[max(off, skip):], newline), reason)
			l.mu.Unlock()
			return
		}
		buf, skip = buf[:0], 0
	}
}

// rustDuration spells a duration as Rust's Debug does in herd-core's messages (5s, 1.5s, 100ms).
func rustDuration(d time.Duration) string {
	if d >= time.Second || d == 0 {
		return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s"
	}
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', -1, 64) + "ms"
}

func min(a, b int) int {
	if a < b {
		return a
	}
	return b
}

func max(a, b int) int {
	if a > b {
		return a
	}
	return b
}

// links are the server's flood links, indexed like its neighbour list.
type links []*floodLink

// flood sends line to every neighbour but from (the link it came over, -1: none) and origin
// (the server that made it): the flood decision of herd-core's service.rs.
func (ls links) flood(line string, from int, origin string) {
	now := time.Now()
	for i, l := range ls {
		if i != from && l.peer != origin {
			l.send(line, now)
		}
	}
}
