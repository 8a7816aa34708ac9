/**
 * The key directory, client side: RFC 9162 Merkle hashing and proof
 * verification, signed tree heads, and the registrations its leaves hold.
 *
 * The same checks as the Python client (kezchat/client/keydir.py): a head's
 * signature under its log key; a head extending the one kept before
 * (consistency); a looked-up key's leaf included under the head, and that
 * leaf a registration of exactly that handle with exactly that key.
 *
 * `MerkleTree` builds the same proofs the server does, for the interop
 * vectors; a client only verifies.
 */
import { ed25519 } from '@noble/curves/ed25519.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { fromB64url, fromHex, fromUtf8, toHex, utf8 } from './bytes';
import { jcs, jcsText } from './jcs';
import { SIGNATURE_ALG, formatPrimary, isPrimary, verifyJcs } from './keys';

export const HASH_SIZE = 32;
export const EMPTY_ROOT = sha256(new Uint8Array(0));
const MAX_INDEX = Number.MAX_SAFE_INTEGER;

export class ProofError extends Error {}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

export function leafHash(leaf: Uint8Array): Uint8Array {
  return sha256(concat(Uint8Array.of(0), leaf));
}

export function nodeHash(left: Uint8Array, right: Uint8Array): Uint8Array {
  return sha256(concat(Uint8Array.of(1), left, right));
}

// Sizes and indexes are below 2^53, past what JavaScript's 32-bit bitwise
// operators hold: halve and test parity with arithmetic.
const odd = (n: number) => n % 2 === 1;
const half = (n: number) => Math.floor(n / 2);

function checkIndex(n: number): boolean {
  return Number.isSafeInteger(n) && n >= 0 && n <= MAX_INDEX;
}

function checkHashes(hashes: Uint8Array[]): void {
  for (const h of hashes) if (!(h instanceof Uint8Array) || h.length !== HASH_SIZE) throw new ProofError('a hash is not 32 bytes');
}

/** The root that `path` proves the leaf hash `leaf` at `index` to be under (RFC 9162 §2.1.3.2). */
export function rootFromInclusion(index: number, size: number, leaf: Uint8Array, path: Uint8Array[]): Uint8Array {
  if (!checkIndex(index) || !checkIndex(size) || index >= size) throw new ProofError(`leaf ${index} is not in a tree of ${size}`);
  checkHashes([leaf, ...path]);
  let fn = index;
  let sn = size - 1;
  let r = leaf;
  for (const p of path) {
    if (sn === 0) throw new ProofError('the inclusion path is too long');
    if (odd(fn) || fn === sn) {
      r = nodeHash(p, r);
      if (!odd(fn)) {
        while (fn !== 0 && !odd(fn)) {
          fn = half(fn);
          sn = half(sn);
        }
      }
    } else {
      r = nodeHash(r, p);
    }
    fn = half(fn);
    sn = half(sn);
  }
  if (sn !== 0) throw new ProofError('the inclusion path is too short');
  return r;
}

export function verifyInclusion(index: number, size: number, leaf: Uint8Array, path: Uint8Array[], root: Uint8Array): void {
  if (!equal(rootFromInclusion(index, size, leaf, path), root)) throw new ProofError('the inclusion proof does not lead to the root');
}

/** RFC 9162 §2.1.4.2; a proof from the empty tree is refused, as RFC 9162 has none. */
export function verifyConsistency(first: number, second: number, path: Uint8Array[], firstRoot: Uint8Array, secondRoot: Uint8Array): void {
  checkHashes(path);
  if (!checkIndex(first) || !checkIndex(second) || first <= 0 || first > second) {
    throw new ProofError(`no consistency proof from ${first} to ${second}`);
  }
  if (first === second) {
    if (path.length) throw new ProofError('equal sizes need an empty proof');
    if (!equal(firstRoot, secondRoot)) throw new ProofError('two different roots for one size');
    return;
  }
  if (!path.length) throw new ProofError('empty consistency proof');
  const hashes = [...path];
  let isPower = first;
  while (isPower > 1 && !odd(isPower)) isPower = half(isPower);
  if (isPower === 1) hashes.unshift(firstRoot);
  let fn = first - 1;
  let sn = second - 1;
  while (odd(fn)) {
    fn = half(fn);
    sn = half(sn);
  }
  let fr = hashes[0];
  let sr = hashes[0];
  for (const c of hashes.slice(1)) {
    if (sn === 0) throw new ProofError('the consistency proof is too long');
    if (odd(fn) || fn === sn) {
      fr = nodeHash(c, fr);
      sr = nodeHash(c, sr);
      if (!odd(fn)) {
        while (fn !== 0 && !odd(fn)) {
          fn = half(fn);
          sn = half(sn);
        }
      }
    } else {
      sr = nodeHash(sr, c);
    }
    fn = half(fn);
    sn = half(sn);
  }
  if (sn !== 0) throw new ProofError('the consistency proof is too short');
  if (!equal(fr, firstRoot)) throw new ProofError('the consistency proof does not lead to the first root');
  if (!equal(sr, secondRoot)) throw new ProofError('the consistency proof does not lead to the second root');
}

