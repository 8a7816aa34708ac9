/**
 * The app's key directory checks (keydir.ts) against logs built from the
 * interop vectors' registrations and log key: an honest log vouches, and
 * each lie a hostile server can tell is refused (a substituted key, a key
 * under another handle, a bad head signature, a log key that changes, a
 * rewritten history, two heads of one size); peers' heads are compared;
 * the head is kept in IndexedDB, rides in every sent plaintext, and a
 * received one that disagrees is a warning on that message.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { fromB64url, fromHex, toB64url, toHex } from './crypto/bytes';
import { open } from './crypto/envelope';
import { jcs } from './crypto/jcs';
import { KeyPair } from './crypto/keys';
import { MerkleTree, signHead } from './crypto/merkle';
import { registration } from './crypto/registration';
import { History, type Model } from './history';
import { Directories, DirectoryError, HEAD_KEY, KeyDirectory, SPLIT_WARNING, type LogSource } from './keydir';
import { Outbox } from './outbox';
import { Signer } from './signer';
import { alice, bob, bobInbox, freshStorage, item, vectors } from './testkit';
import type { Storage } from './storage';
import { REFUSED } from './types';

afterEach(() => vi.unstubAllGlobals());

const V = vectors.keylog;
const LOG_SEED = fromHex(V.log_seed_hex);
const GENUINE: Uint8Array[] = V.leaves.map((l: { leaf: string }) => fromB64url(l.leaf));
const handles: string[] = V.leaves.map((l: { handle: string }) => l.handle);
const keyOf = (handle: string) => new KeyPair(fromHex(V.leaves[handles.indexOf(handle)].seed_hex));

/** A log as a server (honest or not) serves it: these leaves, signed with this key. */
class Log implements LogSource {
  tree = new MerkleTree();
  calls: string[] = [];

  constructor(
    readonly leaves: Uint8Array[],
    readonly seed: Uint8Array = LOG_SEED,
    /** what the served head is made of, when a test forges it */
    readonly forge: (head: Record<string, unknown>) => unknown = (h) => h,
  ) {
    for (const leaf of leaves) this.tree.append(leaf);
  }

  async head(): Promise<unknown> {
    this.calls.push('head');
    return this.forge({ ...signHead(this.seed, this.tree.size, this.tree.root(), V.ts) });
  }

  async inclusion(fqhn: string, size: number): Promise<unknown> {
    this.calls.push(`inclusion ${fqhn}`);
    const index = this.indexOf(fqhn);
    return { index, size, leaf: toB64url(this.leaves[index]), path: this.tree.inclusion(index, size).map(toHex) };
  }

  async consistency(first: number, second: number): Promise<unknown> {
    this.calls.push(`consistency ${first} ${second}`);
    if (second > this.tree.size) throw new Error('no such size');
    return { path: this.tree.consistency(first, second).map(toHex) };
  }

  indexOf(fqhn: string): number {
    return this.leaves.findIndex((l) => JSON.parse(new TextDecoder().decode(l)).payload.handle === fqhn.split('@')[0]);
  }

  /** The record `/v1/u/<handle>` answers, from this log. */
  record(handle: string) {
    const index = this.indexOf(handle);
    const payload = JSON.parse(new TextDecoder().decode(this.leaves[index])).payload;
    return { fqhn: `${handle}@${V.server}`, primary: payload.primary, log_index: index };
  }
}

/** The genuine log with `handle`'s registration swapped for one of a key the server holds. */
function rewritten(handle: string, extra: string[] = []): Uint8Array[] {
  const reg = (h: string) => jcs(registration(KeyPair.generate(), h, V.server, V.ts));
  return [...GENUINE.map((leaf, i) => (handles[i] === handle ? reg(handle) : leaf)), ...extra.map(reg)];
}

async function refused(dir: KeyDirectory, record: object): Promise<DirectoryError> {
  const caught = await dir.vouch(record as never).then(
    () => null,
    (e) => e,
  );
  expect(caught).toBeInstanceOf(DirectoryError);
  return caught as DirectoryError;
}

async function directory(log: LogSource, storage: Storage = freshStorage()): Promise<KeyDirectory> {
  const dir = new KeyDirectory(log, storage);
  await dir.load();
  return dir;
}

