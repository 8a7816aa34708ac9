/**
 * libsodium's sealed box (`crypto_box_seal`) to a primary's X25519 key:
 * ephemeral public key || XSalsa20-Poly1305 under HSalsa20(X25519 shared),
 * with nonce BLAKE2b-24(ephemeral public || recipient public). Used for
 * the content keys wrapped in shared-files manifests.
 */
import { hsalsa, xsalsa20poly1305 } from '@noble/ciphers/salsa.js';
import { x25519 } from '@noble/curves/ed25519.js';
import { blake2b } from '@noble/hashes/blake2.js';
import { concat } from './bytes';
import { x25519PublicOf, type KeyPair } from './keys';

const SIGMA = new Uint32Array([0x61707865, 0x3320646e, 0x79622d32, 0x6b206574]);

function words(bytes: Uint8Array): Uint32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Uint32Array(bytes.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = view.getUint32(i * 4, true);
  return out;
}

/** crypto_box's key: HSalsa20 of the X25519 shared secret with a zero input. */
function boxKey(shared: Uint8Array): Uint8Array {
  const out = new Uint32Array(8);
  hsalsa(SIGMA, words(shared), new Uint32Array(4), out);
  const bytes = new Uint8Array(32);
  const view = new DataView(bytes.buffer);
  out.forEach((w, i) => view.setUint32(i * 4, w, true));
  return bytes;
}

function nonceOf(ephemeralPublic: Uint8Array, recipientPublic: Uint8Array): Uint8Array {
  return blake2b(concat(ephemeralPublic, recipientPublic), { dkLen: 24 });
}

/** Seal with a given ephemeral secret (random in use; fixed only by test vectors). */
export function sealWithEphemeral(message: Uint8Array, recipient: string, ephemeralSecret: Uint8Array): Uint8Array {
  const recipientPublic = x25519PublicOf(recipient);
  const ephemeralPublic = x25519.getPublicKey(ephemeralSecret);
  const key = boxKey(x25519.getSharedSecret(ephemeralSecret, recipientPublic));
  const box = xsalsa20poly1305(key, nonceOf(ephemeralPublic, recipientPublic)).encrypt(message);
  return concat(ephemeralPublic, box);
}

export function openSealed(sealed: Uint8Array, me: KeyPair): Uint8Array {
  if (sealed.length < 48) throw new Error('a sealed box is at least 48 bytes');
  const ephemeralPublic = sealed.subarray(0, 32);
  const key = boxKey(x25519.getSharedSecret(me.x25519Private(), ephemeralPublic));
  return xsalsa20poly1305(key, nonceOf(ephemeralPublic, me.x25519Public())).decrypt(sealed.subarray(32));
}