/** A whole tree in memory, as the server stores it (complete subtrees): builds RFC 9162 roots and proofs. */
export class MerkleTree {
  readonly levels: Uint8Array[][] = [[]];

  get size(): number {
    return this.levels[0].length;
  }

  append(leaf: Uint8Array): number {
    const index = this.size;
    let h = leafHash(leaf);
    let level = 0;
    let i = index;
    this.levels[0].push(h);
    while (odd(i)) {
      h = nodeHash(this.levels[level][i - 1], h);
      level += 1;
      i = half(i);
      if (this.levels.length <= level) this.levels.push([]);
      this.levels[level].push(h);
    }
    return index;
  }

  /** MTH(D[start:end]) for a range an RFC 9162 tree hashes: its complete subtrees folded from the right. */
  rangeRoot(start: number, end: number): Uint8Array {
    const parts: Uint8Array[] = [];
    let offset = start;
    for (let level = Math.floor(Math.log2(end - start)); level >= 0; level--) {
      const width = 2 ** level;
      if (end - offset >= width) {
        parts.push(this.levels[level][offset / width]);
        offset += width;
      }
    }
    let r = parts[parts.length - 1];
    for (let k = parts.length - 2; k >= 0; k--) r = nodeHash(parts[k], r);
    return r;
  }

  root(size: number = this.size): Uint8Array {
    return size === 0 ? EMPTY_ROOT : this.rangeRoot(0, size);
  }

  inclusion(index: number, size: number): Uint8Array[] {
    const out: Uint8Array[] = [];
    let start = 0;
    let end = size;
    while (end - start > 1) {
      const k = splitPoint(end - start);
      if (index < start + k) {
        out.push(this.rangeRoot(start + k, end));
        end = start + k;
      } else {
        out.push(this.rangeRoot(start, start + k));
        start += k;
      }
    }
    return out.reverse();
  }

  consistency(first: number, second: number): Uint8Array[] {
    const out: Uint8Array[] = [];
    let start = 0;
    let end = second;
    let m = first;
    let whole = true;
    while (m !== end - start) {
      const k = splitPoint(end - start);
      if (m <= k) {
        out.push(this.rangeRoot(start + k, end));
        end = start + k;
      } else {
        out.push(this.rangeRoot(start, start + k));
        start += k;
        m -= k;
        whole = false;
      }
    }
    if (!whole) out.push(this.rangeRoot(start, end));
    return out.reverse();
  }
}