describe('vouching for a key before it is pinned', () => {
  it('an honest log vouches for every registration, and its head is kept in IndexedDB', async () => {
    const log = new Log(GENUINE);
    const storage = freshStorage();
    const dir = await directory(log, storage);
    for (const handle of handles) expect((await dir.vouch(log.record(handle))).size).toBe(GENUINE.length);
    expect(dir.brief()).toEqual({ size: GENUINE.length, root: toHex(log.tree.root()) });
    // a reload finds the head
    const again = await directory(log, storage);
    expect(again.kept()?.root).toBe(toHex(log.tree.root()));
    expect(((await storage.get(HEAD_KEY)) as { size: number }).size).toBe(GENUINE.length);
  });

  it('a key the log does not hold is refused, with or without an index', async () => {
    const log = new Log(GENUINE);
    const dir = await directory(log);
    const attacker = KeyPair.generate().primary;
    expect((await refused(dir, { ...log.record('ben'), primary: attacker })).code).toBe('wrong_leaf');
    expect((await refused(dir, { fqhn: 'ben@kez.lat', primary: attacker })).code).toBe('not_included');
    expect((await refused(dir, { fqhn: 'ben@kez.lat', primary: attacker, log_index: 99 })).code).toBe('not_included');
  });

  it("a key that is in the log, but as another handle's, is refused", async () => {
    const log = new Log(GENUINE);
    const dir = await directory(log);
    const other = log.record('cai');
    // the server points bob's lookup at cy's leaf and proves it
    log.inclusion = async (_fqhn, size) => ({
      index: other.log_index,
      size,
      leaf: toB64url(GENUINE[other.log_index]),
      path: log.tree.inclusion(other.log_index, size).map(toHex),
    });
    const e = await refused(dir, { fqhn: 'ben@kez.lat', primary: other.primary, log_index: other.log_index });
    expect(e.code).toBe('wrong_leaf');
    expect(e.message).toContain('cai@kez.lat');
  });

  it('a bad path in the inclusion proof is refused', async () => {
    const log = new Log(GENUINE);
    const dir = await directory(log);
    const honest = log.inclusion.bind(log);
    log.inclusion = async (fqhn, size) => {
      const answer = (await honest(fqhn, size)) as { path: string[] };
      return { ...answer, path: answer.path.map((h, i) => (i === 0 ? '00'.repeat(32) : h)) };
    };
    expect((await refused(dir, log.record('ben'))).code).toBe('not_included');
  });

  it('a head with a bad signature is refused, and nothing is kept', async () => {
    for (const forge of [
      (h: Record<string, unknown>) => ({ ...h, sig: '0'.repeat(128) }),
      (h: Record<string, unknown>) => ({ ...h, root: '00'.repeat(32) }),
      (h: Record<string, unknown>) => ({ ...h, size: (h.size as number) + 1 }),
    ]) {
      const log = new Log(GENUINE, LOG_SEED, forge);
      const dir = await directory(log);
      expect((await refused(dir, log.record('ben'))).code).toBe('bad_head');
      expect(dir.kept()).toBeNull();
    }
  });

  it('a log key that changes is refused', async () => {
    const storage = freshStorage();
    await (await directory(new Log(GENUINE), storage)).vouch(new Log(GENUINE).record('ana'));
    const other = new Log(GENUINE, new Uint8Array(32).fill(7));
    expect((await refused(await directory(other, storage), other.record('ben'))).code).toBe('log_key_changed');
  });

  it('a rewritten old leaf: the grown log does not extend the head kept', async () => {
    const storage = freshStorage();
    const honest = new Log(GENUINE);
    await (await directory(honest, storage)).vouch(honest.record('ana'));
    const forged = new Log(rewritten('ben', ['zed']));
    const dir = await directory(forged, storage);
    expect((await refused(dir, forged.record('ben'))).code).toBe('inconsistent');
    expect(dir.kept()?.root).toBe(toHex(honest.tree.root()));
    // the forgery is self-consistent: only the kept head catches it
    await (await directory(forged)).vouch(forged.record('ben'));
  });

  it('two heads of one size are a split view', async () => {
    const storage = freshStorage();
    const honest = new Log(GENUINE);
    await (await directory(honest, storage)).vouch(honest.record('ana'));
    const forged = new Log(rewritten('ben'));
    const e = await refused(await directory(forged, storage), forged.record('ben'));
    expect(e.code).toBe('split_view');
    expect(e.message).toContain(SPLIT_WARNING);
  });

  it('a log that grows honestly is accepted, and the newer head kept', async () => {
    const storage = freshStorage();
    const small = new Log(GENUINE.slice(0, 3));
    await (await directory(small, storage)).vouch(small.record('ana'));
    const full = new Log(GENUINE);
    const dir = await directory(full, storage);
    await dir.vouch(full.record('ana'));
    expect(dir.kept()?.size).toBe(GENUINE.length);
    expect(full.calls).toContain(`consistency 3 ${GENUINE.length}`);
  });
});

