// The places backend (herd-core places.rs, policy/upstream.rs): the HTTP/1.1 client that answers
// WHATSAT, and the JSON it puts in the reply.
//
// The client is herd-core's `PlacesPool` and `PlacesCall` on `net` sockets:
//
//   get ─┬─ an idle kept-alive connection (the most recently returned) ─► write the request ─┐
//        └─ none idle: net.connect (counted once connected) ─────────────► write the request ─┤
//                                                                                           ▼
//     'data' ─► decodeResponse ─► complete: back to the pool if it may be kept, then the answer
//     closed or failed before any byte, on a reused connection ─► once more, on a fresh one
//     the one deadline (--upstream-timeout) passed ─► the connection is destroyed, never reused
//
// Why not `http.request` on a keep-alive `http.Agent`: the exchange is always the same GET to one
// known backend, and the Agent's general machinery (a ClientRequest, an IncomingMessage stream,
// header objects, a handful of nextTicks and socket listeners moved on and off for every request)
// costs about four times the CPU of the exchange itself (~160 µs against ~40 µs a request on the
// development machine). It also cannot say herd-core's rules exactly: the stale-connection retry
// must go out on a fresh connection (the Agent hands it another idle one), and a connection may go
// back to the pool only if nothing followed the response. Responses are decoded as herd-core's
// `decode_response` does (Content-Length or chunked, 4 MiB at most), with its error texts.
//
// The reply's JSON must be what herd-core's serde_json prints, byte for byte: the places'
// `results` cut to the bound, pretty-printed with two-space indents, keys in the backend's order,
// floats spelled as Rust spells them (`5.0`, `1e-7`, where JavaScript prints `5`, `1e-7`…).
// `JSON.parse` loses number spellings and key order, so a small parser as strict as serde_json's
// reads the body and prints each value as it goes (no tree is built, and the results past the bound
// are checked but never printed).

import { isUtf8 } from 'node:buffer';
import net from 'node:net';

import { ioMessage } from './log.mjs';

const NEARBY_PATH = '/maps/api/place/nearbysearch/json';
/** Upper bound on a response, headers and body, to keep a broken upstream from eating memory. */
const MAX_RESPONSE = 4 * 1024 * 1024;
/** httparse's header array in herd-core's decoder. */
const MAX_HEADERS = 32;

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

export class PlacesClient {
  /** @param address { host, port, text } of the backend */
  constructor(address, limits, stats) {
    this.address = address;
    this.timeout = limits.upstreamTimeout;
    this.idleMax = limits.upstreamIdleMax;
    this.stats = stats;
    /** Idle kept-alive connections, the most recently returned last (used first). */
    this.idle = [];
    // The Host header: the --places address as given (herd-core: the address's own spelling).
    this.requestTail = ` HTTP/1.1\r\nHost: ${address.text}\r\nConnection: keep-alive\r\n\r\n`;
  }

  /** Asks for the places of `lookup`; `done(null, { status, body })` or `done(UpstreamError)`, once. */
  get(lookup, done) {
    const request = `GET ${NEARBY_PATH}?location=${lookup.location.query}&radius=${lookup.radiusM}&key=herdbench${this.requestTail}`;
    new Exchange(this, request, done).start();
  }

  /** A fresh connection (counted in `upstream_connects` once it is connected). */
  open() {
    return new Upstream(this, net.connect({ host: this.address.host, port: this.address.port, noDelay: true }));
  }

  /** An exchange on `conn` is over: kept for the next one if it may be and there is room. */
  checkin(conn, keep) {
    conn.exchange = null;
    if (keep && this.idle.length < this.idleMax) {
      conn.socket.unref(); // an idle connection does not keep the process alive (as the Agent's)
      this.idle.push(conn);
    } else {
      conn.close();
    }
  }

  /** An idle connection closed or misbehaved: out of the pool. */
  forget(conn) {
    const i = this.idle.lastIndexOf(conn);
    if (i >= 0) this.idle.splice(i, 1);
  }
}

