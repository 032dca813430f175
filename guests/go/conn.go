package main

// Clients: an accept loop and a goroutine per connection that reads a line, handles it, and
// writes the replies it gathered once no further line is already buffered (or flush_at bytes are
// owed, or before it blocks on the places backend).

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"sync/atomic"
	"time"
)

// readBufferSize is the bufio.Reader's size: one read takes many pipelined lines, and a line
// longer than it is gathered separately, up to max_line (herd-core's framer reads 4 KiB at least
// and grows to the limit only for a long line).
const readBufferSize = 4096

// oversizedQuote is how many bytes of an oversized line are quoted back.
const oversizedQuote = 64

var errOversized = errors.New("line over the limit")

type server struct {
	svc      service
	lim      *limits
	stats    *counters
	log      *eventLog
	flushAt  int // replies gathered past this many bytes are written before the next line
	open     atomic.Int64
	refusing atomic.Bool // refusing connections since the last one admitted (the episode logged)
}

// acceptLoop serves ln until it is closed. Past max_connections a connection is closed at once
// (counted, logged once per episode); after an accept error (out of descriptors, most likely) it
// pauses accept_backoff, doubling up to accept_backoff_max, as net/http's Server does.
func (s *server) acceptLoop(ln net.Listener) error {
	backoff := s.lim.acceptBackoff
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			s.log.errorf("accept", "%v", err)
			time.Sleep(backoff)
			if backoff *= 2; backoff > s.lim.acceptBackoffMax {
				backoff = s.lim.acceptBackoffMax
			}
			continue
		}
		backoff = s.lim.acceptBackoff
		if !s.admit() {
			c.Close()
			continue
		}
		s.stats.connections.Add(1)
		go s.serveConn(c)
	}
}

func (s *server) admit() bool {
	if s.open.Add(1) > int64(s.lim.maxConnections) {
		s.open.Add(-1)
		s.stats.connectionsRefused.Add(1)
		if !s.refusing.Swap(true) {
			s.log.event("connections_refused", num("max_connections", uint64(s.lim.maxConnections)))
		}
		return false
	}
	s.refusing.Store(false)
	return true
}

// conn is one client connection, owned by its goroutine.
type conn struct {
	s     *server
	c     net.Conn
	clock stampedReader
	in    *bufio.Reader
	out   []byte // replies owed, in request order
	peer  peerState
}

// stampedReader remembers when its last read returned: every line that read completed is
// handled at that time (as herd-core's Session does), so the AT delta does not include the
// time the line waited behind earlier ones.
type stampedReader struct {
	net.Conn
	at time.Time
}

func (r *stampedReader) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	if n > 0 {
		r.at = time.Now()
	}
	return n, err
}

func (s *server) serveConn(c net.Conn) {
	defer s.open.Add(-1)
	defer c.Close()
	cn := &conn{s: s, c: c, peer: peerState{peer: -1}}
	cn.clock.Conn = c
	cn.in = bufio.NewReaderSize(&cn.clock, readBufferSize)
	for {
		line, err := cn.readLine()
		if err == errOversized {
			// Answered, then closed: the stream cannot be trusted to say where a command starts.
			s.stats.oversized.Add(1)
			s.log.errorf("framing", "line over the limit; closing the connection")
			cn.out = appendInvalid(cn.out, line)
			if cn.flush() == nil {
				if tcp, ok := c.(*net.TCPConn); ok {
					tcp.CloseWrite() // a FIN after the answer, so it is not lost to a reset
				}
			}
			return
		}
		if err != nil {
			return // end of stream (an unterminated fragment is no command) or a reset
		}
		var l *lookup
		cn.out, l = s.svc.handle(line, &cn.peer, cn.clock.at, cn.out)
		if l != nil {
			// What was answered before the WHATSAT goes out before it waits.
			if cn.flush() != nil {
				return
			}
			cn.out = s.svc.complete(l, cn.out)
		}
		if len(cn.out) >= s.flushAt || !cn.lineBuffered() {
			if cn.flush() != nil {
				return
			}
		}
	}
}

// readLine returns the next line without its newline, or errOversized and the line's first bytes.
func (cn *conn) readLine() ([]byte, error) {
	limit := cn.s.lim.maxLine
	if limit < cn.in.Size() {
		// A limit inside the read buffer: a line is oversized as soon as more than --max-line
		// bytes without a newline are buffered, and answered then, not when (if ever) its newline
		// comes. ReadSlice alone would wait for the newline or a full buffer.
		for {
			b, _ := cn.in.Peek(cn.in.Buffered())
			if bytes.IndexByte(b, '\n') >= 0 {
				break
			}
			if len(b) > limit {
				quoted := append([]byte(nil), quote(b)...)
				_, _ = cn.in.Discard(len(b))
				return quoted, errOversized
			}
			if _, err := cn.in.Peek(len(b) + 1); err != nil {
				return nil, err // the end of the stream: a fragment without its newline is dropped
			}
		}
	}
	line, err := cn.in.ReadSlice('\n')
	if err == nil {
		line = line[:len(line)-1]
		if len(line) > limit {
			return quote(line), errOversized
		}
		return line, nil
	}
	if err != bufio.ErrBufferFull {
		return nil, err
	}
	// Longer than the reader's buffer: gathered here, up to the limit.
	long := append(make([]byte, 0, 2*len(line)), line...)
	for {
		if len(long) > limit {
			return quote(long), errOversized
		}
		line, err = cn.in.ReadSlice('\n')
		long = append(long, line...)
		switch {
		case err == nil:
			long = long[:len(long)-1]
			if len(long) > limit {
				return quote(long), errOversized
			}
			return long, nil
		case err != bufio.ErrBufferFull:
			return nil, err
		}
	}
}

// quote is the start of an oversized line, as its `?` reply quotes it.
func quote(line []byte) []byte {
	if len(line) > oversizedQuote {
		return line[:oversizedQuote]
	}
	return line
}

// lineBuffered reports whether a whole line is already buffered: if not, the next read may
// block, so what is owed must be written first.
func (cn *conn) lineBuffered() bool {
	b, _ := cn.in.Peek(cn.in.Buffered())
	return bytes.IndexByte(b, '\n') >= 0
}

// flush writes what is owed. A client that takes none of it for write_stall is closed; one that
// takes some gets write_stall again (a write deadline, renewed on progress).
func (cn *conn) flush() error {
	stall := cn.s.lim.writeStall
	for off := 0; off < len(cn.out); {
		cn.c.SetWriteDeadline(time.Now().Add(stall))
		n, err := cn.c.Write(cn.out[off:])
		off += n
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if n > 0 {
					continue
				}
				cn.s.log.errorf("write", "client took none of its replies for %s; closing", rustDuration(stall))
			} else {
				cn.s.log.errorf("write", "%v", err)
			}
			return err
		}
	}
	cn.out = cn.out[:0]
	return nil
}
