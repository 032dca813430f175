// Command herd-go is herdbench's Go guest: the proxy herd (and echo mode) written the way Go
// servers are written — a goroutine per connection, blocking calls, and the runtime's scheduler
// and netpoller doing the waiting.
//
//	accept loop ──go──► connection goroutine (one per client)
//	                      for { ReadSlice('\n') ──► handle ──┬─ reply appended to out
//	                                                         ├─ flood ──► floodLink.send (mutex, bounded queue) ──wake──► link goroutine
//	                                                         └─ WHATSAT: write out, http.Client.Do (pooled Transport), append answer
//	                            write out when no whole line is buffered, or flush_at is owed }
//
// The loop: every blocking call (Read, Write, Dial, the places request) parks only its goroutine;
// the netpoller (epoll) wakes it when its socket is ready, on one of GOMAXPROCS threads.
// The hand-offs: a stored update is appended to each neighbour's queue under that link's
// mutex and its goroutine woken through a one-slot channel; the store is 16 mutex-guarded
// shards. The waiting: a WHATSAT blocks its connection's goroutine on net/http until the answer
// or client.Timeout; a client that does not read blocks its goroutine in Write (so it is no longer
// read) until write_stall passes without progress; a hung neighbour blocks only its link's
// goroutine, while updates past link_queue_bytes are dropped and counted.
//
// The protocol and every policy decision follow herd-core (impls/core) byte for byte; the
// files say which part each mirrors.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

// limits are herd-core's Limits, from the harness's flags.
type limits struct {
	maxLine                         int
	linkRetry, linkConnectTimeout   time.Duration
	linkQueueBytes                  int
	linkWriteStall, upstreamTimeout time.Duration
	upstreamIdleMax                 int
	flushAt, pauseOutput, maxOutput int
	writeStall                      time.Duration
	maxInFlight, maxClients         int
	maxConnections                  int
	acceptBackoff, acceptBackoffMax time.Duration
}

// peers collects repeated --peer NAME=ADDR flags.
type peers struct{ names, addrs []string }

func (p *peers) String() string { return strings.Join(p.names, ",") }

func (p *peers) Set(v string) error {
	name, addr, ok := strings.Cut(v, "=")
	if !ok || name == "" {
		return fmt.Errorf("%q: expected NAME=ADDR, e.g. --peer Hamilton=127.0.0.1:12001", v)
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("%q: bad address: %v", v, err)
	}
	p.names, p.addrs = append(p.names, name), append(p.addrs, addr)
	return nil
}

// size is a byte count: plain bytes (the harness's form), or with a KiB/MiB/GiB suffix.
type size struct{ n *int }

func (s size) String() string {
	if s.n == nil {
		return ""
	}
	return strconv.Itoa(*s.n)
}