/** One connection to the backend; its listeners stay for its whole life. */
class Upstream {
  constructor(client, socket) {
    this.client = client;
    this.socket = socket;
    /** The exchange it carries now, or null (idle, or being dropped). */
    this.exchange = null;
    this.connected = false;
    this.closed = false;
    socket.on('connect', () => {
      this.connected = true;
      client.stats.upstream_connects++;
    });
    socket.on('data', (chunk) => {
      if (this.exchange !== null) this.exchange.onBytes(this, chunk);
      else this.lost(null); // bytes nobody asked for, on an idle connection: never reuse it
    });
    socket.on('end', () => this.lost('end of stream'));
    socket.on('error', (err) => this.lost(ioMessage(err)));
    socket.on('close', () => this.lost('end of stream'));
  }

  close() {
    this.closed = true;
    this.socket.destroy();
  }

  /** The connection is gone (`how`: why, as herd-core's io::Error displays it). */
  lost(how) {
    if (this.closed) return;
    this.close();
    const exchange = this.exchange;
    this.exchange = null;
    if (exchange !== null) exchange.onClosed(this, how);
    else this.client.forget(this);
  }
}

/** One WHATSAT's exchange (herd-core `PlacesCall`): one deadline, at most one retry. */
class Exchange {
  constructor(client, request, done) {
    this.client = client;
    this.request = request;
    this.done = done;
    this.conn = null;
    this.reused = false;
    this.retried = false;
    this.finished = false;
    /** The response so far on the current connection: its chunks and their size. */
    this.chunks = [];
    this.size = 0;
    /** Bytes needed before decoding is worth trying again. */
    this.need = 1;
    this.deadline = setTimeout(() => this.onTimeout(), client.timeout);
  }

  start() {
    const idle = this.client.idle.pop();
    if (idle !== undefined) {
      idle.socket.ref();
      this.attach(idle, true);
    } else {
      this.attach(this.client.open(), false);
    }
  }

  attach(conn, reused) {
    this.conn = conn;
    this.reused = reused;
    this.chunks = [];
    this.size = 0;
    this.need = 1;
    conn.exchange = this;
    conn.socket.write(this.request, 'latin1');
  }

  onBytes(conn, chunk) {
    this.chunks.push(chunk);
    this.size += chunk.length;
    if (this.size < this.need) return;
    const input = this.chunks.length === 1 ? chunk : Buffer.concat(this.chunks, this.size);
    this.chunks = [input];
    let response;
    try {
      response = decodeResponse(input);
    } catch (e) {
      if (!(e instanceof UpstreamError)) throw e;
      this.conn = null;
      this.client.checkin(conn, false);
      return this.finish(e);
    }
    if (response.partial) {
      this.need = response.need;
      return;
    }
    this.conn = null;
    // Bytes past the response would be a second, unasked-for answer: do not reuse.
    this.client.checkin(conn, response.keepAlive && response.consumed === input.length);
    this.finish(null, { status: response.status, body: response.body });
  }

  /** The connection closed or failed (`how`), or could not be opened. */
  onClosed(conn, how) {
    this.conn = null;
    if (this.finished) return;
    if (!conn.connected) return this.finish(UpstreamError.unreachable(how));
    if (this.size === 0 && this.reused && !this.retried) {
      // The backend closed a kept-alive connection while it sat idle: the request never reached
      // it, so sending it again cannot do it twice. On a fresh connection, as herd-core does.
      this.retried = true;
      this.client.stats.upstream_stale_retries++;
      return this.attach(this.client.open(), false);
    }
    this.finish(
      this.size === 0
        ? UpstreamError.unreachable(`connection closed by upstream (${how})`)
        : UpstreamError.http(`connection closed mid-response (${how})`),
    );
  }

  /** The deadline passed: the connection is closed (a late answer must not be the next one's). */
  onTimeout() {
    const conn = this.conn;
    this.conn = null;
    if (conn !== null) {
      conn.exchange = null;
      conn.close();
    }
    this.finish(UpstreamError.timeout());
  }

