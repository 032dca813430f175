// The proxy-herd protocol, as herd-core (impls/core) defines it: lines in, replies and floods out.
//
// Everything here is synchronous and does no I/O: `Herd.handle(line, link, now)` takes one line
// and returns the reply; it hands any flood to the `flood` function it was built with, and
// returns a `PlacesLookup` for a WHATSAT, which the connection answers once the places backend
// has. The connection code (client.mjs) owns sockets and waiting.
//
// Bytes as strings: every line is a "latin1" string, one char per byte, exactly as it came off
// the wire, and every reply is written back with the same encoding. So `? <line>` quotes the
// bytes as received (even invalid UTF-8), lengths are byte counts, and no line is decoded and
// re-encoded on the hot path. Only where herd-core needs real text (is the line UTF-8? what do
// the logs show?) are the bytes looked at as UTF-8.
//
// Times are BigInt nanoseconds since the epoch, parsed and printed exactly, as herd-core's
// `Timestamp` and `Delta` are (a double cannot hold 1479413884.392014450).

import { isUtf8 } from 'node:buffer';

import { acceptLine, decodeHex, newNonce, proof, verifyProof } from './auth.mjs';

const NANOS = 1_000_000_000n;

// ---------------------------------------------------------------------------------------------
// The wall clock, to the nanosecond.
//
// Node has no nanosecond wall clock; `process.hrtime.bigint()` is CLOCK_MONOTONIC in ns. One
// anchor taken at start-up (performance.timeOrigin is the wall clock at start, to the µs) turns it
// into wall time: deltas and propagation delays are then exact to the ns between any two readings.

const anchorMono = process.hrtime.bigint();
const anchorWall = BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000)) * 1000n;

/** Now, in nanoseconds since the epoch (BigInt). */
export function wallNow() {
  return anchorWall + (process.hrtime.bigint() - anchorMono);
}

// ---------------------------------------------------------------------------------------------
// Times, deltas and locations (herd-core time.rs, location.rs).

// A non-negative POSIX time: 1-20 digits, optionally a point and at least one more digit.
const TIME = /^(\d{1,20})(?:\.(\d+))?$/;
// A signed delta, as an AT line prints it.
const DELTA = /^([+-])(\d{1,20})(?:\.(\d+))?$/;
// ISO 6709 `±DD[.D+]±DDD[.D+]`: both signs required; the split is at the second sign.
const LOCATION = /^([+-]\d+(?:\.\d+)?)([+-]\d+(?:\.\d+)?)$/;

/** Nanoseconds of `whole.frac`; fraction digits past the ninth are below the precision. */
function nanos(whole, frac = '') {
  return BigInt(whole) * NANOS + BigInt((frac + '000000000').slice(0, 9));
}

/** Parses a client time; `null` if it is not one. */
export function parseTime(text) {
  const m = TIME.exec(text);
  return m && nanos(m[1], m[2]);
}

function parseDelta(text) {
  const m = DELTA.exec(text);
  if (!m) return null;
  const magnitude = nanos(m[2], m[3]);
  return m[1] === '-' ? -magnitude : magnitude;
}

/** `+0.263873386` / `-1.500000000`. */
export function formatDelta(delta) {
  const abs = delta < 0n ? -delta : delta;
  const frac = String(abs % NANOS).padStart(9, '0');
  return `${delta < 0n ? '-' : '+'}${abs / NANOS}.${frac}`;
}

/** A validated location: `{ text, query }`, where `query` is `lat,long` for the places API. */
export function parseLocation(text) {
  const m = LOCATION.exec(text);
  if (!m || Math.abs(Number(m[1])) > 90 || Math.abs(Number(m[2])) > 180) return null;
  const unsigned = (s) => (s[0] === '+' ? s.slice(1) : s);
  return { text, query: `${unsigned(m[1])},${unsigned(m[2])}` };
}

// ---------------------------------------------------------------------------------------------
// Lines (herd-core command.rs).

const MAX_RADIUS_KM = 50;
const MAX_BOUND = 20;
const RADIUS = /^[0-9.]+$/;
const BOUND = /^\d{1,3}$/;
const FIELD_SEPARATORS = /[ \t]+/;
const HIGH_BYTES = /[\x80-\xff]/;

