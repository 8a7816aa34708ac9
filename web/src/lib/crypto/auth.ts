/**
 * `X-KEZ-Auth`: proof that a request comes from the holder of a handle's
 * primary key. Each endpoint signs a different text (method, path, the
 * endpoint's fields, the time), so a captured value is useless elsewhere.
 */
import { sha256 } from '@noble/hashes/sha2.js';
import { toHex, utf8 } from './bytes';
import type { KeyPair } from './keys';

export function signedText(method: string, path: string, fields: string[], ts: number): string {
  return [method, path, ...fields, String(ts)].join('\n');
}

export function bodyDigest(body: Uint8Array | string): string {
  return toHex(sha256(typeof body === 'string' ? utf8(body) : body));
}

export function signRequest(key: KeyPair, method: string, path: string, fields: string[], ts: number): string {
  return `${ts}:${key.sign(utf8(signedText(method, path, fields, ts)))}`;
}

export function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

/** The value for `GET /v1/inbox/<h>?since=<n>`. */
export function inboxAuth(key: KeyPair, local: string, since: number, ts = nowSeconds()): string {
  return signRequest(key, 'GET', `/v1/inbox/${local}`, [`since=${since}`], ts);
}

/** The `auth=` query value for the SSE stream. */
export function streamAuth(key: KeyPair, local: string, ts = nowSeconds()): string {
  return signRequest(key, 'GET', `/v1/inbox/${local}/stream`, [], ts);
}

export function deleteAuth(key: KeyPair, local: string, upto: number, ts = nowSeconds()): string {
  return signRequest(key, 'DELETE', `/v1/inbox/${local}`, [`upto=${upto}`], ts);
}

/** For `POST /v1/messages`: the signature covers the exact body bytes. */
export function sendAuth(key: KeyPair, body: Uint8Array | string, ts = nowSeconds()): string {
  return signRequest(key, 'POST', '/v1/messages', [bodyDigest(body)], ts);
}

export function manifestAuth(key: KeyPair, local: string, body: Uint8Array | string, ts = nowSeconds()): string {
  return signRequest(key, 'PUT', `/v1/manifests/${local}`, [bodyDigest(body)], ts);
}