  finish(err, response) {
    if (this.finished) return;
    this.finished = true;
    clearTimeout(this.deadline);
    this.done(err, response);
  }
}

// ---------------------------------------------------------------------------------------------
// The response (herd-core places.rs `decode_response`, which reads the head with httparse).

const VERSION_PREFIX = 'HTTP/1.';
const STATUS_LINE = /^HTTP\/1\.([01]) (\d{3})(?:[ ]([\t\x20-\x7e\x80-\xff]*))?$/;
const VERSION = /^HTTP\/1\.[01] /;
const HEADER = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([\t\x20-\x7e\x80-\xff]*)$/;
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+:/;
const HIGH_BYTES = /[\x80-\xff]/;
const DECIMAL = /^\+?\d+$/;
const HEX = /^\+?[0-9a-fA-F]+$/;
const U64_MAX = 18446744073709551615n;

/**
 * Decodes one response from the start of `input` (a Buffer): `{ partial: true, need }` until it is
 * all there, then `{ status, body, consumed, keepAlive }`; throws UpstreamError.
 */
function decodeResponse(input) {
  // The head ends at the first empty line (CRLF or LF line ends, as httparse takes them).
  let headEnd = -1;
  let lineStart = 0;
  for (;;) {
    const eol = input.indexOf(10, lineStart);
    if (eol < 0) break;
    if (lineStart === 0) statusLine(input.latin1Slice(0, eol)); // refused as soon as it is in
    if (eol === lineStart || (eol === lineStart + 1 && input[lineStart] === 13)) {
      if (lineStart > 0) {
        headEnd = eol + 1;
        break;
      }
    }
    lineStart = eol + 1;
  }
  if (headEnd < 0) {
    const start = input.latin1Slice(0, Math.min(input.length, VERSION_PREFIX.length));
    if (!VERSION_PREFIX.startsWith(start)) throw UpstreamError.http('invalid HTTP version');
    return tooLargeOrPartial(input.length);
  }

  const lines = input.latin1Slice(0, headEnd).split('\n');
  const [, minor, code] = statusLine(lines[0]);
  let keepAlive = minor === '1';
  let contentLength = null;
  let chunked = false;
  const headers = lines.length - 3; // the status line, the empty line, and after its newline
  if (headers > MAX_HEADERS) throw UpstreamError.http('too many headers');
  for (let i = 1; i <= headers; i++) {
    const line = lines[i].endsWith('\r') ? lines[i].slice(0, -1) : lines[i];
    const m = HEADER.exec(line);
    if (m === null) throw UpstreamError.http(HEADER_NAME.test(line) ? 'invalid header value' : 'invalid header name');
    const name = m[1].toLowerCase();
    // herd-core reads a value as UTF-8 (else empty), trimmed.
    let value = m[2];
    if (HIGH_BYTES.test(value) && !isUtf8(Buffer.from(value, 'latin1'))) value = '';
    value = value.trim();
    if (name === 'content-length') {
      if (!DECIMAL.test(value) || BigInt(value) > U64_MAX) throw UpstreamError.http('bad Content-Length');
      contentLength = Number(value);
    } else if (name === 'transfer-encoding') {
      chunked = value.toLowerCase().includes('chunked');
    } else if (name === 'connection') {
      keepAlive = value.toLowerCase() !== 'close';
    }
  }
  const status = Number(code);

  if (chunked) {
    const decoded = decodeChunked(input, headEnd);
    if (decoded === null) return tooLargeOrPartial(input.length);
    return { status, body: decoded.body, consumed: decoded.end, keepAlive };
  }
  if (contentLength === null) throw UpstreamError.http('no Content-Length and not chunked');
  if (contentLength > MAX_RESPONSE - headEnd) throw UpstreamError.tooLarge();
  const end = headEnd + contentLength;
  if (input.length < end) return { partial: true, need: end };
  return { status, body: input.subarray(headEnd, end), consumed: end, keepAlive };
}