/** The fields of a line: runs of spaces and tabs separate them; trailing CRs are white space. */
function fields(line) {
  let end = line.length;
  while (end > 0 && line.charCodeAt(end - 1) === 13) end--;
  const f = (end === line.length ? line : line.slice(0, end)).split(FIELD_SEPARATORS);
  if (f[0] === '') f.shift();
  if (f.length > 0 && f[f.length - 1] === '') f.pop();
  return f;
}

/** `? <line>\n`, a trailing CR left out. */
export function invalidReply(line) {
  const end = line.endsWith('\r') ? line.length - 1 : line.length;
  return `? ${line.slice(0, end)}\n`;
}

/** A line's bytes (latin1 string) as text, invalid UTF-8 replaced, for logs. */
export function lossy(bytes) {
  return HIGH_BYTES.test(bytes) ? Buffer.from(bytes, 'latin1').toString('utf8') : bytes;
}

/** A name from the command line (UTF-8 text) as the bytes it is on the wire (a latin1 string). */
export function wireName(name) {
  return Buffer.from(name, 'utf8').toString('latin1');
}

// ---------------------------------------------------------------------------------------------
// The location store (herd-core store.rs): newest wins, a TTL from store time, a cap on clients.
//
// A Map keeps insertion order, and an updated entry is deleted and set again, so the Map's order is
// store order, oldest first: expired entries are always at the front, and at the cap the entry
// stored longest ago is the first key. (herd-core splits its cap over 16 locked shards; one loop
// needs no shards, so this cap is exact.)
//
// An entry is its AT line, copied out of the read it came in (V8's substrings point into their
// parent string, so a stored slice would keep a whole 64 KiB read alive), its client id (a slice of
// that copy) as the key, and the two times. The location is read back from the line when a
// WHATSAT needs it, as herd-core does.

const IGNORED = 0;
const STORED = 1;
const STORED_EVICTING = 2;

class LocationStore {
  constructor(ttlSecs, maxClients) {
    this.ttl = BigInt(ttlSecs) * NANOS;
    this.maxClients = Math.max(1, maxClients);
    /** client id → { line, time, storedAt } */
    this.entries = new Map();
  }

  /** Stores `record` if its client time is newer than what is held. */
  update(record, now) {
    this.expire(now);
    const held = this.entries.get(record.client);
    if (held !== undefined) {
      if (held.time >= record.time) return IGNORED;
      this.entries.delete(record.client);
    }
    const evicting = held === undefined && this.entries.size >= this.maxClients;
    if (evicting) this.entries.delete(this.entries.keys().next().value);
    const line = Buffer.from(record.line, 'latin1').toString('latin1');
    const client = line.slice(record.clientAt, record.clientAt + record.client.length);
    this.entries.set(client, { line, time: record.time, storedAt: now });
    return evicting ? STORED_EVICTING : STORED;
  }

  /** The live entry for `client`, if any. */
  get(client, now) {
    const e = this.entries.get(client);
    return e !== undefined && now - e.storedAt <= this.ttl ? e : undefined;
  }

