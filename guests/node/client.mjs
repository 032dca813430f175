// One client connection: bytes in, lines handled in the order they came, replies out in that
// order, and the back-pressure around them (herd-core policy/output.rs, `OutputBuffer`).
//
//   'data' ─► input (bounded by --max-line) ─► each complete line: service.handle ─┬─ reply: queued
//                                                                                 └─ WHATSAT: a slot,
//                                                        filled when the places callback runs
//   replies leave in request order ─► gathered ─► one socket.write per read (or per --flush-at)
//
//   reading stops (socket.pause) while --pause-output bytes are owed or --max-in-flight requests
//   are unanswered, and goes on when a write's callback or a WHATSAT's answer brings both below;
//   a client owed more than --max-output while the kernel takes nothing, or that takes nothing
//   for --write-stall, is disconnected.
//
// "Owed" is what Node holds for the socket (`writableLength`: written, not yet taken by the
// kernel) plus the replies gathered and not yet written. After `socket.write` returns, Node has
// already tried the kernel once: bytes still held mean the socket is full, which starts the stall
// clock; each write's callback (the kernel took that write) is progress.

import { rustDuration } from './log.mjs';
import { errorPlaces, trimPlaces, UpstreamError, whatsatReply } from './places.mjs';
import { newLink, PlacesLookup, wallNow } from './protocol.mjs';

/** How many bytes of an oversized line are quoted back. */
const OVERSIZED_QUOTE = 64;
const NON_ASCII = /[\u0080-\uffff]/;

/**
 * The reply to a WHATSAT once the places backend answered or failed (herd-core
 * `Service::complete`): a failure still gets the AT line and a JSON body in the API's error shape.
 */
function complete(server, lookup, err, response) {
  let json;
  try {
    if (err) throw err;
    if (response.status !== 200) throw UpstreamError.status(response.status);
    json = trimPlaces(response.body, lookup.bound);
    server.stats.upstream_ok++;
  } catch (e) {
    if (!(e instanceof UpstreamError)) throw e;
    server.stats.upstream_errors++;
    server.log.error('places', e.message);
    json = errorPlaces(e);
  }
  // The JSON is text; replies are bytes (latin1 strings).
  if (NON_ASCII.test(json)) json = Buffer.from(json, 'utf8').toString('latin1');
  const reply = whatsatReply(lookup.atLine, json);
  server.log.output(reply);
  return reply;
}

export class Connection {
  /** @param server { service, places: PlacesClient|null, limits, stats, log } */
  constructor(socket, server) {
    this.socket = socket;
    this.server = server;
    this.limits = server.limits;
    this.link = newLink();
    /** Bytes read and not yet handled (latin1), and how far they were searched for a newline. */
    this.input = '';
    this.scanned = 0;
    /** Replies owed in request order, from `first`: strings, or slots a WHATSAT's answer fills. */
    this.slots = [];
    this.first = 0;
    /** Replies released in order and not yet written. */
    this.out = [];
    this.outBytes = 0;
    this.paused = false;
    /** No more lines will be handled: the client ended its input, or sent an oversized line. */
    this.ended = false;
    this.closed = false;
    this.stalledSince = null;
    this.stallTimer = null;
    this.onWritten = this.onWritten.bind(this);
    this.onStall = this.onStall.bind(this);

    socket.setNoDelay(true);
    socket.on('data', (chunk) => this.onData(chunk));
    socket.on('end', () => this.onEnd());
    socket.on('error', () => {}); // a reset or a failed write: 'close' follows
    socket.on('close', () => this.onClose());
  }

  /** Bytes owed to the client: held by Node for the socket, or gathered here. */
  owed() {
    return this.socket.writableLength + this.outBytes;
  }

  /** Requests read whose replies have not been released yet. */
  inFlight() {
    return this.slots.length - this.first;
  }

  mayRead() {
    return !this.ended && this.owed() < this.limits.pauseOutput && this.inFlight() < this.limits.maxInFlight;
  }

  onData(chunk) {
    if (this.ended) return;
    this.input += chunk.toString('latin1');
    this.handleInput();
  }

