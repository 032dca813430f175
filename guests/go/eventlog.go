package main

// Counters and the event log, in herd-core's shapes (stats.rs, log.rs) and the harness's file
// formats (serve.rs): the stats file written at shutdown, one JSON event a line.

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// counters are herd-core's ServerStats counters: atomics any goroutine bumps without a lock.
type counters struct {
	iamat, whatsat, at, peer, invalid, echo, oversized atomic.Uint64
	floodsStored, floodsOut, floodsDropped             atomic.Uint64
	upstreamOK, upstreamErrors                         atomic.Uint64
	upstreamConnects, upstreamStaleRetries             atomic.Uint64
	connections, connectionsRefused                    atomic.Uint64
	storeEvictions, unauthenticatedAt, linksRefused    atomic.Uint64
}

func (c *counters) count(kind requestKind) {
	switch kind {
	case kindIamat:
		c.iamat.Add(1)
	case kindWhatsat:
		c.whatsat.Add(1)
	case kindAt:
		c.at.Add(1)
	case kindPeer:
		c.peer.Add(1)
	default:
		c.invalid.Add(1)
	}
}

// writeStats writes the stats file as `harness serve` does (serde_json's pretty printer over
// ServerCounters; counters in name order), to a temporary name renamed over path, so a reader
// never sees half a file. The propagation histogram is not kept, so left out.
func (c *counters) writeStats(path string) error {
	values := map[string]uint64{
		"iamat": c.iamat.Load(), "whatsat": c.whatsat.Load(), "at": c.at.Load(), "peer": c.peer.Load(),
		"invalid": c.invalid.Load(), "echo": c.echo.Load(), "oversized": c.oversized.Load(),
		"floods_stored": c.floodsStored.Load(), "floods_out": c.floodsOut.Load(),
		"floods_dropped": c.floodsDropped.Load(), "upstream_ok": c.upstreamOK.Load(),
		"upstream_errors": c.upstreamErrors.Load(), "upstream_connects": c.upstreamConnects.Load(),
		"upstream_stale_retries": c.upstreamStaleRetries.Load(), "connections": c.connections.Load(),
		"connections_refused": c.connectionsRefused.Load(), "store_evictions": c.storeEvictions.Load(),
		"unauthenticated_at": c.unauthenticatedAt.Load(), "links_refused": c.linksRefused.Load(),
	}
	names := make([]string, 0, len(values))
	for name := range values {
		names = append(names, name)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("{\n  \"counters\": {")
	for i, name := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "\n    %q: %d", name, values[name])
	}
	b.WriteString("\n  },\n  \"extra\": {}\n}")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// eventLog never blocks the request path: formatted events go into a bounded channel (dropped
// when it is full, as the harness's log drops past 65,536) and one goroutine buffers them and
// flushes every 200 ms and at shutdown. A nil *eventLog discards everything.
type eventLog struct {
	server string
	logIO  bool
	lines  chan []byte
	flush  chan chan struct{}
}

// field is one key of an event: a string, or a number when isNum.
type field struct {
	key, str string
	num      uint64
	isNum    bool
}

func str(key, value string) field    { return field{key: key, str: value} }
func num(key string, n uint64) field { return field{key: key, num: n, isNum: true} }

func openEventLog(path, server string, logIO bool) (*eventLog, error) {
	file, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening log %s: %w", path, err)
	}
	l := &eventLog{server: server, logIO: logIO, lines: make(chan []byte, 64*1024), flush: make(chan chan struct{})}
	go l.write(bufio.NewWriterSize(file, 64*1024))
	return l, nil
}

func (l *eventLog) write(out *bufio.Writer) {
	tick := time.NewTicker(200 * time.Millisecond)
	for {
		select {
		case line := <-l.lines:
			out.Write(line)
		case <-tick.C:
			out.Flush()
		case done := <-l.flush:
			for drained := false; !drained; {
				select {
				case line := <-l.lines:
					out.Write(line)
				default:
					drained = true
				}
			}
			out.Flush()
			close(done)
		}
	}
}

// event records one event: {"ts":…,"server":…,"event":kind, fields…}, stamped now.
func (l *eventLog) event(kind string, fields ...field) {
	if l == nil {
		return
	}
	b := make([]byte, 0, 128)
	b = append(b, `{"ts":"`...)
	b = time.Now().UTC().AppendFormat(b, "2006-01-02T15:04:05.000000Z07:00")
	b = append(b, `","server":`...)
	b = appendJSONString(b, l.server)
	b = append(b, `,"event":"`...)
	b = append(b, kind...)
	b = append(b, '"')
	for _, f := range fields {
		b = append(b, ',')
		b = appendJSONString(b, f.key)
		b = append(b, ':')
		if f.isNum {
			b = strconv.AppendUint(b, f.num, 10)
		} else {
			b = appendJSONString(b, f.str)
		}
	}
	b = append(b, "}\n"...)
	select {
	case l.lines <- b:
	default: // full: dropped, never waited for
	}
}

func (l *eventLog) errorf(context, format string, args ...any) {
	if l != nil {
		l.event("error", str("context", context), str("message", fmt.Sprintf(format, args...)))
	}
}

// input and output log every line with --log-io (part of what a run measures, so off by default).
func (l *eventLog) input(line []byte) {
	if l != nil && l.logIO {
		l.event("input", str("line", lossy(line)))
	}
}

func (l *eventLog) output(text []byte) {
	if l != nil && l.logIO && len(text) > 0 {
		l.event("output", str("text", lossy(text)))
	}
}

func (l *eventLog) outputString(text string) {
	if l != nil && l.logIO && text != "" {
		l.event("output", str("text", strings.ToValidUTF8(text, "\uFFFD")))
	}
}

// flushAndStop waits (at most a second) for everything queued so far to reach the file.
func (l *eventLog) flushAndStop() {
	if l == nil {
		return
	}
	done := make(chan struct{})
	select {
	case l.flush <- done:
		select {
		case <-done:
		case <-time.After(time.Second):
		}
	case <-time.After(time.Second):
	}
}

func lossy(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	return string(bytes.ToValidUTF8(b, []byte("\uFFFD")))
}

// appendJSONString quotes s as serde_json does: only '"', '\\' and control characters are
// escaped (not '<', '>', '&' or U+2028 as encoding/json would), \u00XX in lower-case hex.
func appendJSONString(dst []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\f':
			dst = append(dst, '\\', 'f')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&15])
		}
		start = i + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
