// Flood links (herd-core policy/link.rs, `FloodLink`): one outbound connection per neighbour,
// which this server opens, authenticates and sends its updates on.
//
//          retry due (an update, or the idle timer)        'connect'          answer proves
//   down ───────────────────────────────────────► connecting ─────────► handshaking ───────► up
//    ▲  updates while down, no retry due: dropped     │ error,              │ wrong, late,     │ 'end', 'error', any
//    └──────────────────────────────────────── down ◄─┴─ timed out ─────────┴─ malformed ◄─────┘ byte read, or no
//                                                                                               progress for a stall
//
// The queue toward a neighbour is bounded in bytes (--link-queue-bytes), counting both the lines
// waiting here and what was handed to `socket.write` and not yet taken by the kernel (the write's
// callback has not run): a hung neighbour costs at most that much, and updates past it are
// dropped and counted, the episode logged once when it starts and once when it ends. Updates that
// arrive while connecting or handshaking wait behind the hello and go once the link is up; a link
// that goes down loses what it held (counted). Old updates are never replayed.
//
// Writes are batched: updates queued while handling one turn of the event loop go out in one
// `socket.write` from a `setImmediate`, so a burst of IAMATs costs one write per link, not one each.

import net from 'node:net';

import { authLine, helloLine, newNonce, parseAccept, proof, verifyProof } from './auth.mjs';
import { ioMessage, rustDuration } from './log.mjs';
import { wireName } from './protocol.mjs';

const DOWN = 'down';
const CONNECTING = 'connecting';
const HANDSHAKING = 'handshaking';
const UP = 'up';

/** The longest handshake answer read (a real one is 136 bytes). */
const MAX_ANSWER = 256;

export class FloodLink {
  /**
   * @param me, peer  this server's and the neighbour's names
   * @param address   { host, port } of the neighbour
   * @param key       the herd key (Buffer), or null in an insecure herd
   */
  constructor({ me, peer, address, key, limits, stats, log }) {
    this.me = wireName(me);
    this.peer = peer;
    this.peerWire = wireName(peer);
    this.names = { opener: Buffer.from(me, 'utf8'), acceptor: Buffer.from(peer, 'utf8') };
    this.address = address;
    this.key = key;
    this.retry = limits.linkRetry;
    this.connectTimeout = limits.linkConnectTimeout;
    this.queueBytes = limits.linkQueueBytes;
    this.writeStall = limits.linkWriteStall;
    this.stats = stats;
    this.log = log;

    this.state = DOWN;
    this.socket = null;
    this.nonce = null;
    /** The neighbour's answer so far, while handshaking. */
    this.answer = '';
    // The first idle retry is one interval after start: the herd's members start together.
    this.created = performance.now();
    this.lastAttempt = null;
    /** When the socket last took bytes, or when bytes became owed to an idle link. */
    this.lastProgress = this.created;
    /** Lines not yet written (the hello and AUTH lines first, then updates). */
    this.pending = [];
    this.pendingBytes = 0;
    this.pendingUpdates = 0;
    /** Written, not yet taken by the kernel. */
    this.inFlightBytes = 0;
    this.inFlightUpdates = 0;
    /** Updates dropped in the current episode (null: not dropping). */
    this.dropping = null;

    this.flushQueued = false;
    this.flush = this.flush.bind(this);
    this.timer = null;
    this.timerDue = Infinity;
    this.onTimer = this.onTimer.bind(this);
    this.armTimer();
  }

  /** Bytes owed to the neighbour: queued here or written and not yet taken by the kernel. */
  queuedBytes() {
    return this.pendingBytes + this.inFlightBytes;
  }

  /** Gives the link one update line (newline included). */
  send(line) {
    const now = performance.now();
    if (this.state === DOWN) {
      if (this.lastAttempt !== null && now < this.lastAttempt + this.retry) {
        return this.drop(1, 'neighbour down');
      }
      this.startAttempt(now); // connect on demand; the update waits behind the hello
    }
    if (this.queuedBytes() + line.length > this.queueBytes) return this.drop(1, 'queue full');
    if (this.dropping !== null) {
      this.log.event({ event: 'floods_resumed', peer: this.peer, dropped: this.dropping });
      this.dropping = null;
    }
    if (this.queuedBytes() === 0) this.lastProgress = now;
    this.pending.push(line);
    this.pendingBytes += line.length;
    this.pendingUpdates++;
    if (this.state === UP && !this.flushQueued) {
      this.flushQueued = true;
      setImmediate(this.flush);
    }
  }

  startAttempt(now) {
    this.state = CONNECTING;
    this.lastAttempt = now;
    this.nonce = this.key === null ? null : newNonce();
    const hello = helloLine(this.me, this.nonce);
    this.pending = [hello];
    this.pendingBytes = hello.length;
    this.pendingUpdates = 0;
    this.answer = '';
    const socket = net.connect({ host: this.address.host, port: this.address.port, noDelay: true });
    this.socket = socket;
    // Every handler first checks that its socket is still the link's: a late event of an attempt
    // given up on changes nothing.
    socket.on('connect', () => socket === this.socket && this.onConnected());
    socket.on('data', (chunk) => socket === this.socket && this.onData(chunk));
    socket.on('end', () => socket === this.socket && this.onClosed('closed by peer'));
    socket.on('error', (err) => socket === this.socket && this.onClosed(ioMessage(err)));
    socket.on('close', () => socket === this.socket && this.onClosed('connection closed'));
    this.armTimer();
  }

