/**
 * The KEZ key as a NATS credential. A NATS user nkey is the same Ed25519
 * public key, written `U…` (base32 of a role byte, the key and a CRC-16);
 * the broker sends a nonce and the client answers with its signature. So
 * the browser logs in to NATS with the key it already holds: the seed
 * never leaves KeyPair, and no second secret exists (SPEC §5).
 */
import { base32nopad } from '@scure/base';
import { fromHex, toB64url, utf8 } from './crypto/bytes';
import type { KeyPair } from './crypto/keys';

/** The nkey role byte of a user key ('U' once base32-encoded). */
const USER_PREFIX = 20 << 3;

/** CRC-16/XMODEM, the checksum nkeys append (little-endian). */
function crc16(bytes: Uint8Array): number {
  let crc = 0;
  for (const byte of bytes) {
    crc ^= byte << 8;
    for (let bit = 0; bit < 8; bit++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc;
}

/** The user nkey (`U…`, 56 characters) of an Ed25519 public key. */
export function userNkey(publicKey: Uint8Array): string {
  if (publicKey.length !== 32) throw new Error('an ed25519 public key is 32 bytes');
  const raw = new Uint8Array(35);
  raw[0] = USER_PREFIX;
  raw.set(publicKey, 1);
  const crc = crc16(raw.subarray(0, 33));
  raw[33] = crc & 0xff;
  raw[34] = crc >> 8;
  return base32nopad.encode(raw);
}

/** What a NATS client sends in CONNECT for nkey auth: the key, and its signature over the nonce (base64url). */
export interface NkeyAuth {
  nkey: string;
  sig: string;
}

/**
 * A nats-core `Authenticator`: called on every (re)connect with the
 * server's fresh nonce.
 */
export function nkeyAuthenticator(key: KeyPair): (nonce?: string) => NkeyAuth {
  const nkey = userNkey(key.publicKey);
  return (nonce?: string) => ({ nkey, sig: nonce ? toB64url(fromHex(key.sign(utf8(nonce)))) : '' });
}
