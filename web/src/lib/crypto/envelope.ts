/**
 * The end-to-end message envelope. The server relays it and can read none
 * of it:
 *
 *   shared = X25519(sender x25519 private, recipient x25519 public)
 *   okm    = HKDF-SHA256(shared, salt, "kez-chat-msg-v1", 44)
 *   ct     = ChaCha20-Poly1305(okm[0:32], okm[32:44], plaintext, aad = JCS({v, from, to, ts}))
 *   sig    = Ed25519(sender, JCS(envelope without sig))
 */
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { x25519 } from '@noble/curves/ed25519.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { fromB64url, fromUtf8, randomBytes, toB64url, utf8 } from './bytes';
import { jcs } from './jcs';
import { StrictJsonError, strictParse } from './strictjson';
import { isPrimary, verifyJcs, x25519PublicOf, type KeyPair } from './keys';
import { nowRfc3339 } from './time';

export const INFO = 'kez-chat-msg-v1';

export interface Envelope {
  v: 1;
  from: string;
  to: string;
  ts: string;
  salt: string;
  ct: string;
  sig: string;
}

export class EnvelopeError extends Error {
  /** `malformed`, `not_for_us`, `bad_signature`, `sender_mismatch`, `decrypt_failed` or `bad_plaintext` (as the Python client) */
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

function keyAndNonce(shared: Uint8Array, salt: Uint8Array): [Uint8Array, Uint8Array] {
  const okm = hkdf(sha256, shared, salt, utf8(INFO), 44);
  return [okm.slice(0, 32), okm.slice(32, 44)];
}

function aad(v: number, from: string, to: string, ts: string): Uint8Array {
  return jcs({ v, from, to, ts });
}

/** Seal bytes for `recipient`; `salt` and `ts` are fixed only by test vectors. */
export function sealBytes(
  sender: KeyPair,
  recipient: string,
  plaintext: Uint8Array,
  options: { salt?: Uint8Array; ts?: string } = {},
): Envelope {
  const salt = options.salt ?? randomBytes(16);
  const ts = options.ts ?? nowRfc3339();
  const shared = x25519.getSharedSecret(sender.x25519Private(), x25519PublicOf(recipient));
  const [key, nonce] = keyAndNonce(shared, salt);
  const ct = chacha20poly1305(key, nonce, aad(1, sender.primary, recipient, ts)).encrypt(plaintext);
  const unsigned = { v: 1 as const, from: sender.primary, to: recipient, ts, salt: toB64url(salt), ct: toB64url(ct) };
  return { ...unsigned, sig: sender.signJcs(unsigned) };
}

export function seal(
  sender: KeyPair,
  recipient: string,
  plaintext: object,
  options: { salt?: Uint8Array; ts?: string } = {},
): Envelope {
  return sealBytes(sender, recipient, jcs(plaintext), options);
}

const FIELDS = ['v', 'from', 'to', 'ts', 'salt', 'ct', 'sig'];

/** Check the shape of something claiming to be an envelope. */
export function checkShape(value: unknown): Envelope {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new EnvelopeError('malformed', 'the envelope is not a JSON object');
  }
  const e = value as Record<string, unknown>;
  const keys = Object.keys(e).sort();
  if (keys.join() !== [...FIELDS].sort().join()) {
    throw new EnvelopeError('malformed', 'the envelope does not have exactly v, from, to, ts, salt, ct, sig');
  }
  if (e.v !== 1) throw new EnvelopeError('malformed', `unknown envelope version ${String(e.v)}`);
  for (const k of ['from', 'to']) {
    if (!isPrimary(e[k])) throw new EnvelopeError('malformed', `the envelope's ${k} is not a primary key`);
  }
  for (const k of ['ts', 'salt', 'ct', 'sig']) {
    if (typeof e[k] !== 'string') throw new EnvelopeError('malformed', `the envelope's ${k} is not a string`);
  }
  if (!/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/i.test(e.ts as string)) {
    throw new EnvelopeError('malformed', "the envelope's ts is not an RFC 3339 time");
  }
  try {
    if (fromB64url(e.salt as string).length !== 16) throw new Error('salt');
    fromB64url(e.ct as string);
  } catch {
    throw new EnvelopeError('malformed', 'salt or ct is not base64url (the salt is 16 bytes)');
  }
  return e as unknown as Envelope;
}

/**
 * Verify and decrypt an envelope addressed to `me`. The signature is
 * checked against the envelope's own `from` here; whether that key is the
 * one known for the sender is the caller's check (`expectedSender`).
 */
export function openBytes(me: KeyPair, value: unknown, expectedSender?: string): Uint8Array {
  const e = checkShape(value);
  if (e.to !== me.primary) throw new EnvelopeError('not_for_us', 'the message is addressed to another key');
  const { sig, ...unsigned } = e;
  if (!verifyJcs(e.from, unsigned, sig)) {
    throw new EnvelopeError('bad_signature', 'the signature does not verify, so it may be forged');
  }
  if (expectedSender !== undefined && e.from !== expectedSender) {
    throw new EnvelopeError('sender_mismatch', "the message is signed by a key that is not the sender's");
  }
  const shared = x25519.getSharedSecret(me.x25519Private(), x25519PublicOf(e.from));
  const [key, nonce] = keyAndNonce(shared, fromB64url(e.salt));
  try {
    return chacha20poly1305(key, nonce, aad(e.v, e.from, e.to, e.ts)).decrypt(fromB64url(e.ct));
  } catch {
    throw new EnvelopeError('decrypt_failed', 'the message cannot be decrypted');
  }
}

/**
 * Verify and decrypt an envelope `me` sealed for someone else: the
 * sender's copy the server keeps, read back (on this or another device).
 * It must be from `me` and carry `me`'s valid signature, so a server
 * cannot slip a message into the history as sent; the X25519 secret is
 * symmetric, so `me`'s private key and the recipient's public key give
 * the recipient's secret.
 */
export function openOwnBytes(me: KeyPair, value: unknown): Uint8Array {
  const e = checkShape(value);
  if (e.from !== me.primary) throw new EnvelopeError('not_for_us', 'it was not sent by your key');
  const { sig, ...unsigned } = e;
  if (!verifyJcs(e.from, unsigned, sig)) {
    throw new EnvelopeError('bad_signature', 'the signature does not verify, so it may be forged');
  }
  const shared = x25519.getSharedSecret(me.x25519Private(), x25519PublicOf(e.to));
  const [key, nonce] = keyAndNonce(shared, fromB64url(e.salt));
  try {
    return chacha20poly1305(key, nonce, aad(e.v, e.from, e.to, e.ts)).decrypt(fromB64url(e.ct));
  } catch {
    throw new EnvelopeError('decrypt_failed', 'the message cannot be decrypted');
  }
}

export function open(me: KeyPair, value: unknown, expectedSender?: string): Record<string, unknown> {
  const bytes = openBytes(me, value, expectedSender);
  let plain: unknown;
  try {
    plain = strictParse(fromUtf8(bytes));
  } catch (e) {
    if (e instanceof StrictJsonError) throw new EnvelopeError('bad_plaintext', `the decrypted message is ambiguous JSON (${e.message})`);
    throw new EnvelopeError('bad_plaintext', 'the decrypted message is not JSON');
  }
  if (typeof plain !== 'object' || plain === null || Array.isArray(plain)) {
    throw new EnvelopeError('bad_plaintext', 'the decrypted message is not a JSON object');
  }
  return plain as Record<string, unknown>;
}