  /** Handles every complete line, in order, while reading is allowed; then writes the replies. */
  handleInput() {
    const { service } = this.server;
    const { maxLine, flushAt } = this.limits;
    const now = wallNow(); // the time every line of one read is handled at
    const input = this.input;
    let start = 0;
    while (this.mayRead()) {
      const newline = input.indexOf('\n', Math.max(start, this.scanned));
      const end = newline < 0 ? input.length : newline;
      if (end - start > maxLine) {
        // Answered, then the connection is closed: a client that sends 64 KiB without a newline
        // is broken or hostile, and its next command's start would be a guess.
        this.answer(service.oversized(input.slice(start, start + OVERSIZED_QUOTE)));
        this.ended = true;
        break;
      }
      if (newline < 0) {
        this.scanned = input.length;
        break;
      }
      const line = input.slice(start, newline);
      start = newline + 1;
      this.answer(service.handle(line, this.link, now));
      if (this.outBytes >= flushAt) this.flush();
    }
    this.input = this.ended ? '' : start === 0 ? input : input.slice(start);
    this.scanned = Math.max(0, this.scanned - start);
    this.flush();
    if (this.ended) this.closeWhenDone();
    else this.reading(this.mayRead());
  }

  /** Takes one line's answer: a reply, nothing (`null`), or a WHATSAT's lookup. */
  answer(reply) {
    if (reply instanceof PlacesLookup) {
      const slot = { reply: null };
      this.slots.push(slot);
      const done = (err, response) => {
        slot.reply = complete(this.server, reply, err, response);
        if (this.closed) return;
        this.release();
        this.flush();
        this.resume();
      };
      if (this.server.places === null) process.nextTick(done, UpstreamError.notConfigured());
      else this.server.places.get(reply, done);
    } else if (this.inFlight() > 0) {
      this.slots.push(reply ?? ''); // behind a WHATSAT: waits for its turn
    } else if (reply !== null) {
      this.gather(reply);
    }
  }

  /** Moves the replies whose turn has come to the output. */
  release() {
    while (this.first < this.slots.length) {
      let reply = this.slots[this.first];
      if (typeof reply !== 'string') {
        if (reply.reply === null) break;
        reply = reply.reply;
      }
      this.gather(reply);
      this.first++;
    }
    if (this.first === this.slots.length) {
      this.slots = [];
      this.first = 0;
    }
  }

  gather(reply) {
    if (reply.length === 0) return;
    this.out.push(reply);
    this.outBytes += reply.length;
  }

  /** Writes what was gathered, in one write. */
  flush() {
    if (this.outBytes === 0 || this.closed) return;
    const data = this.out.length === 1 ? this.out[0] : this.out.join('');
    this.out = [];
    this.outBytes = 0;
    this.socket.write(data, 'latin1', this.onWritten);
    if (this.socket.writableLength > 0) this.blocked();
  }

  /** The kernel did not take everything: start the stall clock; too much owed closes the client. */
  blocked() {
    if (this.stalledSince === null) {
      this.stalledSince = performance.now();
      if (this.stallTimer === null) this.stallTimer = setTimeout(this.onStall, this.limits.writeStall);
    }
    const owed = this.owed();
    if (owed > this.limits.maxOutput) this.close(`client is not reading its replies (${owed} bytes owed); closing`);
  }

  /** A write was taken whole by the kernel: progress. */
  onWritten(err) {
    if (err || this.closed) return;
    if (this.socket.writableLength === 0) this.stalledSince = null;
    else if (this.stalledSince !== null) this.stalledSince = performance.now();
    this.resume();
  }

  onStall() {
    this.stallTimer = null;
    if (this.closed || this.stalledSince === null) return;
    const due = this.stalledSince + this.limits.writeStall;
    const now = performance.now();
    if (now < due) {
      this.stallTimer = setTimeout(this.onStall, due - now);
      return;
    }
    this.close(`client took none of its replies for ${rustDuration(this.limits.writeStall)}; closing`);
  }

  /** Output went out or an answer came in: read (and handle what is held) again if allowed. */
  resume() {
    if (this.closed) return;
    if (this.ended) return this.closeWhenDone();
    if (!this.mayRead()) return;
    if (this.input.length > this.scanned) this.handleInput();
    else this.reading(true);
  }

  reading(on) {
    if (on !== this.paused) return;
    this.paused = !on;
    if (on) this.socket.resume();
    else this.socket.pause();
  }

  /** The client ended its input: a fragment without its newline is not a command. */
  onEnd() {
    this.ended = true;
    this.input = '';
    this.closeWhenDone();
  }

  /**
   * Once every reply is written: our end of stream, then the socket closes (without waiting for
   * the client's: after an oversized line it may still be sending, and nothing more is read).
   */
  closeWhenDone() {
    if (this.closed || this.inFlight() > 0 || this.owed() > 0) return;
    this.closed = true;
    this.socket.end(() => this.socket.destroy());
  }

  /** A policy close (overflow, stall): logged, and the connection dropped. */
  close(why) {
    if (this.closed) return;
    this.closed = true;
    this.server.log.error('write', why);
    this.socket.destroy();
  }

  onClose() {
    this.closed = true;
    clearTimeout(this.stallTimer);
  }
}