/** The largest power of two strictly below n (n ≥ 2). */
function splitPoint(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

// -- heads and leaves ---------------------------------------------------------

export interface Head {
  size: number;
  root: string;
  ts: string;
  key: string;
  sig: string;
}

const HEX_HASH = /^[0-9a-f]{64}$/;

export function signHead(seed: Uint8Array, size: number, root: Uint8Array, ts: string): Head {
  const key = formatPrimary(ed25519.getPublicKey(seed));
  const unsigned = { size, root: toHex(root), ts, key };
  return { ...unsigned, sig: toHex(ed25519.sign(jcs(unsigned), seed)) };
}

/** A head from JSON, its signature checked against its own key; throws ProofError. */
export function parseHead(value: unknown): Head {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new ProofError('a head is an object');
  const v = value as Record<string, unknown>;
  const keys = Object.keys(v).sort().join(',');
  if (keys !== 'key,root,sig,size,ts') throw new ProofError('a head is exactly {size, root, ts, key, sig}');
  const { size, root, ts, key, sig } = v;
  if (typeof size !== 'number' || !checkIndex(size)) throw new ProofError('"size" must be a non-negative integer');
  if (typeof root !== 'string' || !HEX_HASH.test(root)) throw new ProofError('"root" must be 64 lowercase hex digits');
  if (typeof ts !== 'string' || Number.isNaN(Date.parse(ts))) throw new ProofError('"ts" must be an RFC 3339 timestamp');
  if (!isPrimary(key)) throw new ProofError('"key" must be ed25519:<64 hex>');
  if (!verifyJcs(key, { size, root, ts, key }, sig)) throw new ProofError("the head's signature does not verify under its key");
  return { size, root, ts, key, sig: sig as string };
}

export interface LeafRegistration {
  handle: string;
  server: string;
  fqhn: string;
  primary: string;
}

/** The registration a leaf holds: canonical JSON, signed by its own primary; throws ProofError. */
export function parseLeaf(leaf: Uint8Array): LeafRegistration {
  let body: Record<string, unknown>;
  try {
    body = JSON.parse(fromUtf8(leaf));
  } catch {
    throw new ProofError('the leaf is not JSON');
  }
  let canonical = '';
  try {
    canonical = jcsText(body);
  } catch {
    /* refused below */
  }
  if (!equal(utf8(canonical), leaf)) throw new ProofError('the leaf is not in canonical (JCS) form');
  if (body === null || typeof body !== 'object' || body.kez !== 'handle_registration') throw new ProofError('the leaf is not a handle registration');
  const payload = body.payload as Record<string, unknown> | undefined;
  const signature = body.signature as Record<string, unknown> | undefined;
  if (!payload || typeof payload !== 'object' || !signature || typeof signature !== 'object') throw new ProofError('the leaf has no payload or signature');
  const { primary, handle, server } = payload;
  if (payload.type !== 'kez.chat.handle_registration' || typeof primary !== 'string' || typeof handle !== 'string' || typeof server !== 'string') {
    throw new ProofError("the leaf's payload is not a handle registration");
  }
  if (signature.alg !== SIGNATURE_ALG || signature.key !== primary || !verifyJcs(primary, payload, signature.sig)) {
    throw new ProofError("the leaf's signature does not verify under its primary");
  }
  const [local, on] = handle.split('@', 2);
  if (on !== undefined && on !== server) throw new ProofError("the leaf's handle names another server");
  return { handle: local, server, fqhn: `${local}@${server}`, primary };
}

const hashes = (path: unknown): Uint8Array[] => {
  if (!Array.isArray(path) || path.length > 128) throw new ProofError('"path" must be a list of hashes');
  return path.map((h) => {
    if (typeof h !== 'string' || !HEX_HASH.test(h)) throw new ProofError('a hash must be 64 lowercase hex digits');
    return fromHex(h);
  });
};

/**
 * Check that `head` extends `kept` (the newest head verified before): same
 * log key, same root at the same size, else the consistency proof
 * (`GET /v1/log/consistency?from=<older>&to=<newer>`'s answer). Throws
 * ProofError with a `code`-like message on a split view or a rewrite.
 */
export function checkExtends(kept: Head, head: Head, consistency: unknown): void {
  if (kept.key !== head.key) throw new ProofError(`the log key changed from ${kept.key} to ${head.key}`);
  const [older, newer] = kept.size <= head.size ? [kept, head] : [head, kept];
  if (older.size === newer.size) {
    if (older.root !== newer.root) throw new ProofError('split view: two different key directories of one size');
    return;
  }
  if (older.size === 0) return;
  const path = hashes((consistency as { path?: unknown } | null)?.path);
  verifyConsistency(older.size, newer.size, path, fromHex(older.root), fromHex(newer.root));
}

/**
 * Check that the log vouches for a record (`GET /v1/u/<h>`): `inclusion` is
 * `GET /v1/log/inclusion?handle=<fqhn>&size=<head.size>`'s answer under a
 * head already checked.
 */
export function checkRecord(record: { fqhn: string; primary: string; log_index?: unknown }, head: Head, inclusion: unknown): void {
  const index = record.log_index;
  if (typeof index !== 'number' || !checkIndex(index) || index >= head.size) throw new ProofError(`no key directory entry for ${record.fqhn} under the head`);
  const answer = inclusion as { index?: unknown; size?: unknown; leaf?: unknown; path?: unknown } | null;
  if (!answer || answer.index !== index || answer.size !== head.size || typeof answer.leaf !== 'string') {
    throw new ProofError(`the inclusion proof for ${record.fqhn} is for another place`);
  }
  const leaf = fromB64url(answer.leaf);
  const reg = parseLeaf(leaf);
  if (reg.fqhn !== record.fqhn || reg.primary !== record.primary) {
    throw new ProofError(`the key directory registers ${reg.fqhn} with ${reg.primary}, not ${record.fqhn} with ${record.primary}`);
  }
  verifyInclusion(index, head.size, leafHash(leaf), hashes(answer.path), fromHex(head.root));
}
