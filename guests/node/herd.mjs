#!/usr/bin/env node
// herdbench's Node.js guest: one proxy-herd (or echo) server on Node's event loop, with nothing
// but the standard library.
//
// How it works: one thread runs JavaScript, and libuv's event loop (epoll) calls it back. There
// are no hand-offs: a connection's 'data' callback frames its lines and handles every complete one
// at once (store, flood, reply); the replies of one read leave in one write. A WHATSAT sends its
// request on a kept-alive places connection and returns; its callback, later, fills the WHATSAT's
// place in the connection's reply order, so later lines of that client are handled meanwhile and
// their replies wait behind it. Flood links are sockets on the same loop, written once per loop turn.
// Waiting is only ever the loop waiting: for readable sockets, for write completions (the write
// callbacks are the back-pressure signal), for timers (retries, deadlines, stalls).
//
// Layout: herd.mjs (settings, wiring, signals) · client.mjs (a client connection) · protocol.mjs
// (lines, store, the herd's decisions) · auth.mjs (the link handshake) · links.mjs (flood links) ·
// places.mjs (the places client and its JSON) · log.mjs (events, stats).
//
// Settings are `harness serve`'s (guests/CONTRACT.md): run `node herd.mjs --help`.

import fs from 'node:fs';
import net from 'node:net';

import { readKey } from './auth.mjs';
import { Connection } from './client.mjs';
import { EventLog, ioMessage, writeStats } from './log.mjs';
import { FloodLink } from './links.mjs';
import { PlacesClient } from './places.mjs';
import { Echo, Herd, newStats } from './protocol.mjs';

/** How many connections may wait to be accepted: the harness's own listeners use 4096. */
const LISTEN_BACKLOG = 4096;

// ---------------------------------------------------------------------------------------------
// Settings

const USAGE = `usage: node herd.mjs --name NAME --listen IP:PORT [--peer NAME=IP:PORT]... [--places IP:PORT]
       --mode herd|echo (--herd-key FILE | --insecure-herd) [--ttl SECONDS] [--log FILE] [--log-io]
       [--stats FILE] [--samples FILE --sample-every DURATION] [limits: --max-line SIZE, --link-retry
       DURATION, … as \`harness serve --help\` lists them] [--threads N --io-threads N --stack-kib N
       --driver D: accepted, not acted on]`;

const size = (v) => {
  const m = /^(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?$/.exec(v);
  const unit = { B: 1, KiB: 1024, MiB: 1 << 20, GiB: 1 << 30, KB: 1e3, MB: 1e6, GB: 1e9 };
  if (!m) throw new Error(`not a size in bytes: ${v}`);
  return Number(m[1]) * (unit[m[2] ?? 'B'] ?? 1);
};
const duration = (v) => {
  const m = /^(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s)$/.exec(v);
  if (!m) throw new Error(`not a duration (e.g. 500ms): ${v}`);
  return Number(m[1]) * { ns: 1e-6, us: 1e-3, µs: 1e-3, ms: 1, s: 1000 }[m[2]];
};
const count = (v) => {
  if (!/^\d+$/.test(v)) throw new Error(`not a count: ${v}`);
  return Number(v);
};
const text = (v) => v;

/** Every setting: [parser, default]. Limits default to herd-core's `Limits::default()`. */
const SETTINGS = {
  name: [text, 'Alford'],
  listen: [text, '127.0.0.1:0'],
  peer: [text, null], // repeatable
  places: [text, null],
  mode: [text, 'herd'],
  threads: [count, null],
  'io-threads': [count, null],
  'stack-kib': [count, null],
  driver: [text, null],
  log: [text, null],
  stats: [text, null],
  samples: [text, null],
  'sample-every': [duration, 100],
  ttl: [count, 3600],
  'herd-key': [text, null],
  'max-line': [size, 64 * 1024],
  'link-retry': [duration, 100],
  'link-connect-timeout': [duration, 500],
  'link-queue-bytes': [size, 1 << 20],
  'link-write-stall': [duration, 5000],
  'upstream-timeout': [duration, 3000],
  'upstream-idle-max': [count, 256],
  'flush-at': [size, 64 * 1024],
  'pause-output': [size, 256 * 1024],
  'max-output': [size, 4 << 20],
  'write-stall': [duration, 5000],
  'max-in-flight': [count, 64],
  'max-clients': [count, 4_000_000],
  'max-connections': [count, 16_000],
  'accept-backoff': [duration, 10],
  'accept-backoff-max': [duration, 1000],
};
const SWITCHES = new Set(['log-io', 'insecure-herd']);

function usageError(message) {
  process.stderr.write(`herd.mjs: ${message}\n${USAGE}\n`);
  process.exit(2);
}

/** `--flag value` and `--flag=value`, every flag of `harness serve`; anything else exits 2. */
function parseArgs(argv) {
  const o = { peer: [] };
  for (const [name, [, fallback]] of Object.entries(SETTINGS)) if (name !== 'peer') o[name] = fallback;
  for (const name of SWITCHES) o[name] = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '-h' || arg === '--help') {
      process.stdout.write(`${USAGE}\n`);
      process.exit(0);
    }
    const m = /^--([a-z-]+)(?:=(.*))?$/s.exec(arg);
    if (!m) usageError(`unexpected argument ${JSON.stringify(arg)}`);
    const [, name, inline] = m;
    if (SWITCHES.has(name) && inline === undefined) {
      o[name] = true;
      continue;
    }
    if (!(name in SETTINGS)) usageError(`unknown flag --${name}`);
    const value = inline ?? argv[++i];
    if (value === undefined) usageError(`--${name} needs a value`);
    try {
      const parsed = SETTINGS[name][0](value);
      if (name === 'peer') o.peer.push(parsed);
      else o[name] = parsed;
    } catch (e) {
      usageError(`--${name}: ${e.message}`);
    }
  }
  return o;
}

