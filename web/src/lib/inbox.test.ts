/**
 * The inbox pipeline against a hostile server and a hostile sender: each
 * attack of the review, run through verify → classify → store → show with
 * the real store code on an IndexedDB stand-in.
 */
import { describe, expect, it } from 'vitest';
import { utf8 } from './crypto/bytes';
import { seal } from './crypto/envelope';
import { textMessage } from './crypto/plaintext';
import { keys } from './storage';
import { trustNewKey } from './repin';
import { REFUSED } from './types';
import { CREATED, alice, bobInbox, freshStorage, item, mallory, vectors } from './testkit';
import { Storage } from './storage';
import type { UseStore } from 'idb-keyval';
import { createStore } from 'idb-keyval';

const A = 'alice@kez.lat';
const M = 'mallory@kez.lat';

function shown(model: { msgs: Record<string, { kind: string; text: string }[]> }, peer: string) {
  return (model.msgs[peer] ?? []).map((m) => [m.kind, m.text] as const);
}

describe('the inbox pipeline', () => {
  it('pins a new verified sender, shows the text, stores it with the cursor', async () => {
    const b = await bobInbox();
    await b.inbox.enqueue(item(alice, A, textMessage('hello bob'), { seq: 1 }));
    expect(b.model.convs[alice.primary].fqhn).toBe(A);
    expect(shown(b.model, alice.primary)).toEqual([['text', 'hello bob']]);
    expect(b.contacts.keyOf(A)).toBe(alice.primary);
    // all of it is on disk: a second pipeline on the same store sees the same
    const again = await bobInbox(b.storage);
    expect(again.inbox.cursor).toBe(1);
    expect(shown(again.model, alice.primary)).toEqual([['text', 'hello bob']]);
    expect(again.contacts.handleOf(alice.primary)).toBe(A);
  });

  it('a relabelled from: a pinned key under another handle is a warning in its own conversation', async () => {
    const b = await bobInbox();
    await b.inbox.enqueue(item(alice, A, textMessage('hi'), { seq: 1 }));
    await b.inbox.enqueue(item(mallory, M, textMessage('hi from mallory'), { seq: 2 }));
    await b.inbox.enqueue(item(mallory, A, textMessage('I am alice'), { seq: 3 }));
    expect(Object.values(b.model.convs).map((c) => c.fqhn).sort()).toEqual([A, M]);
    const m = shown(b.model, mallory.primary);
    expect(m[1][0]).toBe('warning');
    expect(m[1][1]).toContain('labelled a message from mallory@kez.lat as "alice@kez.lat"');
    expect(shown(b.model, alice.primary)).toEqual([['text', 'hi']]);
    expect(b.model.convs[mallory.primary].fqhn).toBe(M);
  });

  it('a relabelled first message (nobody pinned yet) is refused: the registry does not give that key to that handle', async () => {
    const b = await bobInbox();
    await b.inbox.enqueue(item(mallory, A, textMessage('I am alice'), { seq: 1 }));
    expect(b.model.convs).toEqual({});
    expect(b.contacts.keyOf(A)).toBeUndefined();
    expect(shown(b.model, REFUSED)[0][1]).toContain('registry does not give');
    // the real alice is then pinned normally
    await b.inbox.enqueue(item(alice, A, textMessage('hi'), { seq: 2 }));
    expect(shown(b.model, alice.primary)).toEqual([['text', 'hi']]);
  });

  it('a pinned handle under a new key: warning and key-changed in the pinned conversation, no second conversation', async () => {
    const b = await bobInbox();
    await b.inbox.enqueue(item(alice, A, textMessage('hi'), { seq: 1 }));
    await b.inbox.enqueue(item(mallory, A, textMessage("it's me, alice"), { seq: 2 }));
    expect(Object.keys(b.model.convs)).toEqual([alice.primary]);
    expect(b.model.convs[alice.primary].keyChanged).toContain('different key');
    expect(shown(b.model, alice.primary)[1][0]).toBe('warning');
    expect(b.contacts.keyOf(A)).toBe(alice.primary);
    // and a genuine message after that is normal
    await b.inbox.enqueue(item(alice, A, textMessage('really me'), { seq: 3 }));
    expect(shown(b.model, alice.primary)[2]).toEqual(['text', 'really me']);
  });

  it('trusting the new key, by choice, moves the conversation and pins the new key', async () => {
    const b = await bobInbox();
    await b.inbox.enqueue(item(alice, A, textMessage('hi'), { seq: 1 }));
    await b.inbox.enqueue(item(mallory, A, textMessage('new phone'), { seq: 2 }));
    expect(b.model.convs[alice.primary].newKey).toBe(mallory.primary);
    await b.history.commit(trustNewKey(b.history, b.contacts, alice.primary));
    expect(Object.keys(b.model.convs)).toEqual([mallory.primary]);
    expect(b.model.convs[mallory.primary].keyChanged).toBeUndefined();
    expect(shown(b.model, mallory.primary).map((m) => m[0])).toEqual(['text', 'warning', 'note']);
    await b.inbox.enqueue(item(mallory, A, textMessage('from the new key'), { seq: 3 }));
    expect(shown(b.model, mallory.primary)).toContainEqual(['text', 'from the new key']);
    // the old key is now a stranger under that handle
    await b.inbox.enqueue(item(alice, A, textMessage('old key'), { seq: 4 }));
    expect(b.model.convs[mallory.primary].keyChanged).toContain('different key');
    const again = await bobInbox(b.storage);
    expect(again.contacts.keyOf(A)).toBe(mallory.primary);
    expect(again.contacts.handleOf(alice.primary)).toBeUndefined();
    expect(Object.keys(again.model.convs)).toEqual([mallory.primary]);
  });

  it('a from_primary rewritten by the server is a warning', async () => {
    const b = await bobInbox();
    await b.inbox.enqueue(item(alice, A, textMessage('hi'), { seq: 1 }));
    await b.inbox.enqueue(item(alice, A, textMessage('hi again'), { seq: 2, fromPrimary: mallory.primary }));
    expect(shown(b.model, alice.primary).map((m) => m[0])).toEqual(['text', 'warning']);
  });

  for (const [name, label] of [
    ['zero-width space', 'alice\u200b@kez.lat'],
    ['trailing space', 'alice@kez.lat '],
    ['line break', 'alice@kez.lat\n'],
    ['upper case', 'Alice@kez.lat'],
    ['no server', 'alice'],
  ]) {
    it(`a from that is not a handle (${name}) pins nothing and is a warning`, async () => {
      const b = await bobInbox();
      await b.inbox.enqueue(item(alice, label, textMessage('hi'), { seq: 1 }));
      expect(b.model.convs).toEqual({});
      expect(b.contacts.keyOf(label)).toBeUndefined();
      expect(b.contacts.handleOf(alice.primary)).toBeUndefined();
      const [kind, text] = shown(b.model, REFUSED)[0];
      expect(kind).toBe('warning');
      // the reason shows the label with its hidden characters visible
      expect(text).not.toMatch(/[\u200b\n]/);
      expect(b.inbox.cursor).toBe(1);
    });
  }

  it('a forged signature pins, stores and renames nothing, and is a warning with the reason', async () => {
    const b = await bobInbox();
    const good = seal(alice, (await import('./testkit')).bob.primary, textMessage('hi'));
    await b.inbox.enqueue(item(alice, A, textMessage('x'), { seq: 1, envelope: { ...good, sig: 'ab'.repeat(64) } }));
    expect(b.model.convs).toEqual({});
    expect(b.contacts.keyOf(A)).toBeUndefined();
    const [w] = shown(b.model, REFUSED);
    expect(w[0]).toBe('warning');
    expect(w[1]).toContain('could not be verified');
    expect(w[1]).toContain('forged');
    // a forgery for a pinned contact does not rename or touch it
    await b.inbox.enqueue(item(alice, A, textMessage('real'), { seq: 2 }));
    await b.inbox.enqueue(item(alice, M, textMessage('x'), { seq: 3, envelope: { ...good, sig: 'cd'.repeat(64) } }));
    expect(b.model.convs[alice.primary].fqhn).toBe(A);
  });

  it('a replay under a new seq is shown once, the copy is a warning', async () => {
    const b = await bobInbox();
    const first = item(alice, A, textMessage('pay 10'), { seq: 1 });
    await b.inbox.enqueue(first);
    await b.inbox.enqueue({ ...first, seq: 2 });
    const list = shown(b.model, alice.primary);
    expect(list.filter((m) => m[0] === 'text')).toEqual([['text', 'pay 10']]);
    expect(list[1][1]).toContain('replay');
    // the seen signatures survive a reload
    const again = await bobInbox(b.storage);
    await again.inbox.enqueue({ ...first, seq: 3 });
    expect(shown(again.model, alice.primary).filter((m) => m[0] === 'text')).toHaveLength(1);
  });

  it('the shared duplicate-key vector is refused, with the reason', async () => {
    const entry = vectors.bad_envelopes.find((e: { name: string }) => e.name === 'plaintext with a repeated key');
    const b = await bobInbox();
    await b.inbox.enqueue(item(alice, A, textMessage('hi'), { seq: 1 }));
    await b.inbox.enqueue(item(alice, A, {}, { seq: 2, envelope: entry.envelope }));
    const [, w] = shown(b.model, alice.primary);
    expect(w[0]).toBe('warning');
    expect(w[1]).toContain('duplicate key');
    expect(JSON.stringify(b.model.msgs)).not.toContain('pay mallory');
    // and a fresh one made here, from an unpinned sender: pins nothing
    const c = await bobInbox();
    await c.inbox.enqueue(item(mallory, M, utf8('{"type":"text","text":"a","text":"b"}'), { seq: 1 }));
    expect(c.model.convs).toEqual({});
    expect(shown(c.model, REFUSED)[0][0]).toBe('warning');
  });

  it('a ts of year 9999 sorts by the server time, not at the bottom forever', async () => {
    const b = await bobInbox();
    await b.inbox.enqueue(item(alice, A, textMessage('from the future'), { seq: 1, ts: '9999-12-31T23:59:59Z', createdAt: '2026-05-25T03:00:01Z' }));
    await b.inbox.enqueue(item(alice, A, textMessage('later'), { seq: 2, ts: '2026-05-25T03:00:02Z', createdAt: '2026-05-25T03:00:02Z' }));
    expect(shown(b.model, alice.primary).map((m) => m[1])).toEqual(['from the future', 'later']);
    expect(b.model.msgs[alice.primary][0].ts).toBe('2026-05-25T03:00:01.000Z');
    // a server time in the future is clamped to now
    await b.inbox.enqueue(item(alice, A, textMessage('server lies'), { seq: 3, ts: '9999-01-01T00:00:00Z', createdAt: '9999-01-01T00:00:00Z' }));
    expect(b.model.msgs[alice.primary][2].ts.startsWith('2026-')).toBe(true);
  });

  it('an item for someone else, or not an envelope at all, is a warning', async () => {
    const b = await bobInbox();
    const forCarol = seal(alice, mallory.primary, textMessage('hi'));
    await b.inbox.enqueue(item(alice, A, {}, { seq: 1, envelope: forCarol }));
    await b.inbox.enqueue({ seq: 2, from: A, from_primary: alice.primary, envelope: 'junk', created_at: CREATED });
    expect(shown(b.model, REFUSED).map((m) => m[0])).toEqual(['warning', 'warning']);
    expect(b.inbox.cursor).toBe(2);
  });

  it('a save failure stops the pipeline, is reported, and the cursor stays', async () => {
    let fail = false;
    const real = createStore(`kezchat-fail-${Math.random()}`, 'kv');
    const flaky: UseStore = (mode, callback) => {
      if (fail && mode === 'readwrite') return Promise.reject(new Error('QuotaExceededError'));
      return real(mode, callback);
    };
    const storage = new Storage(flaky);
    const b = await bobInbox(storage);
    await b.inbox.enqueue(item(alice, A, textMessage('one'), { seq: 1 }));
    fail = true;
    await b.inbox.enqueue(item(alice, A, textMessage('two'), { seq: 2 }));
    await b.inbox.enqueue(item(alice, A, textMessage('three'), { seq: 3 }));
    expect(b.failures).toHaveLength(1);
    expect(b.failures[0]).toContain('QuotaExceededError');
    expect(b.inbox.cursor).toBe(1);
    expect(shown(b.model, alice.primary)).toEqual([['text', 'one']]);
    expect(await storage.get(keys.cursor)).toBe(1);
    // the next start reads them again
    fail = false;
    const again = await bobInbox(storage);
    await again.inbox.enqueue(item(alice, A, textMessage('two'), { seq: 2 }));
    expect(shown(again.model, alice.primary).map((m) => m[1])).toEqual(['one', 'two']);
  });

  it('items at or below the cursor are not handled again', async () => {
    const b = await bobInbox(freshStorage());
    const one = item(alice, A, textMessage('once'), { seq: 5 });
    await b.inbox.enqueue(one);
    await b.inbox.enqueue(one);
    expect(shown(b.model, alice.primary)).toEqual([['text', 'once']]);
  });
});