describe("comparing a peer's head", () => {
  it('the same head, or an older one ours extends, is no warning; another root of the same size is', async () => {
    const log = new Log(GENUINE);
    const dir = await directory(log);
    await dir.currentHead();
    expect(await dir.compareGossip(dir.brief())).toBeNull();
    expect(await dir.compareGossip({ size: 2, root: toHex(log.tree.root(2)) })).toBeNull();
    const forged = new Log(rewritten('ben'));
    expect(await dir.compareGossip({ size: GENUINE.length, root: toHex(forged.tree.root()) })).toContain('DIFFERENT KEY DIRECTORIES');
    // an older head that is not a prefix of ours
    expect(await dir.compareGossip({ size: 2, root: toHex(new Log(rewritten('ana')).tree.root(2)) })).toContain(SPLIT_WARNING);
  });

  it('a peer ahead of us: we catch up, then compare; a size our server does not show yet is nothing to say', async () => {
    const storage = freshStorage();
    const small = new Log(GENUINE.slice(0, 3));
    const dir = await directory(small, storage);
    await dir.currentHead();
    const full = new Log(GENUINE);
    expect(await dir.compareGossip({ size: GENUINE.length, root: toHex(full.tree.root()) })).toBeNull();
    const grown = await directory(full, storage);
    expect(await grown.compareGossip({ size: GENUINE.length, root: toHex(full.tree.root()) })).toBeNull();
    const forged = new Log(rewritten('ana'));
    expect(await (await directory(small)).compareGossip({ size: forged.tree.size, root: toHex(forged.tree.root()) })).toBeNull();
  });

  it('an older head found consistent is asked about once (a catch-up of old messages)', async () => {
    const log = new Log(GENUINE);
    const dir = await directory(log);
    await dir.currentHead();
    for (let i = 0; i < 3; i++) expect(await dir.compareGossip({ size: 2, root: toHex(log.tree.root(2)) })).toBeNull();
    expect(log.calls.filter((c) => c.startsWith('consistency'))).toEqual([`consistency 2 ${GENUINE.length}`]);
  });

  it('malformed heads and having no head of our own are no warning', async () => {
    const dir = await directory(new Log(GENUINE));
    expect(await dir.compareGossip({ size: 7, root: 'x' })).toBeNull();
    await dir.currentHead();
    for (const bad of [null, 'head', [], { size: -1, root: '00'.repeat(32) }, { size: 1.5, root: '00'.repeat(32) }]) {
      expect(await dir.compareGossip(bad)).toBeNull();
    }
  });
});

describe('the head in the app', () => {
  it('every sent plaintext carries our newest verified head', async () => {
    const storage = freshStorage();
    const log = new Log(GENUINE);
    const dir = await directory(log, storage);
    await dir.currentHead();
    const model: Model = { convs: {}, msgs: {} };
    const history = new History(model, storage);
    await history.commit(history.put(history.fresh(bob.primary, 'bob@kez.lat', '2026-05-25T03:00:00Z')));
    const sent: unknown[] = [];
    vi.stubGlobal('fetch', async (_url: string, init: RequestInit) => {
      sent.push(JSON.parse(init.body as string).envelope);
      return new Response(JSON.stringify({ seq: 1, created_at: '2026-05-25T03:00:01Z' }), { status: 201 });
    });
    const outbox = new Outbox(new Signer(alice, 'kez.lat'), 'alice', storage, history, () => dir.brief());
    await outbox.sendText(bob.primary, 'hello');
    expect(open(bob, sent[0])).toEqual({ type: 'text', text: 'hello', head: { size: GENUINE.length, root: toHex(log.tree.root()) } });
  });

  it('a received message whose head disagrees is shown with a loud warning; an agreeing one without', async () => {
    const log = new Log(GENUINE);
    const dir = await directory(log);
    await dir.currentHead();
    const b = await bobInbox(freshStorage(), undefined, undefined, { gossip: (h) => dir.compareGossip(h) });
    await b.inbox.enqueue(item(alice, 'alice@kez.lat', { type: 'text', text: 'same view', head: dir.brief() }));
    const forged = new Log(rewritten('ben'));
    await b.inbox.enqueue(item(alice, 'alice@kez.lat', { type: 'text', text: 'other view', head: { size: forged.tree.size, root: toHex(forged.tree.root()) } }));
    const shown = b.model.msgs[alice.primary].map((m) => [m.kind, m.text]);
    expect(shown.slice(0, 2)).toEqual([
      ['text', 'same view'],
      ['text', 'other view'],
    ]);
    expect(shown[2][0]).toBe('warning');
    expect(shown[2][1]).toContain('DIFFERENT KEY DIRECTORIES');
    expect(shown).toHaveLength(3);
  });

  it('a first message from a key the log does not vouch for is refused, and nothing is pinned', async () => {
    const forgedKey = keyOf('ben');
    const log = new Log(rewritten('dee'));
    const dir = await directory(log);
    const attacker = KeyPair.generate();
    const confirm = async (fqhn: string, primary: string) => {
      await dir.vouch({ fqhn, primary, log_index: log.indexOf(fqhn) });
      return true;
    };
    const b = await bobInbox(freshStorage(), undefined, undefined, { confirm });
    await b.inbox.enqueue(item(attacker, 'dee@kez.lat', { type: 'text', text: "hi, it's dee" }));
    expect(b.contacts.keyOf('dee@kez.lat')).toBeUndefined();
    const [warning] = b.model.msgs[REFUSED];
    expect(warning.kind).toBe('warning');
    expect(warning.text).toContain('key directory does not vouch');
    // a sender the log vouches for is pinned
    await b.inbox.enqueue(item(forgedKey, 'ben@kez.lat', { type: 'text', text: 'hi' }));
    expect(b.contacts.keyOf('ben@kez.lat')).toBe(forgedKey.primary);
  });
});