/** `IP:PORT` or `[IPv6]:PORT`. */
function address(flag, v) {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(v);
  if (!m || net.isIP(m[1] ?? m[2]) === 0) usageError(`${flag}: not an IP:PORT address: ${v}`);
  return { host: m[1] ?? m[2], port: Number(m[3]), text: v };
}

function checkName(name) {
  if (name.length === 0 || /\s/.test(name)) {
    usageError(`server name ${JSON.stringify(name)} must be one word without spaces`);
  }
  return name;
}

const o = parseArgs(process.argv.slice(2));
if (o.mode !== 'herd' && o.mode !== 'echo') usageError(`--mode must be herd or echo, not ${o.mode}`);
if (o['herd-key'] !== null && o['insecure-herd']) usageError('--herd-key and --insecure-herd exclude each other');
if (o.mode === 'herd' && o['herd-key'] === null && !o['insecure-herd']) {
  usageError(
    "a herd server needs the herd's key: run `harness keygen herd.key` once and give every member " +
      '`--herd-key herd.key` (or --insecure-herd to accept updates from anyone)',
  );
}
const name = checkName(o.name);
const listen = address('--listen', o.listen);
const peers = o.peer.map((p) => {
  const eq = p.indexOf('=');
  if (eq < 0) usageError(`--peer ${p}: expected NAME=IP:PORT, e.g. --peer Hamilton=127.0.0.1:12001`);
  return { name: checkName(p.slice(0, eq)), address: address('--peer', p.slice(eq + 1)) };
});
const limits = {
  maxLine: o['max-line'],
  linkRetry: o['link-retry'],
  linkConnectTimeout: o['link-connect-timeout'],
  linkQueueBytes: o['link-queue-bytes'],
  linkWriteStall: o['link-write-stall'],
  upstreamTimeout: o['upstream-timeout'],
  upstreamIdleMax: o['upstream-idle-max'],
  flushAt: o['flush-at'],
  pauseOutput: o['pause-output'],
  maxOutput: o['max-output'],
  writeStall: o['write-stall'],
  maxInFlight: o['max-in-flight'],
  maxClients: o['max-clients'],
  maxConnections: o['max-connections'],
};

let key = null;
if (o.mode === 'herd' && o['herd-key'] !== null) {
  try {
    key = readKey(o['herd-key']);
  } catch (e) {
    process.stderr.write(`herd.mjs: --herd-key ${o['herd-key']}: ${e.message}\n`);
    process.exit(2);
  }
}

// ---------------------------------------------------------------------------------------------
// Wiring

const stats = newStats();
const log = new EventLog(o.log, name, o['log-io']);
let service;
let places = null;
if (o.mode === 'herd') {
  const links = peers.map(
    (p) => new FloodLink({ me: name, peer: p.name, address: p.address, key, limits, stats, log }),
  );
  const flood = (line, to) => {
    for (const i of to) links[i].send(line);
  };
  const config = { name, neighbours: peers.map((p) => p.name), ttlSecs: o.ttl, key, maxClients: limits.maxClients };
  service = new Herd(config, stats, log, flood);
  if (o.places !== null) places = new PlacesClient(address('--places', o.places), limits, stats);
} else {
  service = new Echo(stats, log);
}
const shared = { service, places, limits, stats, log };

// allowHalfOpen: a client that ends its input still gets the replies owed to it (WHATSATs whose
// answers are on their way); the connection closes once they are written.
const server = net.createServer({ allowHalfOpen: true });
// The connection cap: Node closes a connection accepted past it at once and says 'drop'.
server.maxConnections = limits.maxConnections;
let refusing = false;
server.on('drop', () => {
  stats.connections_refused++;
  if (!refusing) {
    refusing = true;
    log.event({ event: 'connections_refused', max_connections: limits.maxConnections });
  }
});
server.on('connection', (socket) => {
  refusing = false;
  stats.connections++;
  new Connection(socket, shared);
});
server.on('error', (err) => {
  if (!server.listening) {
    // The launcher looks for Rust's spelling, "Address already in use", to retry on fresh ports.
    process.stderr.write(`herd.mjs: binding ${listen.text}: ${ioMessage(err)}\n`);
    process.exit(1);
  }
  log.error('accept', err.message); // libuv already sheds connections when out of descriptors
});
server.listen({ host: listen.host, port: listen.port, backlog: LISTEN_BACKLOG }, () => {
  const { address: host, port, family } = server.address();
  log.event({ event: 'listening', addr: family === 'IPv6' ? `[${host}]:${port}` : `${host}:${port}` });
});

if (o.samples !== null) {
  // A line every --sample-every: the monotonic clock (CLOCK_MONOTONIC, as the harness's), the
  // resident memory and the dropped floods.
  const fd = fs.openSync(o.samples, 'a');
  const sample = () => {
    const rssKib = Math.floor(process.memoryUsage.rss() / 1024);
    const line = `{"t_ns":${process.hrtime.bigint()},"rss_kib":${rssKib},"floods_dropped":${stats.floods_dropped}}\n`;
    fs.write(fd, line, () => {});
  };
  setInterval(sample, Math.max(1, o['sample-every'])).unref();
}

// ---------------------------------------------------------------------------------------------
// Stopping: counters to --stats, the log flushed, exit 0.

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  log.event({ event: 'stopping' });
  let status = 0;
  if (o.stats !== null) {
    try {
      writeStats(o.stats, stats);
    } catch (e) {
      process.stderr.write(`herd.mjs: writing ${o.stats}: ${e.message}\n`);
      status = 1;
    }
  }
  await log.close();
  process.exit(status);
}
for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP']) process.on(signal, stop);