describe('early items (a live message during a restore)', () => {
  it('a text from a pinned sender ahead of the cursor shows at once; the cursor moves only in seq order; shown once', async () => {
    const b = await bobInbox(freshStorage());
    await b.inbox.enqueue(item(alice, A, textMessage('old one'), { seq: 1 }));
    const live = item(alice, A, textMessage('live'), { seq: 4 });
    await b.inbox.enqueue(live, true);
    expect(shown(b.model, alice.primary).map((m) => m[1])).toEqual(['old one', 'live']);
    expect(b.inbox.cursor).toBe(1);
    expect(await b.storage.get<number>(keys.cursor)).toBe(1);
    // the same item early again (the stream's reconnect) changes nothing
    await b.inbox.enqueue(live, true);
    // the catch-up reaches it: stored already, so only the cursor moves, and no replay warning
    await b.inbox.enqueue(item(alice, A, textMessage('old two'), { seq: 2 }));
    await b.inbox.enqueue(item(alice, A, textMessage('old three'), { seq: 3 }));
    await b.inbox.enqueue(live);
    expect(b.inbox.cursor).toBe(4);
    expect(await b.storage.get<number>(keys.cursor)).toBe(4);
    const texts = shown(b.model, alice.primary);
    expect(texts.filter((m) => m[1] === 'live')).toHaveLength(1);
    expect(texts.filter((m) => m[0] === 'warning')).toEqual([]);
    expect(texts).toHaveLength(4);
  });

  it('shown early before a reload, it is recognised as stored after it (no replay warning, shown once)', async () => {
    const storage = freshStorage();
    const b = await bobInbox(storage);
    await b.inbox.enqueue(item(alice, A, textMessage('old'), { seq: 1, ts: '2026-05-25T03:01:00Z', createdAt: '2026-05-25T03:01:00Z' }));
    const live = item(alice, A, textMessage('live'), { seq: 3, ts: '2026-05-25T03:03:00Z', createdAt: '2026-05-25T03:03:00Z' });
    await b.inbox.enqueue(live, true);
    const again = await bobInbox(storage);
    expect(again.inbox.cursor).toBe(1);
    await again.inbox.enqueue(item(alice, A, textMessage('middle'), { seq: 2, ts: '2026-05-25T03:02:00Z', createdAt: '2026-05-25T03:02:00Z' }));
    await again.inbox.enqueue(live);
    expect(again.inbox.cursor).toBe(3);
    expect(shown(again.model, alice.primary)).toEqual([
      ['text', 'old'],
      ['text', 'middle'],
      ['text', 'live'],
    ]);
  });

  it('what order could change waits for its turn: a first message (a pin) ahead of the cursor is not shown early', async () => {
    const b = await bobInbox(freshStorage());
    const first = item(alice, A, textMessage('hello'), { seq: 5 });
    await b.inbox.enqueue(first, true);
    expect(b.model.convs[alice.primary]).toBeUndefined();
    expect(b.contacts.keyOf(A)).toBeUndefined();
    expect(b.inbox.cursor).toBe(0);
    // in its turn it pins and shows, once
    await b.inbox.enqueue(first);
    expect(shown(b.model, alice.primary)).toEqual([['text', 'hello']]);
    expect(b.inbox.cursor).toBe(5);
  });

  it('a forged early item shows nothing early; in its turn it is the usual warning', async () => {
    const b = await bobInbox(freshStorage());
    await b.inbox.enqueue(item(alice, A, textMessage('old'), { seq: 1 }));
    const good = item(alice, A, textMessage('real'), { seq: 2 });
    const forged = { ...good, envelope: { ...(good.envelope as object), sig: 'ab'.repeat(64) } };
    await b.inbox.enqueue(forged, true);
    expect(shown(b.model, alice.primary)).toEqual([['text', 'old']]);
    expect(shown(b.model, REFUSED)).toEqual([]);
    await b.inbox.enqueue(forged);
    expect(shown(b.model, REFUSED).map((m) => m[0])).toEqual(['warning']);
    expect(b.inbox.cursor).toBe(2);
  });
});