/** The status line (without its LF): [line, minor version, code]; throws as httparse would. */
function statusLine(line) {
  const m = STATUS_LINE.exec(line.endsWith('\r') ? line.slice(0, -1) : line);
  if (m === null) throw UpstreamError.http(VERSION.test(line) ? 'invalid response status' : 'invalid HTTP version');
  return m;
}

function tooLargeOrPartial(length) {
  if (length > MAX_RESPONSE) throw UpstreamError.tooLarge();
  return { partial: true, need: length + 1 };
}

/** A chunked body from `start`: `{ body, end }` once the last chunk and trailers are in, or null. */
function decodeChunked(input, start) {
  const parts = [];
  let size = 0;
  let at = start;
  for (;;) {
    const eol = input.indexOf('\r\n', at);
    if (eol < 0) return null;
    let sizeText = input.latin1Slice(at, eol);
    if (HIGH_BYTES.test(sizeText)) throw UpstreamError.http('bad chunk size');
    sizeText = sizeText.split(';')[0].trim();
    if (!HEX.test(sizeText) || BigInt(`0x${sizeText.replace('+', '')}`) > U64_MAX) {
      throw UpstreamError.http('bad chunk size');
    }
    const chunk = parseInt(sizeText, 16);
    at = eol + 2;
    if (chunk === 0) {
      // Trailers, then an empty line.
      for (;;) {
        const end = input.indexOf('\r\n', at);
        if (end < 0) return null;
        const empty = end === at;
        at = end + 2;
        if (empty) return { body: Buffer.concat(parts, size), end: at };
      }
    }
    if (chunk > MAX_RESPONSE - size) throw UpstreamError.tooLarge();
    if (input.length - at < chunk + 2) return null;
    if (input[at + chunk] !== 13 || input[at + chunk + 1] !== 10) {
      throw UpstreamError.http('chunk not followed by CRLF');
    }
    parts.push(input.subarray(at, at + chunk));
    size += chunk;
    at += chunk + 2;
  }
}

/** The WHATSAT reply: the stored AT line, the JSON, two newlines (herd-core `Service::complete`). */
export function whatsatReply(atLine, json) {
  return `${atLine}\n${json}\n\n`;
}

// ---------------------------------------------------------------------------------------------
// The JSON (herd-core places.rs `trim_places`, `error_places`).
//
// herd-core collapses runs of newlines in what serde_json printed and drops a trailing one; the
// pretty printer never makes either (empty containers print inline, strings escape their
// newlines), so there is nothing to collapse here.

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** The places JSON for a reply: `results` cut to `bound`, pretty-printed, as a UTF-8 string. */
export function trimPlaces(body, bound) {
  let text;
  try {
    text = utf8.decode(body);
  } catch {
    throw UpstreamError.json('invalid unicode code point');
  }
  try {
    return new JsonPrinter(text).document(bound);
  } catch (e) {
    if (e instanceof JsonError) throw UpstreamError.json(e.message);
    throw e;
  }
}

/** The JSON sent when the upstream failed: the Nearby Search error shape. */
export function errorPlaces(error) {
  return (
    '{\n  "html_attributions": [],\n  "results": [],\n  "status": "UNKNOWN_ERROR",\n' +
    `  "error_message": ${JSON.stringify(error.message)}\n}`
  );
}

class JsonError extends Error {}

const I64_MIN = -9223372036854775808n;
const NOT_INTEGER = /[.eE]/;

/** serde_json's spelling of a number: integers that fit u64/i64 as integers, the rest as f64. */
function formatNumber(text, x) {
  if (!NOT_INTEGER.test(text)) {
    // JSON has no leading zeros: an integer of 15 characters or fewer is printed as written.
    if (text.length <= 15) return text === '-0' ? '-0.0' : text; // (`-0` is the float -0.0)
    const n = BigInt(text);
    if (n >= 0n && text[0] !== '-' && n <= U64_MAX) return n.toString();
    if (n < 0n && n >= I64_MIN) return n.toString();
  }
  return formatF64(x);
}