describe("another domain's key directory (federation)", () => {
  // the vectors' log plays the other domain (kez.lat); ours is a.example
  async function attached(log: Log, handle: string) {
    return { ...log.record(handle), directory: { head: await log.head(), inclusion: await log.inclusion(handle, log.tree.size) } };
  }

  async function directories(remote: Log, storage: Storage = freshStorage()) {
    // our own server's log: one registration of a.example's
    const ours = new Log([jcs(registration(KeyPair.generate(), 'zoe', 'a.example', V.ts))]);
    const own = await directory(ours, storage);
    const asked: string[] = [];
    const dirs = new Directories(own, 'a.example', storage, async (first, second, server) => {
      asked.push(`${server} ${first} ${second}`);
      return remote.consistency(first, second);
    });
    return { dirs, ours, asked, storage };
  }

  it("vouches with the attached head and proof, keeps that domain's head apart, and checks growth through our server", async () => {
    const small = new Log(GENUINE.slice(0, 3));
    const { dirs, ours, storage } = await directories(small);
    await dirs.vouch(await attached(small, 'ana'));
    expect(((await storage.get(`${HEAD_KEY}:${V.server}`)) as { size: number }).size).toBe(3);
    expect(await storage.get(HEAD_KEY)).toBeUndefined();
    expect(ours.calls).toEqual([]);
    const full = new Log(GENUINE);
    const grown = await directories(full, storage);
    await grown.dirs.vouch(await attached(full, 'ben'));
    expect(grown.asked).toEqual([`${V.server} 3 ${GENUINE.length}`]);
    expect(((await storage.get(`${HEAD_KEY}:${V.server}`)) as { size: number }).size).toBe(GENUINE.length);
  });

  it("refuses a record without its domain's proof, a substituted key, and a log key that changes", async () => {
    const log = new Log(GENUINE);
    const { dirs, storage } = await directories(log);
    expect((await refused(dirs as never as KeyDirectory, log.record('ana'))).code).toBe('bad_head');
    const swapped = { ...(await attached(log, 'ben')), primary: KeyPair.generate().primary };
    expect((await refused(dirs as never as KeyDirectory, swapped)).code).toBe('wrong_leaf');
    await dirs.vouch(await attached(log, 'ana'));
    const other = new Log(GENUINE, new Uint8Array(32).fill(7));
    const again = await directories(other, storage);
    expect((await refused(again.dirs as never as KeyDirectory, await attached(other, 'ben'))).code).toBe('log_key_changed');
  });

  it("compares a remote peer's gossip with the head kept of the peer's domain, never with ours", async () => {
    const log = new Log(GENUINE);
    const { dirs } = await directories(log);
    const brief = { size: GENUINE.length, root: toHex(log.tree.root()) };
    // nothing kept of that domain yet: nothing to compare
    expect(await dirs.compareGossip(brief, `ben@${V.server}`)).toBeNull();
    await dirs.vouch(await attached(log, 'ana'));
    expect(await dirs.compareGossip(brief, `ben@${V.server}`)).toBeNull();
    const split = await dirs.compareGossip({ size: GENUINE.length, root: '00'.repeat(32) }, `ben@${V.server}`);
    expect(split).toContain(SPLIT_WARNING);
    // the other domain's first head: consistent with its log, a split against ours
    const first = { size: 1, root: toHex(new Log(GENUINE.slice(0, 1)).tree.root()) };
    expect(await dirs.compareGossip(first, `ben@${V.server}`)).toBeNull();
    await dirs.own.currentHead();
    expect(await dirs.compareGossip(first, 'zoe@a.example')).toContain(SPLIT_WARNING);
  });
});
