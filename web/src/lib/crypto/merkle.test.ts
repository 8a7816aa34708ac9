/**
 * The TypeScript Merkle verifier against the published RFC 6962 / 9162
 * vectors (tests/data/rfc9162_vectors.json: transparency-dev/merkle's test
 * data, source named in the file), and the client checks of heads, leaves
 * and records.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { fromB64, fromHex, toB64url, toHex } from './bytes';
import { jcs } from './jcs';
import { KeyPair } from './keys';
import {
  EMPTY_ROOT,
  MerkleTree,
  ProofError,
  checkExtends,
  checkRecord,
  parseHead,
  signHead,
  verifyConsistency,
  verifyInclusion,
} from './merkle';
import { registration } from './registration';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Any = any;
const vectors: Any = JSON.parse(readFileSync(resolve(__dirname, '../../../../tests/data/rfc9162_vectors.json'), 'utf-8'));

describe('published RFC 6962/9162 vectors', () => {
  const tree = new MerkleTree();
  for (const leaf of vectors.leaf_inputs_hex) tree.append(fromHex(leaf));

  it('names its source', () => {
    expect(vectors._source.repository).toBe('https://github.com/transparency-dev/merkle');
  });

  it('roots of every size and every stored node', () => {
    expect(toHex(EMPTY_ROOT)).toBe(vectors.root_hashes_hex[0]);
    vectors.root_hashes_hex.forEach((root: string, size: number) => expect(toHex(tree.root(size))).toBe(root));
    vectors.node_hashes_hex.forEach((level: string[], l: number) => level.forEach((h, i) => expect(toHex(tree.levels[l][i])).toBe(h)));
  });

  it('inclusion cases: good ones verify, tampered ones are refused', () => {
    for (const c of vectors.inclusion) {
      const run = () => verifyInclusion(c.leafIdx, c.treeSize, fromB64(c.leafHash), (c.proof ?? []).map(fromB64), fromB64(c.root));
      if (c.wantErr) expect(run, c.file).toThrow(ProofError);
      else run();
    }
  });

  it('consistency cases: good ones verify, tampered ones are refused', () => {
    for (const c of vectors.consistency) {
      const run = () => verifyConsistency(c.size1, c.size2, (c.proof ?? []).map(fromB64), fromB64(c.root1), fromB64(c.root2));
      if (c.wantErr) expect(run, c.file).toThrow(ProofError);
      else run();
    }
  });

  it('built proofs verify for every size up to 40', () => {
    const big = new MerkleTree();
    for (let i = 0; i < 40; i++) big.append(Uint8Array.of(i, i >> 1));
    for (let n = 1; n <= 40; n++) {
      for (let m = 0; m < n; m++) verifyInclusion(m, n, big.levels[0][m], big.inclusion(m, n), big.root(n));
      for (let m = 1; m <= n; m++) verifyConsistency(m, n, big.consistency(m, n), big.root(m), big.root(n));
    }
  });
});

describe('client checks', () => {
  const seed = new Uint8Array(32).fill(7);
  const keys = ['amy', 'bo', 'cy'].map((h, i) => ({ handle: h, key: new KeyPair(new Uint8Array(32).fill(i + 1)) }));
  const leaves = keys.map(({ handle, key }) => jcs(registration(key, handle, 'kez.lat', '2026-05-25T03:00:00Z')));
  const tree = new MerkleTree();
  leaves.forEach((l) => tree.append(l));
  const head = signHead(seed, 3, tree.root(), '2026-05-25T03:00:00Z');
  const inclusion = (i: number) => ({ index: i, size: 3, leaf: toB64url(leaves[i]), path: tree.inclusion(i, 3).map(toHex) });
  const record = (i: number) => ({ fqhn: `${keys[i].handle}@kez.lat`, primary: keys[i].key.primary, log_index: i });

  it('a head with a bad signature is refused', () => {
    expect(parseHead(head)).toEqual(head);
    expect(() => parseHead({ ...head, root: '00'.repeat(32) })).toThrow(ProofError);
    expect(() => parseHead({ ...head, sig: '0'.repeat(128) })).toThrow(ProofError);
  });

  it('a record the log vouches for passes; a substituted key does not', () => {
    checkRecord(record(1), head, inclusion(1));
    expect(() => checkRecord({ ...record(1), primary: new KeyPair(new Uint8Array(32).fill(9)).primary }, head, inclusion(1))).toThrow(/registers/);
    // in the log, but as another handle's key
    expect(() => checkRecord({ ...record(2), fqhn: 'bo@kez.lat', log_index: 2 }, head, inclusion(2))).toThrow(/registers/);
    expect(() => checkRecord({ ...record(1), log_index: undefined }, head, inclusion(1))).toThrow(ProofError);
  });

  it('heads: same size other root, a changed log key, a rewritten history', () => {
    const old = signHead(seed, 2, tree.root(2), head.ts);
    checkExtends(old, head, { path: tree.consistency(2, 3).map(toHex) });
    const forged = new MerkleTree();
    [leaves[0], jcs(registration(new KeyPair(new Uint8Array(32).fill(9)), 'bo', 'kez.lat', head.ts)), leaves[2]].forEach((l) => forged.append(l));
    const forgedHead = signHead(seed, 3, forged.root(), head.ts);
    expect(() => checkExtends(head, forgedHead, null)).toThrow(/split view/);
    expect(() => checkExtends(old, forgedHead, { path: forged.consistency(2, 3).map(toHex) })).toThrow(ProofError);
    expect(() => checkExtends(head, signHead(new Uint8Array(32).fill(8), 3, tree.root(), head.ts), null)).toThrow(/log key changed/);
  });
});
