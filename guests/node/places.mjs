// The places backend (herd-core places.rs, policy/upstream.rs): the HTTP/1.1 client that answers
// WHATSAT, and the JSON it puts in the reply.
//
// Requests go through one `http.Agent({ keepAlive: true })`: kept-alive connections, the most
// recently returned used first (`scheduling: 'lifo'`, herd-core's rule: the least likely to have
// been closed by the backend), at most --upstream-idle-max kept idle. Each exchange has one
// deadline (--upstream-timeout) covering connecting and the one retry; a kept-alive connection
// found closed before any byte of the answer came back (`req.reusedSocket`) is retried once, since
// the request never reached the backend. Nothing else is retried.
//
// The reply's JSON must be what herd-core's serde_json prints, byte for byte: the places'
// `results` cut to the bound, pretty-printed with two-space indents, keys in the backend's order,
// floats spelled as Rust spells them (`5.0`, `1e-7`, where JavaScript prints `5`, `1e-7`…). So
// the body is parsed by a small parser that keeps each number's text and each object's key order
// (`JSON.parse` loses both), and printed by a printer that follows serde_json and ryu.

import http from 'node:http';

import { ioMessage } from './log.mjs';

const NEARBY_PATH = '/maps/api/place/nearbysearch/json';
/** Upper bound on a response, to keep a broken upstream from eating memory. */
const MAX_RESPONSE = 4 * 1024 * 1024;

/** Why an exchange failed; `message` is what herd-core's `UpstreamError` displays. */
export class UpstreamError extends Error {
  static http = (detail) => new UpstreamError(`malformed HTTP response: ${detail}`);
  static tooLarge = () => new UpstreamError(`response larger than ${MAX_RESPONSE} bytes`);
  static status = (code) => new UpstreamError(`upstream status ${code}`);
  static json = (detail) => new UpstreamError(`malformed places JSON: ${detail}`);
  static unreachable = (detail) => new UpstreamError(`upstream unreachable: ${detail}`);
  static timeout = () => new UpstreamError('upstream timed out');
  static notConfigured = () => new UpstreamError('no places backend configured');
}

/** An Agent that counts the connections it opens (counter `upstream_connects`). */
class CountingAgent extends http.Agent {
  constructor(options, stats) {
    super(options);
    this.stats = stats;
  }

  createConnection(options, callback) {
    this.stats.upstream_connects++;
    return super.createConnection(options, callback);
  }
}

export class PlacesClient {
  /** @param address { host, port } of the backend */
  constructor(address, limits, stats) {
    this.address = address;
    this.timeout = limits.upstreamTimeout;
    this.stats = stats;
    this.agent = new CountingAgent(
      {
        keepAlive: true,
        scheduling: 'lifo',
        maxFreeSockets: limits.upstreamIdleMax,
        // herd-core opens what the WHATSAT concurrency needs, bounded only by its connections
        // and their requests in flight; the Agent must not queue requests behind a smaller cap.
        maxSockets: limits.maxConnections * limits.maxInFlight,
        noDelay: true,
      },
      stats,
    );
  }

  /** Asks for the places of `lookup`; `done(null, { status, body })` or `done(UpstreamError)`, once. */
  get(lookup, done) {
    const path = `${NEARBY_PATH}?location=${lookup.location.query}&radius=${lookup.radiusM}&key=herdbench`;
    let finished = false;
    let req = null;
    const finish = (err, response) => {
      if (finished) return;
      finished = true;
      clearTimeout(deadline);
      done(err, response);
    };
    const deadline = setTimeout(() => {
      finish(UpstreamError.timeout());
      req?.destroy();
    }, this.timeout);

    const attempt = (retried) => {
      let answered = false; // a byte of the answer came back: never retried after that
      req = http.request({ agent: this.agent, host: this.address.host, port: this.address.port, path });
      req.on('response', (res) => {
        answered = true;
        const length = res.headers['content-length'];
        const chunked = /chunked/i.test(res.headers['transfer-encoding'] ?? '');
        if (length === undefined && !chunked) {
          req.destroy();
          return finish(UpstreamError.http('no Content-Length and not chunked'));
        }
        if (!chunked && Number(length) > MAX_RESPONSE) {
          req.destroy();
          return finish(UpstreamError.tooLarge());
        }
        const chunks = [];
        let size = 0;
        res.on('data', (chunk) => {
          size += chunk.length;
          if (size > MAX_RESPONSE) {
            req.destroy();
            return finish(UpstreamError.tooLarge());
          }
          chunks.push(chunk);
        });
        res.on('end', () => finish(null, { status: res.statusCode, body: Buffer.concat(chunks, size) }));
        res.on('error', (err) => finish(midResponse(err)));
      });
      req.on('error', (err) => {
        if (finished) return;
        if (answered) return finish(midResponse(err));
        if (req.reusedSocket && !retried) {
          // The backend closed a kept-alive connection while it sat idle: send the request again.
          this.stats.upstream_stale_retries++;
          return attempt(true);
        }
        if (err.syscall === 'connect') return finish(UpstreamError.unreachable(ioMessage(err)));
        const how = err.message === 'socket hang up' ? 'end of stream' : ioMessage(err);
        finish(UpstreamError.unreachable(`connection closed by upstream (${how})`));
      });
      req.end();
    };
    attempt(false);
  }
}

