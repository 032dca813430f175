package main

// The places upstream: net/http's client over one pooled Transport (kept-alive connections, the
// most recently used first; at most upstream_idle_max idle), one deadline for the whole exchange
// (client.Timeout = upstream_timeout, connecting and Go's retry of a stale kept-alive connection
// included), and the JSON trimmed exactly as herd-core's places.rs trims it.
//
//	GET /maps/api/place/nearbysearch/json?location=34.068930,-118.445127&radius=10000&key=herdbench HTTP/1.1
//	Host: 127.0.0.1:8000

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"sync/atomic"
	"time"
)

const (
	nearbyPath = "/maps/api/place/nearbysearch/json"
	// maxResponse bounds a response body, to keep a broken upstream from eating memory.
	maxResponse = 4 * 1024 * 1024
)

// upstreamError is why an exchange failed; its text goes into the error JSON (herd-core's
// UpstreamError messages).
type upstreamError string

func (e upstreamError) Error() string { return string(e) }

const (
	errTimeout       = upstreamError("upstream timed out")
	errTooLarge      = upstreamError("response larger than 4194304 bytes")
	errNotConfigured = upstreamError("no places backend configured")
)

type placesClient struct {
	client *http.Client
	url    string // up to the location parameter
	stats  *counters
}

func newPlacesClient(addr string, lim *limits, stats *counters) *placesClient {
	dialer := &net.Dialer{}
	transport := &http.Transport{
		Proxy: nil, // the backend is where --places says, whatever the environment
		DialContext: func(ctx context.Context, network, address string) (net.Conn, error) {
			conn, err := dialer.DialContext(ctx, network, address)
			if err == nil {
				stats.upstreamConnects.Add(1)
			}
			return conn, err
		},
		MaxIdleConns:        lim.upstreamIdleMax,
		MaxIdleConnsPerHost: lim.upstreamIdleMax,
		DisableKeepAlives:   lim.upstreamIdleMax == 0,
		IdleConnTimeout:     90 * time.Second, // http.DefaultTransport's
		DisableCompression:  true,             // the body is trimmed and passed on, never gzipped
	}
	return &placesClient{
		client: &http.Client{Transport: transport, Timeout: lim.upstreamTimeout},
		url:    "http://" + addr + nearbyPath + "?location=",
		stats:  stats,
	}
}

// fetch asks for the places around loc and returns the trimmed JSON, or why it failed.
func (p *placesClient) fetch(loc location, radiusKm float64, bound int) (string, error) {
	if p == nil {
		return "", errNotConfigured
	}
	radius := strconv.FormatUint(uint64(math.Round(radiusKm*1000)), 10)
	req, err := http.NewRequest(http.MethodGet, p.url+loc.queryParam()+"&radius="+radius+"&key=herdbench", nil)
	if err != nil {
		return "", upstreamError("malformed HTTP response: " + err.Error())
	}
	// Go's Transport retries a request whose kept-alive connection turned out closed: a second
	// connection for one request is such a retry.
	var conns atomic.Int32
	trace := &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) {
		if conns.Add(1) > 1 {
			p.stats.upstreamStaleRetries.Add(1)
		}
	}}
	resp, err := p.client.Do(req.WithContext(httptrace.WithClientTrace(req.Context(), trace)))
	if err != nil {
		if isTimeout(err) {
			return "", errTimeout
		}
		var ue interface{ Unwrap() error }
		if errors.As(err, &ue) {
			err = ue.Unwrap() // without url.Error's "Get <url>:" prefix
		}
		return "", upstreamError("upstream unreachable: " + err.Error())
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	switch {
	case err != nil && isTimeout(err):
		return "", errTimeout
	case err != nil:
		return "", upstreamError(fmt.Sprintf("malformed HTTP response: connection closed mid-response (%v)", err))
	case len(body) > maxResponse:
		return "", errTooLarge
	case resp.StatusCode != http.StatusOK:
		return "", upstreamError("upstream status " + strconv.Itoa(resp.StatusCode))
	}
	return trimPlaces(body, bound)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// trimPlaces is the places JSON of a reply: `results` cut to bound, pretty-printed as serde_json
// prints it (two-space indent, `"key": value`, empty arrays as []), no trailing newline. Keys keep
// the upstream's order and values its spelling: json.Compact validates and strips white space,
// cutResults cuts the array in place, json.Indent pretty-prints. (herd-core re-spells numbers
// and strings through serde_json; the harness's backend already writes serde_json's spelling,
// so the bytes are the same.)
func trimPlaces(body []byte, bound int) (string, error) {
	var compact bytes.Buffer
	if err := json.Compact(&compact, body); err != nil {
		return "", upstreamError("malformed places JSON: " + err.Error())
	}
	js := compact.Bytes()
	if len(js) == 0 || js[0] != '{' {
		return "", upstreamError("malformed places JSON: not an object")
	}
	js, err := cutResults(js, bound)
	if err != nil {
		return "", err
	}
	var pretty bytes.Buffer
	pretty.Grow(len(body))
	if err := json.Indent(&pretty, js, "", "  "); err != nil {
		return "", upstreamError("malformed places JSON: " + err.Error())
	}
	return pretty.String(), nil
}

// cutResults cuts the top-level "results" array of a compact, valid JSON object after bound
// elements.
func cutResults(js []byte, bound int) ([]byte, error) {
	i := 1 // inside the top-level object
	for i < len(js) && js[i] != '}' {
		keyEnd := skipValue(js, i)
		key := js[i:keyEnd]
		valueStart := keyEnd + 1 // past ':'
		valueEnd := skipValue(js, valueStart)
		if string(key) == `"results"` {
			if js[valueStart] != '[' {
				return nil, upstreamError("malformed places JSON: results is not an array")
			}
			if cut, ok := cutArray(js, valueStart, valueEnd, bound); ok {
				js = append(js[:cut:cut], js[valueEnd-1:]...)
				valueEnd = cut + 1
			}
		}
		i = valueEnd
		if i < len(js) && js[i] == ',' {
			i++
		}
	}
	return js, nil
}

// cutArray finds where the array at js[start:end] must be cut to keep bound elements: the
// comma after the last one kept.
func cutArray(js []byte, start, end, bound int) (int, bool) {
	i := start + 1
	for kept := 0; i < end-1; kept++ {
		if kept == bound {
			return i - 1, true // the comma before element bound+1
		}
		i = skipValue(js, i) + 1 // past the comma (or the closing bracket)
	}
	return 0, false
}

// skipValue returns the index just past the JSON value starting at js[i] (compact and valid).
func skipValue(js []byte, i int) int {
	depth, inString := 0, false
	for ; i < len(js); i++ {
		c := js[i]
		switch {
		case inString:
			if c == '\\' {
				i++
			} else if c == '"' {
				inString = false
				if depth == 0 {
					return i + 1
				}
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
		case c == '}' || c == ']':
			if depth == 0 {
				return i // the end of an enclosing container: a scalar ended
			}
			depth--
			if depth == 0 {
				return i + 1
			}
		case c == ',' || c == ':':
			if depth == 0 {
				return i
			}
		}
	}
	return i
}

// errorPlaces is the JSON sent when the upstream failed: the Nearby Search error shape, so clients
// parse one format.
func errorPlaces(err error) string {
	msg := appendJSONString(nil, err.Error())
	return "{\n  \"html_attributions\": [],\n  \"results\": [],\n  \"status\": \"UNKNOWN_ERROR\",\n  \"error_message\": " +
		string(msg) + "\n}"
}
