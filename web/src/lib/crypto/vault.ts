/**
 * The seed at rest: encrypted under a passphrase with PBKDF2-SHA256
 * (600,000 iterations, WebCrypto) and AES-256-GCM. The record says how it
 * was made, so a later version can raise the cost without losing old ones.
 */
import { fromB64, randomBytes, toB64, utf8 } from './bytes';

export const PBKDF2_ITERATIONS = 600_000;

export interface SealedSeed {
  kdf: 'pbkdf2-sha256';
  iterations: number;
  salt: string;
  cipher: 'aes-256-gcm';
  iv: string;
  ct: string;
}

async function deriveKey(passphrase: string, salt: Uint8Array, iterations: number): Promise<CryptoKey> {
  const base = await crypto.subtle.importKey('raw', utf8(passphrase) as BufferSource, 'PBKDF2', false, [
    'deriveKey',
  ]);
  return crypto.subtle.deriveKey(
    { name: 'PBKDF2', hash: 'SHA-256', salt: salt as BufferSource, iterations },
    base,
    { name: 'AES-GCM', length: 256 },
    false,
    ['encrypt', 'decrypt'],
  );
}

export async function sealSeed(
  seed: Uint8Array,
  passphrase: string,
  iterations = PBKDF2_ITERATIONS,
): Promise<SealedSeed> {
  const salt = randomBytes(16);
  const iv = randomBytes(12);
  const key = await deriveKey(passphrase, salt, iterations);
  const ct = new Uint8Array(
    await crypto.subtle.encrypt({ name: 'AES-GCM', iv: iv as BufferSource }, key, seed as BufferSource),
  );
  return { kdf: 'pbkdf2-sha256', iterations, salt: toB64(salt), cipher: 'aes-256-gcm', iv: toB64(iv), ct: toB64(ct) };
}

export class WrongPassphrase extends Error {
  constructor() {
    super('wrong passphrase');
  }
}

export async function openSeed(sealed: SealedSeed, passphrase: string): Promise<Uint8Array> {
  const key = await deriveKey(passphrase, fromB64(sealed.salt), sealed.iterations);
  try {
    const plain = await crypto.subtle.decrypt(
      { name: 'AES-GCM', iv: fromB64(sealed.iv) as BufferSource },
      key,
      fromB64(sealed.ct) as BufferSource,
    );
    return new Uint8Array(plain);
  } catch {
    throw new WrongPassphrase();
  }
}
