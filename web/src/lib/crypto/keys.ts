/**
 * Ed25519 primary keys, their signatures, and the X25519 keys derived from
 * them (the libsodium Montgomery conversion).
 *
 * A primary is written `ed25519:<64 lowercase hex>`; a signature is 128
 * lowercase hex characters of raw Ed25519 over the signed bytes (for JSON,
 * over its JCS bytes: alg `ed25519-sha512-jcs`).
 */
import { ed25519 } from '@noble/curves/ed25519.js';
import { fromHex, randomBytes, toHex } from './bytes';
import { jcs } from './jcs';

export const SIGNATURE_ALG = 'ed25519-sha512-jcs';
const PRIMARY_RE = /^ed25519:[0-9a-f]{64}$/;
const SIG_RE = /^[0-9a-f]{128}$/;

export function isPrimary(text: unknown): text is string {
  return typeof text === 'string' && PRIMARY_RE.test(text);
}

export function parsePrimary(text: string): Uint8Array {
  if (!isPrimary(text)) throw new Error('expected ed25519:<64 lowercase hex>');
  return fromHex(text.slice(8));
}

export function formatPrimary(publicKey: Uint8Array): string {
  if (publicKey.length !== 32) throw new Error('an ed25519 public key is 32 bytes');
  return 'ed25519:' + toHex(publicKey);
}

/** An Ed25519 key pair held by this client; the 32-byte seed is the secret. */
export class KeyPair {
  readonly seed: Uint8Array;
  readonly publicKey: Uint8Array;
  readonly primary: string;

  constructor(seed: Uint8Array) {
    if (seed.length !== 32) throw new Error('an ed25519 seed is 32 bytes');
    this.seed = Uint8Array.from(seed);
    this.publicKey = ed25519.getPublicKey(this.seed);
    this.primary = formatPrimary(this.publicKey);
  }

  static generate(): KeyPair {
    return new KeyPair(randomBytes(32));
  }

  get publicHex(): string {
    return toHex(this.publicKey);
  }

  sign(message: Uint8Array): string {
    return toHex(ed25519.sign(message, this.seed));
  }

  signJcs(value: unknown): string {
    return this.sign(jcs(value));
  }

  /** X25519 private key: clamped first half of SHA-512(seed). */
  x25519Private(): Uint8Array {
    return ed25519.utils.toMontgomerySecret(this.seed);
  }

  x25519Public(): Uint8Array {
    return ed25519.utils.toMontgomery(this.publicKey);
  }
}

export function verifyBytes(primary: string, message: Uint8Array, signature: unknown): boolean {
  if (typeof signature !== 'string' || !SIG_RE.test(signature) || !isPrimary(primary)) return false;
  try {
    return ed25519.verify(fromHex(signature), message, parsePrimary(primary), { zip215: false });
  } catch {
    return false;
  }
}

export function verifyJcs(primary: string, value: unknown, signature: unknown): boolean {
  let message: Uint8Array;
  try {
    message = jcs(value);
  } catch {
    return false;
  }
  return verifyBytes(primary, message, signature);
}

export function x25519PublicOf(primary: string): Uint8Array {
  return ed25519.utils.toMontgomery(parsePrimary(primary));
}