/** The backend went away while its answer was coming. */
function midResponse(err) {
  const how = err.message === 'aborted' ? 'end of stream' : ioMessage(err);
  return UpstreamError.http(`connection closed mid-response (${how})`);
}

/** The WHATSAT reply: the stored AT line, the JSON, two newlines (herd-core `Service::complete`). */
export function whatsatReply(atLine, json) {
  return `${atLine}\n${json}\n\n`;
}

// ---------------------------------------------------------------------------------------------
// The JSON (herd-core places.rs `trim_places`, `error_places`).

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** The places JSON for a reply: `results` cut to `bound`, pretty-printed, as a UTF-8 string. */
export function trimPlaces(body, bound) {
  let json;
  try {
    json = new JsonParser(utf8.decode(body)).document();
  } catch (e) {
    throw UpstreamError.json(e instanceof JsonError ? e.message : 'invalid unicode code point');
  }
  if (!(json instanceof Map)) throw UpstreamError.json('not an object');
  const results = json.get('results');
  if (results !== undefined) {
    if (!Array.isArray(results)) throw UpstreamError.json('results is not an array');
    results.length = Math.min(results.length, bound);
  }
  return collapseNewlines(pretty(json, ''));
}

/** The JSON sent when the upstream failed: the Nearby Search error shape. */
export function errorPlaces(error) {
  const json = new Map([
    ['html_attributions', []],
    ['results', []],
    ['status', 'UNKNOWN_ERROR'],
    ['error_message', error.message],
  ]);
  return collapseNewlines(pretty(json, ''));
}

function collapseNewlines(text) {
  return text.replace(/\n{2,}/g, '\n').replace(/\n+$/, '');
}

/** A number as written in the document; printed the way serde_json prints what it parsed. */
class JsonNumber {
  constructor(text) {
    this.text = text;
  }
}

class JsonError extends Error {}

const U64_MAX = 18446744073709551615n;
const I64_MIN = -9223372036854775808n;

/** serde_json's spelling of a number: integers that fit u64/i64 as integers, the rest as f64. */
function formatNumber(text) {
  if (!/[.eE]/.test(text)) {
    const n = BigInt(text);
    if (n >= 0n && text[0] !== '-' && n <= U64_MAX) return n.toString();
    if (n < 0n && n >= I64_MIN) return n.toString(); // (`-0` is the float -0.0, below)
  }
  return formatF64(Number(text));
}

/** ryu's `format64` (what serde_json prints an f64 with): shortest digits, Rust's layout. */
function formatF64(x) {
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const [mantissa, exponent] = Math.abs(x).toExponential().split('e');
  const digits = mantissa.replace('.', '');
  const length = digits.length;
  const kk = Number(exponent) + 1; // 10^(kk-1) <= |x| < 10^kk
  const k = kk - length;
  let s;
  if (k >= 0 && kk <= 16) s = `${digits}${'0'.repeat(k)}.0`;
  else if (kk > 0 && kk <= 16) s = `${digits.slice(0, kk)}.${digits.slice(kk)}`;
  else if (kk > -5 && kk <= 0) s = `0.${'0'.repeat(-kk)}${digits}`;
  else if (length === 1) s = `${digits}e${kk - 1}`;
  else s = `${digits[0]}.${digits.slice(1)}e${kk - 1}`;
  return x < 0 ? `-${s}` : s;
}

