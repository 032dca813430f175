// The event log, the stats file, and Rust's spelling of the few things herd-core prints.
//
// The log (--log) is one JSON object a line in herd-core's `Event` shape, stamped and named as
// `harness serve` does it: {"ts": RFC 3339 with µs, "server": …, "event": …, fields…}. Logging
// never blocks the request path: events are queued (at most 65,536; more are dropped, as the
// harness's sink does) and written every 200 ms by an asynchronous `fs.write`, which runs on
// libuv's thread pool; shutdown writes what is left synchronously.

import fs from 'node:fs';
import os from 'node:os';

import { lossy, wallNow } from './protocol.mjs';

const QUEUE_MAX = 65536;
const FLUSH_EVERY_MS = 200;

/** `2024-05-01T12:00:00.123456Z` (chrono's `to_rfc3339_opts(Micros, true)`). */
function rfc3339(ns) {
  const micros = String((ns / 1000n) % 1000n).padStart(3, '0');
  return `${new Date(Number(ns / 1_000_000n)).toISOString().slice(0, 23)}${micros}Z`;
}

export class EventLog {
  /** A log to `path` (appended to), or one that keeps nothing when `path` is null. */
  constructor(path, server, logIo) {
    this.fd = path ? fs.openSync(path, 'a') : null;
    this.server = server;
    this.logIo = logIo && this.fd !== null;
    /** [time in ns, event] pairs, serialised when written. */
    this.queue = [];
    this.dropped = 0;
    this.writing = null;
    if (this.fd !== null) setInterval(() => this.flush(), FLUSH_EVERY_MS).unref();
  }

  event(event) {
    if (this.fd === null) return;
    if (this.queue.length >= QUEUE_MAX) {
      this.dropped++;
      return;
    }
    this.queue.push([wallNow(), event]);
  }

  error(context, message) {
    this.event({ event: 'error', context, message: String(message) });
  }

  /** An input line (a latin1 string), with --log-io. */
  input(line) {
    if (this.logIo) this.event({ event: 'input', line: lossy(line) });
  }

  /** A reply (a latin1 string), with --log-io. */
  output(text) {
    if (this.logIo && text.length > 0) this.event({ event: 'output', text: lossy(text) });
  }

  /** The queued events as the file's text. */
  take() {
    const lines = this.queue.map(([ns, e]) => JSON.stringify({ ts: rfc3339(ns), server: this.server, ...e }));
    this.queue = [];
    return lines.join('\n') + '\n';
  }

  flush() {
    if (this.writing !== null || this.queue.length === 0) return;
    const text = this.take();
    this.writing = new Promise((resolve) => fs.write(this.fd, text, () => resolve()));
    this.writing.then(() => (this.writing = null));
  }

  /** At shutdown: waits (at most a second) for a write under way, then writes the rest. */
  async close() {
    if (this.fd === null) return;
    if (this.writing !== null) await Promise.race([this.writing, new Promise((r) => setTimeout(r, 1000))]);
    if (this.queue.length > 0) fs.writeSync(this.fd, this.take());
  }
}

/** Writes the counters as the harness reads them, through a temporary file renamed over `path`. */
export function writeStats(path, stats) {
  const text = JSON.stringify({ counters: stats, extra: {} }, null, 2);
  const temporary = `${path}.tmp-${process.pid}`;
  fs.writeFileSync(temporary, text);
  fs.renameSync(temporary, path);
}

// glibc's strerror texts, as Rust's `io::Error` shows an OS error: "Connection refused (os error 111)".
const STRERROR = {
  ECONNREFUSED: 'Connection refused',
  ECONNRESET: 'Connection reset by peer',
  ECONNABORTED: 'Software caused connection abort',
  EPIPE: 'Broken pipe',
  ETIMEDOUT: 'Connection timed out',
  EHOSTUNREACH: 'No route to host',
  ENETUNREACH: 'Network is unreachable',
  EADDRINUSE: 'Address already in use',
  EADDRNOTAVAIL: 'Cannot assign requested address',
  EACCES: 'Permission denied',
  EMFILE: 'Too many open files',
  ENFILE: 'Too many open files in system',
};

/** A Node error as Rust's `io::Error` displays it, where the error is the operating system's. */
export function ioMessage(err) {
  const text = STRERROR[err.code];
  const errno = os.constants.errno[err.code];
  return text !== undefined && errno !== undefined ? `${text} (os error ${errno})` : err.message;
}

/** A duration in ms as Rust's `Debug` for `Duration` prints it: `5s`, `1.5s`, `500ms`. */
export function rustDuration(ms) {
  const trim = (x) => String(Number(x.toFixed(9)));
  if (ms >= 1000) return `${trim(ms / 1000)}s`;
  if (ms >= 1) return `${trim(ms)}ms`;
  if (ms >= 0.001) return `${trim(ms * 1000)}µs`;
  return `${Math.round(ms * 1e6)}ns`;
}