  expire(now) {
    for (const [client, e] of this.entries) {
      if (now - e.storedAt <= this.ttl) break;
      this.entries.delete(client);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Counters (herd-core stats.rs): the names the harness reads, in its order.

export function newStats() {
  return {
    iamat: 0,
    whatsat: 0,
    at: 0,
    peer: 0,
    invalid: 0,
    echo: 0,
    oversized: 0,
    floods_stored: 0,
    floods_out: 0,
    floods_dropped: 0,
    upstream_ok: 0,
    upstream_errors: 0,
    upstream_connects: 0,
    upstream_stale_retries: 0,
    connections: 0,
    connections_refused: 0,
    store_evictions: 0,
    unauthenticated_at: 0,
    links_refused: 0,
  };
}

// ---------------------------------------------------------------------------------------------
// The services.

/** Per-connection protocol state (herd-core `Link`). */
export function newLink() {
  // peer: the neighbour index this connection is an authenticated link from, or -1;
  // challenge: a handshake this server answered, whose AUTH is awaited;
  // warned: an unauthenticated AT on it was logged already.
  return { peer: -1, challenge: null, warned: false };
}

/** What a WHATSAT waits for: its stored AT line and the places query. */
export class PlacesLookup {
  constructor(atLine, location, radiusM, bound) {
    this.atLine = atLine;
    this.location = location;
    this.radiusM = radiusM;
    this.bound = bound;
  }
}

/** An eviction episode ends after a second without evictions; the next one is logged again. */
const EVICTION_EPISODE_GAP_NS = NANOS;

/** One proxy-herd server's protocol state (herd-core `Herd`). */
export class Herd {
  /**
   * @param config { name, neighbours: [names], ttlSecs, key: Buffer|null, maxClients }
   * @param flood  (lineWithNewline, [neighbour indices]) => void
   */
  constructor(config, stats, log, flood) {
    this.name = wireName(config.name);
    this.nameBytes = Buffer.from(config.name, 'utf8');
    this.neighbours = config.neighbours.map(wireName);
    this.neighbourNames = config.neighbours;
    this.key = config.key;
    this.maxClients = config.maxClients;
    this.store = new LocationStore(config.ttlSecs, config.maxClients);
    this.stats = stats;
    this.log = log;
    this.flood = flood;
    this.lastEvictionNs = 0n;
  }

  /**
   * Handles one line (a latin1 string without its newline) received at `now` on a connection
   * whose state is `link`. Returns the reply (a latin1 string), `null` for none, or a
   * `PlacesLookup` for the caller to answer with `complete`.
   */
  handle(line, link, now) {
    this.log.input(line);
    if (HIGH_BYTES.test(line) && !isUtf8(Buffer.from(line, 'latin1'))) return this.invalid(line);
    const f = fields(line);
    switch (f.length > 0 ? f[0] : '') {
      case 'IAMAT':
        if (f.length === 4) return this.iamat(line, f, now);
        break;
      case 'WHATSAT':
        if (f.length === 4) return this.whatsat(line, f, now);
        break;
      case 'AT':
        if (f.length === 6) return this.at(line, f, link, now);
        break;
      case 'PEER':
        if (f.length === 2 || f.length === 3) return this.peer(line, f, link);
        break;
      case 'AUTH':
        if (f.length === 2) return this.auth(line, f[1], link);
        break;
    }
    return this.invalid(line);
  }

  iamat(line, [, client, locationText, timeText], now) {
    const location = parseLocation(locationText);
    const time = parseTime(timeText);
    if (location === null || time === null) return this.invalid(line);
    const head = `AT ${this.name} ${formatDelta(now - time)} `;
    const atLine = `${head}${client} ${locationText} ${timeText}`;
    this.storeAndFlood({ server: this.name, client, clientAt: head.length, time, line: atLine }, -1, now);
    const reply = atLine + '\n';
    this.log.output(reply);
    this.stats.iamat++;
    return reply;
  }

  whatsat(line, [, client, radius, bound], now) {
    // Radius: a positive decimal number of km (digits and at most one point), at most 50.
    const radiusKm = RADIUS.test(radius) ? Number(radius) : NaN;
    const results = BOUND.test(bound) ? Number(bound) : NaN;
    if (!(radiusKm > 0 && radiusKm <= MAX_RADIUS_KM) || !(results >= 1 && results <= MAX_BOUND)) {
      return this.invalid(line);
    }
    const held = this.store.get(client, now);
    // The stored line was validated when it was stored; its fifth field is the location.
    const location = held === undefined ? null : parseLocation(held.line.split(' ')[4]);
    if (location === null) return this.invalid(line);
    this.stats.whatsat++;
    return new PlacesLookup(held.line, location, Math.round(radiusKm * 1000), results);
  }

  at(line, [, server, deltaText, client, locationText, timeText], link, now) {
    const delta = parseDelta(deltaText);
    const location = parseLocation(locationText);
    const time = parseTime(timeText);
    if (delta === null || location === null || time === null) return this.invalid(line);
    if (this.key !== null && link.peer < 0) return this.unauthenticatedAt(line, link);
    // The fields as received, single-spaced: a flood carries the origin's spelling unchanged.
    const head = `AT ${server} ${deltaText} `;
    const atLine = `${head}${client} ${locationText} ${timeText}`;
    if (this.storeAndFlood({ server, client, clientAt: head.length, time, line: atLine }, link.peer, now)) {
      this.stats.floods_stored++;
    }
    this.stats.at++;
    return null;
  }

  peer(line, [, name, nonce], link) {
    const i = this.neighbours.indexOf(name);
    if (i < 0) return this.invalid(line);
    if (this.key === null && nonce === undefined) {
      link.peer = i;
      this.log.event({ event: 'link_up', peer: this.neighbourNames[i], direction: 'inbound' });
      this.stats.peer++;
      return null;
    }
    const openerNonce = this.key !== null && nonce !== undefined ? decodeHex(nonce, 16) : null;
    if (openerNonce === null) return this.invalid(line);
    // A connection gets one handshake at a time: a second PEER replaces the first.
    const nonces = { opener: openerNonce, acceptor: newNonce() };
    const names = { opener: Buffer.from(this.neighbourNames[i], 'utf8'), acceptor: this.nameBytes };
    const reply = acceptLine(this.name, nonces.acceptor, proof(this.key, 'accept', names, nonces));
    link.peer = -1;
    link.challenge = { peer: i, names, nonces };
    this.log.output(reply);
    this.stats.peer++;
    return reply;
  }

  auth(line, proofHex, link) {
    const challenge = link.challenge;
    link.challenge = null;
    if (challenge === null) return this.invalid(line);
    const given = this.key === null ? null : decodeHex(proofHex, 32);
    const proven = given !== null && verifyProof(this.key, 'open', challenge.names, challenge.nonces, given);
    const peer = this.neighbourNames[challenge.peer];
    if (!proven) {
      this.stats.links_refused++;
      this.log.event({
        event: 'link_refused',
        peer,
        direction: 'inbound',
        reason: 'the proof does not match the herd key (or answers another handshake)',
      });
      return this.invalid(line);
    }
    link.peer = challenge.peer;
    this.log.event({ event: 'link_up', peer, direction: 'inbound' });
    this.stats.peer++;
    return null;
  }

  /** Stores `record` if newer and floods it to every neighbour but `from` and its origin. */
  storeAndFlood(record, from, now) {
    const update = this.store.update(record, now);
    if (update === IGNORED) return false;
    if (update === STORED_EVICTING) this.evicted(now);
    const to = [];
    for (let i = 0; i < this.neighbours.length; i++) {
      if (i !== from && this.neighbours[i] !== record.server) to.push(i);
    }
    if (to.length > 0) this.flood(record.line + '\n', to);
    return true;
  }

  /** An AT from a connection that is not an authenticated link: refused, counted, logged once. */
  unauthenticatedAt(line, link) {
    this.stats.unauthenticated_at++;
    if (!link.warned) {
      link.warned = true;
      this.log.event({ event: 'unauthenticated_at', line: lossy(line.slice(0, 200)) });
    }
    return this.invalid(line);
  }

  evicted(now) {
    this.stats.store_evictions++;
    const last = this.lastEvictionNs;
    this.lastEvictionNs = now;
    if (now - last > EVICTION_EPISODE_GAP_NS) {
      this.log.event({ event: 'store_evicting', max_clients: this.maxClients });
    }
  }

  invalid(line) {
    this.stats.invalid++;
    const reply = invalidReply(line);
    this.log.output(reply);
    return reply;
  }

  /** The reply to a line over the limit (the connection then closes). */
  oversized(quote) {
    this.stats.oversized++;
    this.log.error('framing', 'line over the limit; closing the connection');
    return invalidReply(quote);
  }
}

/** Echo mode: every line comes back unchanged, framed like the herd's. */
export class Echo {
  constructor(stats, log) {
    this.stats = stats;
    this.log = log;
  }

  handle(line) {
    this.stats.echo++;
    return line + '\n';
  }

  oversized(quote) {
    this.stats.oversized++;
    this.log.error('framing', 'line over the limit; closing the connection');
    return invalidReply(quote);
  }
}
