/**
 * `X-KEZ-Auth`: proof that a request comes from the holder of a handle's
 * primary key. Each endpoint signs a different text (method, path, the
 * endpoint's fields, the time), so a captured value is useless elsewhere.
 *
 * The named form puts `@<server domain>` on the second line, right after
 * the method, so a request signed for one server is refused by another
 * where the same key holds the same handle. `server = null` gives the
 * older form, which servers accept until their operator turns it off.
 */
import { sha256 } from '@noble/hashes/sha2.js';
import { toHex, utf8 } from './bytes';
import type { KeyPair } from './keys';

/** The server a request is signed for (its domain), or null for the older unnamed form. */
export type SignedFor = string | null;

export function signedText(method: string, path: string, fields: string[], ts: number, server: SignedFor = null): string {
  const named = server === null ? [] : [`@${server}`];
  return [method, ...named, path, ...fields, String(ts)].join('\n');
}

export function bodyDigest(body: Uint8Array | string): string {
  return toHex(sha256(typeof body === 'string' ? utf8(body) : body));
}

export function signRequest(key: KeyPair, method: string, path: string, fields: string[], ts: number, server: SignedFor = null): string {
  return `${ts}:${key.sign(utf8(signedText(method, path, fields, ts, server)))}`;
}

export function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

/** The value for `GET /v1/inbox/<h>?since=<n>`. */
export function inboxAuth(key: KeyPair, local: string, since: number, server: SignedFor = null, ts = nowSeconds()): string {
  return signRequest(key, 'GET', `/v1/inbox/${local}`, [`since=${since}`], ts, server);
}

/**
 * The `auth=` query value for the SSE stream. With `exp` (unix seconds, at
 * most 24 h after `ts`) the signature covers `exp=<exp>` and the URL stays
 * good until then, so the browser's EventSource can reconnect with it by
 * itself (SPEC §11.4); without, it is good for 60 s.
 */
export function streamAuth(key: KeyPair, local: string, server: SignedFor = null, ts = nowSeconds(), exp?: number): string {
  return signRequest(key, 'GET', `/v1/inbox/${local}/stream`, exp === undefined ? [] : [`exp=${exp}`], ts, server);
}

export function deleteAuth(key: KeyPair, local: string, upto: number, server: SignedFor = null, ts = nowSeconds()): string {
  return signRequest(key, 'DELETE', `/v1/inbox/${local}`, [`upto=${upto}`], ts, server);
}

/** For `POST /v1/messages`: the signature covers the exact body bytes. */
export function sendAuth(key: KeyPair, body: Uint8Array | string, server: SignedFor = null, ts = nowSeconds()): string {
  return signRequest(key, 'POST', '/v1/messages', [bodyDigest(body)], ts, server);
}

export function manifestAuth(key: KeyPair, local: string, body: Uint8Array | string, server: SignedFor = null, ts = nowSeconds()): string {
  return signRequest(key, 'PUT', `/v1/manifests/${local}`, [bodyDigest(body)], ts, server);
}