  /** Connected: the hello goes. An insecure link is up at once; a keyed one awaits the answer. */
  onConnected() {
    if (this.state !== CONNECTING) return;
    this.lastProgress = performance.now();
    if (this.key === null) return this.goUp();
    this.state = HANDSHAKING;
    const hello = this.pending.shift();
    this.pendingBytes -= hello.length;
    this.write(hello, 0);
  }

  goUp() {
    this.state = UP;
    this.log.event({ event: 'link_up', peer: this.peer, direction: 'outbound' });
    this.flush();
  }

  /** Bytes from the neighbour: its answer while handshaking; afterwards, a sign it is gone. */
  onData(chunk) {
    if (this.state === HANDSHAKING) return this.onAnswer(chunk.toString('latin1'));
    this.onClosed('peer sent data on a flood link');
  }

  /** Checks the answer once its line is complete; a proof that holds sends ours, then the updates. */
  onAnswer(bytes) {
    const newline = bytes.indexOf('\n');
    this.answer += newline < 0 ? bytes : bytes.slice(0, newline);
    if (this.answer.length > MAX_ANSWER) return this.refuse('handshake answer too long');
    if (newline < 0) return; // the line is not complete yet
    if (newline + 1 < bytes.length) return this.refuse('peer sent data after its handshake answer');
    const accept = parseAccept(this.answer);
    this.answer = '';
    if (accept === null) return this.refuse('malformed handshake answer');
    if (accept.name !== this.peerWire) return this.refuse('the answer names another server');
    const nonces = { opener: this.nonce, acceptor: accept.nonce };
    if (!verifyProof(this.key, 'accept', this.names, nonces, accept.proof)) {
      return this.refuse("the answer's proof does not match the herd key");
    }
    const auth = authLine(proof(this.key, 'open', this.names, nonces));
    this.pending.unshift(auth);
    this.pendingBytes += auth.length;
    this.goUp();
  }

  /** The handshake failed: counted, logged, and the link goes down to retry later. */
  refuse(reason) {
    this.stats.links_refused++;
    this.log.event({ event: 'link_refused', peer: this.peer, direction: 'outbound', reason });
    this.goDown();
  }

  /** The connection ended (or failed to start); what was queued is lost. */
  onClosed(reason) {
    if (this.state === DOWN) return;
    const wasUp = this.state === UP;
    this.goDown();
    if (wasUp) this.log.event({ event: 'link_down', peer: this.peer, reason });
  }

  goDown() {
    const lost = this.pendingUpdates + this.inFlightUpdates;
    const socket = this.socket;
    this.socket = null;
    socket?.destroy();
    this.state = DOWN;
    this.pending = [];
    this.pendingBytes = this.pendingUpdates = 0;
    this.inFlightBytes = this.inFlightUpdates = 0;
    this.answer = '';
    if (lost > 0) this.drop(lost, 'link lost');
    this.armTimer();
  }

  drop(n, reason) {
    this.stats.floods_dropped += n;
    if (this.dropping === null) {
      this.dropping = n;
      this.log.event({ event: 'floods_dropping', peer: this.peer, reason });
    } else {
      this.dropping += n;
    }
  }

  /** Writes everything queued (once up), in one write. */
  flush() {
    this.flushQueued = false;
    if (this.state !== UP || this.pending.length === 0) return;
    const data = this.pending.length === 1 ? this.pending[0] : this.pending.join('');
    const updates = this.pendingUpdates;
    this.pending = [];
    this.pendingBytes = this.pendingUpdates = 0;
    this.write(data, updates);
  }

  /** Hands `data` to the socket; its callback says when the kernel took all of it. */
  write(data, updates) {
    const socket = this.socket;
    const bytes = data.length;
    this.inFlightBytes += bytes;
    this.inFlightUpdates += updates;
    socket.write(data, 'latin1', (err) => {
      if (err || socket !== this.socket) return; // the link went down and counted these as lost
      this.inFlightBytes -= bytes;
      this.inFlightUpdates -= updates;
      this.stats.floods_out += updates;
      this.lastProgress = performance.now();
    });
    this.armTimer();
  }

  /** The next deadline: the retry while down, the attempt's end, or the stall while bytes are owed. */
  pollTimeout() {
    switch (this.state) {
      case DOWN:
        return (this.lastAttempt ?? this.created) + this.retry;
      case CONNECTING:
      case HANDSHAKING:
        return this.lastAttempt + this.connectTimeout;
      default:
        return this.queuedBytes() > 0 ? this.lastProgress + this.writeStall : null;
    }
  }

  /** One timer per link, moved only earlier; when it fires it acts on what is due and re-arms. */
  armTimer() {
    const due = this.pollTimeout();
    if (due === null || (this.timer !== null && this.timerDue <= due)) return;
    clearTimeout(this.timer);
    this.timerDue = due;
    this.timer = setTimeout(this.onTimer, Math.max(1, due - performance.now()));
  }

  onTimer() {
    this.timer = null;
    this.timerDue = Infinity;
    const now = performance.now();
    const due = this.pollTimeout();
    if (due !== null && now >= due) {
      if (this.state === DOWN) this.startAttempt(now);
      else if (this.state === UP) this.onClosed(`neighbour took no bytes for ${rustDuration(this.writeStall)}`);
      else this.goDown(); // a connect or handshake that took too long: not a refusal
    }
    this.armTimer();
  }
}