func (s size) Set(v string) error {
	mult := 1
	for suffix, m := range map[string]int{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if strings.HasSuffix(v, suffix) {
			v, mult = strings.TrimSuffix(v, suffix), m
		}
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 0 {
		return fmt.Errorf("%q is not a size in bytes", v)
	}
	*s.n = n * mult
	return nil
}

func main() {
	flags := flag.NewFlagSet("herd-go", flag.ExitOnError)
	var (
		name        = flags.String("name", "Alford", "this server's name in the herd")
		listen      = flags.String("listen", "127.0.0.1:0", "address to listen on")
		placesAddr  = flags.String("places", "", "the places backend, IP:PORT")
		mode        = flags.String("mode", "herd", "herd or echo")
		threads     = flags.Int("threads", 0, "GOMAXPROCS (default: the runtime's, one per core)")
		_           = flags.Int("io-threads", 0, "accepted, ignored (the netpoller is the runtime's)")
		_           = flags.Int("stack-kib", 0, "accepted, ignored (goroutine stacks grow as needed)")
		logPath     = flags.String("log", "", "event log file (one JSON object a line)")
		logIO       = flags.Bool("log-io", false, "also log every input and output line")
		statsPath   = flags.String("stats", "", "where to write counters at shutdown (JSON)")
		samplesPath = flags.String("samples", "", "append a sample line every --sample-every")
		sampleEvery = flags.Duration("sample-every", 100*time.Millisecond, "how often --samples gets a line")
		ttl         = flags.Uint64("ttl", 3600, "seconds a stored location lives")
		keyPath     = flags.String("herd-key", "", "the herd key file (hex)")
		insecure    = flags.Bool("insecure-herd", false, "accept AT lines from any connection (no key)")
		neighbours  peers
		lim         = limits{
			maxLine: 64 << 10, linkRetry: 100 * time.Millisecond, linkConnectTimeout: 500 * time.Millisecond,
			linkQueueBytes: 1 << 20, linkWriteStall: 5 * time.Second, upstreamTimeout: 3 * time.Second,
			upstreamIdleMax: 256, flushAt: 64 << 10, pauseOutput: 256 << 10, maxOutput: 4 << 20,
			writeStall: 5 * time.Second, maxInFlight: 64, maxClients: 4_000_000, maxConnections: 16_000,
			acceptBackoff: 10 * time.Millisecond, acceptBackoffMax: time.Second,
		}
	)
	flags.Var(&neighbours, "peer", "a neighbour as NAME=ADDR; repeat for each link")
	flags.Var(size{&lim.maxLine}, "max-line", "longest accepted input line, bytes")
	flags.DurationVar(&lim.linkRetry, "link-retry", lim.linkRetry, "shortest time between two connection attempts to one neighbour")
	flags.DurationVar(&lim.linkConnectTimeout, "link-connect-timeout", lim.linkConnectTimeout, "connect and handshake deadline of a link attempt")
	flags.Var(size{&lim.linkQueueBytes}, "link-queue-bytes", "bytes queued toward one neighbour before updates are dropped")
	flags.DurationVar(&lim.linkWriteStall, "link-write-stall", lim.linkWriteStall, "a link whose neighbour takes nothing for this long is closed")
	flags.DurationVar(&lim.upstreamTimeout, "upstream-timeout", lim.upstreamTimeout, "give up on a places request after this long")
	flags.IntVar(&lim.upstreamIdleMax, "upstream-idle-max", lim.upstreamIdleMax, "kept-alive places connections held idle")
	flags.Var(size{&lim.flushAt}, "flush-at", "replies gathered are written once they reach this size")
	flags.Var(size{&lim.pauseOutput}, "pause-output", "output owed past which input is not read")
	flags.Var(size{&lim.maxOutput}, "max-output", "accepted; owed output never reaches it (see README)")
	flags.DurationVar(&lim.writeStall, "write-stall", lim.writeStall, "a client that reads none of its replies for this long is closed")
	flags.IntVar(&lim.maxInFlight, "max-in-flight", lim.maxInFlight, "accepted; one request of a connection is in flight at a time")
	flags.IntVar(&lim.maxClients, "max-clients", lim.maxClients, "clients the location store holds")
	flags.IntVar(&lim.maxConnections, "max-connections", lim.maxConnections, "client connections held at once")
	flags.DurationVar(&lim.acceptBackoff, "accept-backoff", lim.acceptBackoff, "the first pause after an accept error")
	flags.DurationVar(&lim.acceptBackoffMax, "accept-backoff-max", lim.acceptBackoffMax, "the longest pause after accept errors")
	flags.Parse(os.Args[1:])

	usage := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "herd-go: "+format+"\n", args...)
		os.Exit(2)
	}
	if flags.NArg() > 0 {
		usage("unexpected argument %q", flags.Arg(0))
	}
	for _, n := range append([]string{*name}, neighbours.names...) {
		if n == "" || strings.ContainsAny(n, " \t\r\n") {
			usage("server name %q must be one word without spaces, e.g. --name Alford", n)
		}
	}
	if *mode != "herd" && *mode != "echo" {
		usage("--mode must be herd or echo, not %q", *mode)
	}
	if *keyPath != "" && *insecure {
		usage("--herd-key and --insecure-herd exclude each other")
	}
	if *mode == "herd" && *keyPath == "" && !*insecure {
		usage("a herd server needs the herd's key, so that only members can change what it stores: " +
			"run `harness keygen herd.key` once, then give every member `--herd-key herd.key` " +
			"(or pass --insecure-herd to accept updates from anyone, as the CS131 protocol does)")
	}
	if *threads > 0 {
		runtime.GOMAXPROCS(*threads)
	}

	fail := func(err error) {
		fmt.Fprintf(os.Stderr, "herd-go: %v\n", err)
		os.Exit(1)
	}
	// Idle clients are not probed (herd-core does not either): no TCP keep-alive, and no extra
	// setsockopt calls per accepted connection.
	ln, err := (&net.ListenConfig{KeepAlive: -1}).Listen(context.Background(), "tcp", *listen)
	if errors.Is(err, syscall.EADDRINUSE) {
		// The launcher looks for these words, as the C library spells them, to retry elsewhere.
		fail(fmt.Errorf("binding %s: Address already in use (%w)", *listen, err))
	} else if err != nil {
		fail(fmt.Errorf("binding %s: %w", *listen, err))
	}
	var log *eventLog
	if *logPath != "" {
		if log, err = openEventLog(*logPath, *name, *logIO); err != nil {
			fail(err)
		}
	}
	stats := &counters{}
	srv := &server{lim: &lim, stats: stats, log: log, flushAt: lim.flushAt}
	// Reading stops while a write blocks, so owed output stays under pause_output too.
	if lim.pauseOutput < srv.flushAt {
		srv.flushAt = lim.pauseOutput
	}
	if *mode == "echo" {
		srv.svc = echo{stats}
	} else {
		h := &herd{
			name: *name, neighbours: neighbours.names, maxClients: lim.maxClients,
			store: newLocationStore(*ttl, lim.maxClients), stats: stats, log: log,
		}
		if *keyPath != "" {
			if h.key, err = readHerdKey(*keyPath); err != nil {
				usage("--herd-key %s: %v", *keyPath, err)
			}
		}
		if *placesAddr != "" {
			h.places = newPlacesClient(*placesAddr, &lim, stats)
		}
		for i, peer := range neighbours.names {
			link := newFloodLink(*name, peer, neighbours.addrs[i], h.key, &lim, stats, log)
			h.links = append(h.links, link)
			go link.run()
		}
		srv.svc = h
	}
	if *samplesPath != "" {
		if err := startSampling(*samplesPath, *sampleEvery, stats); err != nil {
			fail(err)
		}
	}
	log.event("listening", str("addr", ln.Addr().String()))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer stop()
	go func() {
		err := srv.acceptLoop(ln)
		fmt.Fprintf(os.Stderr, "herd-go: stopped accepting: %v\n", err)
		os.Exit(1)
	}()
	<-ctx.Done()
	// Stop: counters to --stats, the log flushed, exit 0. Goroutines are not unwound: the process
	// ends anyway (as `harness serve` does).
	log.event("stopping")
	code := 0
	if *statsPath != "" {
		if err := stats.writeStats(*statsPath); err != nil {
			fmt.Fprintf(os.Stderr, "herd-go: writing %s: %v\n", *statsPath, err)
			code = 1
		}
	}
	log.flushAndStop()
	os.Exit(code)
}