/** serde_json's PrettyFormatter: two spaces a level, `"key": value`, empty containers inline. */
function pretty(value, indent) {
  if (value instanceof Map) {
    if (value.size === 0) return '{}';
    const inner = indent + '  ';
    const entries = [];
    for (const [k, v] of value) entries.push(`${inner}${JSON.stringify(k)}: ${pretty(v, inner)}`);
    return `{\n${entries.join(',\n')}\n${indent}}`;
  }
  if (Array.isArray(value)) {
    if (value.length === 0) return '[]';
    const inner = indent + '  ';
    return `[\n${value.map((v) => inner + pretty(v, inner)).join(',\n')}\n${indent}]`;
  }
  if (value instanceof JsonNumber) return formatNumber(value.text);
  // Strings: JSON.stringify escapes exactly as serde_json does (", \, \b \f \n \r \t, other
  // control characters as \u00xx); the parser already refused lone surrogates, as serde_json does.
  return JSON.stringify(value);
}

const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
const RECURSION_LIMIT = 128;
const EOF_IN_OBJECT = 'EOF while parsing an object';
const LITERALS = new Map([
  ['true', true],
  ['false', false],
  ['null', null],
]);

/** A JSON parser as strict as serde_json's, keeping key order (Map) and number texts. */
class JsonParser {
  constructor(text) {
    this.s = text;
    this.i = 0;
    this.depth = 0;
  }

  document() {
    const value = this.value();
    this.space();
    if (this.i < this.s.length) this.fail('trailing characters');
    return value;
  }

  fail(what) {
    const before = this.s.slice(0, this.i + 1);
    const line = before.split('\n').length;
    const column = before.length - before.lastIndexOf('\n') - 1;
    throw new JsonError(`${what} at line ${line} column ${column}`);
  }

  space() {
    for (;;) {
      const c = this.s.charCodeAt(this.i);
      if (c !== 32 && c !== 10 && c !== 13 && c !== 9) return;
      this.i++;
    }
  }

  value() {
    this.space();
    const c = this.s[this.i];
    if (c === undefined) this.fail('EOF while parsing a value');
    if (c === '{') return this.nested(() => this.object());
    if (c === '[') return this.nested(() => this.array());
    if (c === '"') return this.string();
    for (const [word, value] of LITERALS) {
      if (this.s.startsWith(word, this.i)) {
        this.i += word.length;
        return value;
      }
    }
    NUMBER.lastIndex = this.i;
    const m = NUMBER.exec(this.s);
    if (m === null) this.fail(c === '-' ? 'invalid number' : 'expected value');
    if (!Number.isFinite(Number(m[0]))) this.fail('number out of range');
    this.i += m[0].length;
    return new JsonNumber(m[0]);
  }

  nested(parse) {
    if (++this.depth > RECURSION_LIMIT) this.fail('recursion limit exceeded');
    this.i++;
    const value = parse();
    this.depth--;
    return value;
  }

  object() {
    const map = new Map();
    this.space();
    if (this.s[this.i] === '}') {
      this.i++;
      return map;
    }
    for (;;) {
      this.space();
      if (this.s[this.i] !== '"') this.fail(this.i < this.s.length ? 'key must be a string' : EOF_IN_OBJECT);
      const key = this.string();
      this.space();
      if (this.s[this.i] !== ':') this.fail(this.i < this.s.length ? 'expected `:`' : EOF_IN_OBJECT);
      this.i++;
      // A repeated key keeps its first place and takes the last value, as serde_json's map does.
      map.set(key, this.value());
      this.space();
      const c = this.s[this.i++];
      if (c === '}') return map;
      if (c !== ',') this.fail(c === undefined ? EOF_IN_OBJECT : 'expected `,` or `}`');
    }
  }

  array() {
    const list = [];
    this.space();
    if (this.s[this.i] === ']') {
      this.i++;
      return list;
    }
    for (;;) {
      list.push(this.value());
      this.space();
      const c = this.s[this.i++];
      if (c === ']') return list;
      if (c !== ',') this.fail(c === undefined ? 'EOF while parsing a list' : 'expected `,` or `]`');
    }
  }

  string() {
    const start = this.i++;
    let escaped = false;
    for (;;) {
      const c = this.s.charCodeAt(this.i++);
      if (Number.isNaN(c)) this.fail('EOF while parsing a string');
      if (c === 34) break; // "
      if (c === 92) {
        escaped = true; // \
        this.i++;
      } else if (c < 32) {
        this.fail('control character (\\u0000-\\u001F) found while parsing a string');
      }
    }
    const raw = this.s.slice(start, this.i);
    if (!escaped) return raw.slice(1, -1);
    let text;
    try {
      text = JSON.parse(raw);
    } catch {
      this.fail('invalid escape');
    }
    if (LONE_SURROGATE.test(text)) this.fail('lone leading surrogate in hex escape');
    return text;
  }
}