/** ryu's `format64` (what serde_json prints an f64 with): shortest digits, Rust's layout. */
function formatF64(x) {
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const abs = Math.abs(x);
  // Where both print positional notation (10^-5 <= |x| < 10^16) the shortest digits are the
  // same; Rust adds `.0` to a whole number.
  if (abs >= 1e-5 && abs < 1e16) {
    const s = String(x);
    return s.includes('.') ? s : `${s}.0`;
  }
  const [mantissa, exponent] = abs.toExponential().split('e');
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

const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
// A run of string characters that need no escape (a control character ends a JSON string's scan).
// eslint-disable-next-line no-control-regex
const PLAIN = /[^"\\\x00-\x1f]*/y;
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
const RECURSION_LIMIT = 128;
const EOF_IN_OBJECT = 'EOF while parsing an object';
/** Objects with more members than this find repeated keys through a Map. */
const LINEAR_KEYS = 16;

/**
 * A JSON parser as strict as serde_json's that prints what it reads as serde_json's
 * PrettyFormatter would print the parsed value: two spaces a level, `"key": value`, empty
 * containers inline, members in their order (a repeated key keeps its first place and takes the
 * last value, as serde_json's map does), numbers as serde_json prints what it parsed.
 *
 * Each `value(indent)` returns the value's text at that indent; `indent === null` checks the value
 * and prints nothing (the results past the bound).
 */
class JsonPrinter {
  constructor(text) {
    this.s = text;
    this.i = 0;
    this.depth = 0;
    /** The last string read, decoded (a key). */
    this.text = '';
    /** The top-level `results` (its last value) is not an array. */
    this.resultsNotArray = false;
  }

  /** The document, an object, with its top-level `results` cut to `bound`. */
  document(bound) {
    this.space();
    const isObject = this.s.charCodeAt(this.i) === 123;
    let printed = '';
    if (isObject) {
      this.enter();
      printed = this.object('', bound);
      this.depth--;
    } else {
      this.value(null);
    }
    this.space();
    if (this.i < this.s.length) this.fail('trailing characters');
    if (!isObject) throw UpstreamError.json('not an object');
    if (this.resultsNotArray) throw UpstreamError.json('results is not an array');
    return printed;
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

  /** Into an object or array (at its bracket). */
  enter() {
    if (++this.depth > RECURSION_LIMIT) this.fail('recursion limit exceeded');
    this.i++;
  }

  value(indent) {
    this.space();
    const c = this.s.charCodeAt(this.i);
    let printed;
    switch (c) {
      case 123: // {
        this.enter();
        printed = this.object(indent, -1);
        this.depth--;
        return printed;
      case 91: // [
        this.enter();
        printed = this.array(indent, -1);
        this.depth--;
        return printed;
      case 34: // "
        return this.string(indent !== null);
      case 116:
        if (this.s.startsWith('true', this.i)) return this.literal('true');
        break;
      case 102:
        if (this.s.startsWith('false', this.i)) return this.literal('false');
        break;
      case 110:
        if (this.s.startsWith('null', this.i)) return this.literal('null');
        break;
    }
    if (Number.isNaN(c)) this.fail('EOF while parsing a value');
    NUMBER.lastIndex = this.i;
    const m = NUMBER.exec(this.s);
    if (m === null) this.fail(c === 45 ? 'invalid number' : 'expected value');
    const text = m[0];
    const x = Number(text);
    if (!Number.isFinite(x)) this.fail('number out of range');
    this.i += text.length;
    return indent === null ? '' : formatNumber(text, x);
  }

  literal(word) {
    this.i += word.length;
    return word;
  }

  /** After `{`: the members, printed at `indent` (`bound` >= 0: the top level, cut `results`). */
  object(indent, bound) {
    const print = indent !== null;
    const inner = print ? indent + '  ' : null;
    this.space();
    if (this.s.charCodeAt(this.i) === 125) {
      this.i++;
      return print ? '{}' : '';
    }
    const keys = print ? [] : null;
    const members = print ? [] : null;
    let index = null;
    for (;;) {
      this.space();
      if (this.s.charCodeAt(this.i) !== 34) this.fail(this.i < this.s.length ? 'key must be a string' : EOF_IN_OBJECT);
      const printedKey = this.string(print);
      const key = this.text;
      this.space();
      if (this.s.charCodeAt(this.i) !== 58) this.fail(this.i < this.s.length ? 'expected `:`' : EOF_IN_OBJECT);
      this.i++;
      let printed;
      if (bound >= 0 && key === 'results') {
        this.space();
        this.resultsNotArray = this.s.charCodeAt(this.i) !== 91;
        if (this.resultsNotArray) {
          printed = this.value(inner);
        } else {
          this.enter();
          printed = this.array(inner, bound);
          this.depth--;
        }
      } else {
        printed = this.value(inner);
      }
      if (print) {
        const member = `${inner}${printedKey}: ${printed}`;
        const at = index === null ? keys.indexOf(key) : (index.get(key) ?? -1);
        if (at >= 0) {
          members[at] = member;
        } else {
          keys.push(key);
          members.push(member);
          if (index !== null) index.set(key, keys.length - 1);
          else if (keys.length > LINEAR_KEYS) index = new Map(keys.map((k, j) => [k, j]));
        }
      }
      this.space();
      const c = this.s.charCodeAt(this.i++);
      if (c === 125) break;
      if (c !== 44) this.fail(Number.isNaN(c) ? EOF_IN_OBJECT : 'expected `,` or `}`');
    }
    if (!print) return '';
    // Concatenated, not joined: V8 keeps the pieces as a rope and copies them once, at the end.
    let printed = `{\n${members[0]}`;
    for (let j = 1; j < members.length; j++) printed += `,\n${members[j]}`;
    return `${printed}\n${indent}}`;
  }

  /** After `[`: the elements, the first `bound` of them printed at `indent` (all if `bound` < 0). */
  array(indent, bound) {
    const print = indent !== null;
    const inner = print ? indent + '  ' : null;
    this.space();
    if (this.s.charCodeAt(this.i) === 93) {
      this.i++;
      return print ? '[]' : '';
    }
    let printed = '';
    for (let n = 0; ; n++) {
      if (print && (bound < 0 || n < bound)) {
        const element = this.value(inner);
        printed += n === 0 ? `${inner}${element}` : `,\n${inner}${element}`;
      } else {
        this.value(null);
      }
      this.space();
      const c = this.s.charCodeAt(this.i++);
      if (c === 93) break;
      if (c !== 44) this.fail(Number.isNaN(c) ? 'EOF while parsing a list' : 'expected `,` or `]`');
    }
    if (!print) return '';
    return printed === '' ? '[]' : `[\n${printed}\n${indent}]`;
  }

  /** A string: its printed form (if `print`); its decoded text in `this.text`. */
  string(print) {
    const start = this.i;
    // The common case in one native scan: no escape, no control character, then the closing quote.
    PLAIN.lastIndex = start + 1;
    PLAIN.test(this.s);
    if (this.s.charCodeAt(PLAIN.lastIndex) === 34) {
      this.i = PLAIN.lastIndex + 1;
      this.text = this.s.slice(start + 1, this.i - 1);
      return print ? this.s.slice(start, this.i) : '';
    }
    this.i++;
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
    if (!escaped) {
      // Nothing in it needs escaping (no `"`, `\` or control character): printed as written.
      this.text = this.s.slice(start + 1, this.i - 1);
      return print ? this.s.slice(start, this.i) : '';
    }
    let text;
    try {
      text = JSON.parse(this.s.slice(start, this.i));
    } catch {
      this.fail('invalid escape');
    }
    if (LONE_SURROGATE.test(text)) this.fail('lone leading surrogate in hex escape');
    this.text = text;
    // JSON.stringify escapes exactly as serde_json does (", \, \b \f \n \r \t, other control
    // characters as \u00xx); lone surrogates were refused above, as serde_json refuses them.
    return print ? JSON.stringify(text) : '';
  }
}