// startSampling appends {"t_ns","rss_kib","floods_dropped"} to path every interval, each line
// written at once, so a killed server's samples are all there.
func startSampling(path string, every time.Duration, stats *counters) error {
	if every <= 0 {
		return errors.New("--sample-every must be above 0, e.g. 100ms")
	}
	out, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("opening %s: %w", path, err)
	}
	pageKiB := uint64(os.Getpagesize() / 1024)
	go func() {
		for ; ; time.Sleep(every) {
			var rss uint64
			if statm, err := os.ReadFile("/proc/self/statm"); err == nil {
				if f := strings.Fields(string(statm)); len(f) > 1 {
					pages, _ := strconv.ParseUint(f[1], 10, 64)
					rss = pages * pageKiB
				}
			}
			line := fmt.Sprintf("{\"t_ns\":%d,\"rss_kib\":%d,\"floods_dropped\":%d}\n",
				monotonicNanos(), rss, stats.floodsDropped.Load())
			if _, err := out.WriteString(line); err != nil {
				return
			}
		}
	}()
	return nil
}

// monotonicNanos is CLOCK_MONOTONIC, the clock the load generator stamps its timeline with
// (Go's own monotonic readings are relative to process start).
func monotonicNanos() int64 {
	var ts syscall.Timespec
	syscall.Syscall(syscall.SYS_CLOCK_GETTIME, 1 /* CLOCK_MONOTONIC */, uintptr(unsafe.Pointer(&ts)), 0)
	return ts.Nano()
}
