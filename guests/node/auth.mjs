// Herd membership (herd-core auth.rs): the herd key, and the link handshake that proves it.
//
//   opener → acceptor   PEER Alford <16-byte nonce, hex>
//   acceptor → opener   HERD Hamilton <16-byte nonce, hex> <proof("accept"), hex>
//   opener → acceptor   AUTH <proof("open"), hex>
//
//   proof(role) = HMAC-SHA256(key, "herdbench link v1" ‖ role ‖ len ‖ opener ‖ len ‖ acceptor
//                                  ‖ opener's nonce ‖ acceptor's nonce)
//
// Names are length-prefixed with one byte; proofs are compared in constant time.

import { isUtf8 } from 'node:buffer';
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';

const CONTEXT = Buffer.from('herdbench link v1');
const MIN_KEY_BYTES = 16;
const HEX = /^(?:[0-9a-fA-F]{2})+$/;

/** Reads a herd key file (hex, surrounding white space ignored); throws with what is wrong. */
export function readKey(path) {
  const text = readFileSync(path, 'latin1').trim();
  if (!HEX.test(text)) {
    throw new Error('the herd key file must hold only hex digits (e.g. 64 of them, from `harness keygen`)');
  }
  const key = Buffer.from(text, 'hex');
  if (key.length < MIN_KEY_BYTES) {
    throw new Error(`the herd key is ${key.length} bytes; at least ${MIN_KEY_BYTES} (32 hex digits) are needed`);
  }
  return key;
}

/** Exactly `bytes` bytes of hex (either case), or `null`. */
export function decodeHex(text, bytes) {
  return text.length === 2 * bytes && HEX.test(text) ? Buffer.from(text, 'hex') : null;
}

/** 16 fresh bytes from the operating system's generator. */
export function newNonce() {
  return randomBytes(16);
}

/**
 * The proof that whoever sends it holds `key`, for one handshake.
 * @param role    'open' (the opener's AUTH) or 'accept' (the acceptor's HERD)
 * @param names   { opener, acceptor }: Buffers of the names' UTF-8 bytes
 * @param nonces  { opener, acceptor }: 16-byte Buffers
 */
export function proof(key, role, names, nonces) {
  const mac = createHmac('sha256', key).update(CONTEXT).update(role);
  for (const name of [names.opener, names.acceptor]) {
    mac.update(Buffer.of(Math.min(name.length, 255))).update(name);
  }
  return mac.update(nonces.opener).update(nonces.acceptor).digest();
}

/** Whether `given` is `key`'s proof for the handshake (constant-time comparison). */
export function verifyProof(key, role, names, nonces, given) {
  return timingSafeEqual(proof(key, role, names, nonces), given);
}

/** The opener's first line (a latin1 string, like every line here). */
export function helloLine(opener, nonce) {
  return nonce === null ? `PEER ${opener}\n` : `PEER ${opener} ${nonce.toString('hex')}\n`;
}

/** The acceptor's answer to a keyed PEER. */
export function acceptLine(acceptor, nonce, mac) {
  return `HERD ${acceptor} ${nonce.toString('hex')} ${mac.toString('hex')}\n`;
}

/** The opener's proof. */
export function authLine(mac) {
  return `AUTH ${mac.toString('hex')}\n`;
}

/** A `HERD <name> <nonce> <proof>` answer (no newline): `{ name, nonce, proof }` or `null`. */
export function parseAccept(line) {
  if (!isUtf8(Buffer.from(line, 'latin1'))) return null;
  let end = line.length;
  while (end > 0 && line.charCodeAt(end - 1) === 13) end--;
  const f = line.slice(0, end).split(' ');
  if (f.length !== 4 || f[0] !== 'HERD') return null;
  const nonce = decodeHex(f[2], 16);
  const mac = decodeHex(f[3], 32);
  return nonce && mac && { name: f[1], nonce, proof: mac };
}
