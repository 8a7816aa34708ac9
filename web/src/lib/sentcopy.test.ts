/**
 * The server's copy of what this account sent (`direction: "out"`), from
 * this browser or another device: shown as our own sent message in the
 * conversation with its recipient, once (the outbox's local copy is
 * recognised by its signature), and held to the trust rule like any item:
 * signed by our own key, opened as sender, the server's `to`/`to_primary`
 * checked against the envelope and the pins.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { InboxItem } from './api';
import { seal, type Envelope } from './crypto/envelope';
import { textMessage } from './crypto/plaintext';
import { Outbox } from './outbox';
import { Signer } from './signer';
import { CREATED, alice, bob, bobInbox, item, mallory } from './testkit';
import { REFUSED } from './types';

afterEach(() => vi.unstubAllGlobals());

const A = 'alice@kez.lat';
const M = 'mallory@kez.lat';

function outItem(
  envelope: Envelope,
  seq: number,
  options: { to?: string; toPrimary?: string; fromPrimary?: string } = {},
): InboxItem {
  return {
    seq,
    from: 'bob@kez.lat',
    from_primary: options.fromPrimary ?? bob.primary,
    envelope,
    created_at: CREATED,
    direction: 'out',
    to: options.to ?? A,
    to_primary: options.toPrimary ?? alice.primary,
  };
}

function sent(text: string, ts = '2026-05-25T03:00:02Z'): Envelope {
  return seal(bob, alice.primary, textMessage(text), { ts });
}

function shown(model: { msgs: Record<string, { dir: string; kind: string; text: string }[]> }, peer: string) {
  return (model.msgs[peer] ?? []).map((m) => [m.dir, m.kind, m.text] as const);
}

describe("the sender's copy in the web app", () => {
  it('a copy sent from another device is our own sent message in the conversation with its recipient', async () => {
    const b = await bobInbox();
    await b.inbox.enqueue(item(alice, A, textMessage('hi bob'), { seq: 1, ts: '2026-05-25T03:00:01Z' }));
    await b.inbox.enqueue(outItem(sent('hi alice'), 2));
    expect(shown(b.model, alice.primary)).toEqual([
      ['in', 'text', 'hi bob'],
      ['out', 'text', 'hi alice'],
    ]);
    expect(b.model.msgs[alice.primary][1].status).toBe('sent');
    // our own message is never unread
    expect(b.model.convs[alice.primary].unread).toBe(1);
    expect(shown(b.model, REFUSED)).toEqual([]);
  });

  it('a fresh log-in restores both directions, in order, pinning the recipient only as the registry names it', async () => {
    const b = await bobInbox();
    await b.inbox.enqueue(outItem(sent('first, from me', '2026-05-25T03:00:00Z'), 1));
    await b.inbox.enqueue(item(alice, A, textMessage('then alice'), { seq: 2, ts: '2026-05-25T03:00:01Z' }));
    expect(b.contacts.keyOf(A)).toBe(alice.primary);
    expect(b.model.convs[alice.primary].fqhn).toBe(A);
    expect(shown(b.model, alice.primary)).toEqual([
      ['out', 'text', 'first, from me'],
      ['in', 'text', 'then alice'],
    ]);
  });

  it("the outbox's own message is not shown twice when its copy comes back", async () => {
    const b = await bobInbox();
    await b.inbox.enqueue(item(alice, A, textMessage('hi bob'), { seq: 1 }));
    const posted: Envelope[] = [];
    vi.stubGlobal('fetch', async (_url: string, init: RequestInit) => {
      posted.push(JSON.parse(String(init.body)).envelope);
      return new Response(JSON.stringify({ seq: 9, created_at: CREATED }), { status: 201 });
    });
    const outbox = new Outbox(new Signer(bob, 'kez.lat'), 'bob', b.storage, b.history, () => null);
    await outbox.sendText(alice.primary, 'sent from here');
    expect(posted).toHaveLength(1);
    await b.inbox.enqueue(outItem(posted[0], 2));
    expect(shown(b.model, alice.primary)).toEqual([
      ['in', 'text', 'hi bob'],
      ['out', 'text', 'sent from here'],
    ]);
    // and after a reload too (the signature is stored with the message)
    const again = await bobInbox(b.storage);
    expect(shown(again.model, alice.primary)).toHaveLength(2);
    expect(again.inbox.cursor).toBe(2);
  });

  it('receipts and file pieces sent from another device show nothing', async () => {
    const b = await bobInbox();
    await b.inbox.enqueue(item(alice, A, textMessage('hi bob'), { seq: 1 }));
    const sig = (item(alice, A, textMessage('x')).envelope as Envelope).sig;
    await b.inbox.enqueue(outItem(seal(bob, alice.primary, { type: 'receipt', status: 'delivered', sigs: [sig] }), 2));
    expect(shown(b.model, alice.primary)).toEqual([['in', 'text', 'hi bob']]);
    expect(shown(b.model, REFUSED)).toEqual([]);
    expect(b.inbox.cursor).toBe(2);
  });

  it('a hostile server cannot pass anything off as our own sent message', async () => {
    const b = await bobInbox();
    await b.inbox.enqueue(item(alice, A, textMessage('hi bob'), { seq: 1 }));
    await b.inbox.enqueue(item(mallory, M, textMessage('hi, mallory'), { seq: 2 }));
    // someone else's envelope dressed up as ours
    await b.inbox.enqueue(outItem(seal(mallory, alice.primary, textMessage('I am bob')), 3, { fromPrimary: bob.primary }));
    // a corrupted signature
    const forged = { ...sent('forged') };
    forged.sig = forged.sig.slice(0, -1) + (forged.sig.endsWith('0') ? '1' : '0');
    await b.inbox.enqueue(outItem(forged, 4));
    // our message to alice relabelled as to mallory (pinned to another key)
    await b.inbox.enqueue(outItem(sent('to alice, really'), 5, { to: M }));
    // the server names another recipient's key than the envelope's
    await b.inbox.enqueue(outItem(sent('re-keyed'), 6, { to: M, toPrimary: mallory.primary }));
    // a label that is not a handle
    await b.inbox.enqueue(outItem(sent('zero width'), 7, { to: 'alice@kez.lat\u200b' }));
    // a replay of a copy under a new seq
    const once = sent('once');
    await b.inbox.enqueue(outItem(once, 8));
    await b.inbox.enqueue(outItem(once, 9));
    const refused = shown(b.model, REFUSED);
    expect(refused.map((m) => m[1])).toEqual(['warning', 'warning']);
    expect(refused.some((m) => m[2].includes('not sent by your key'))).toBe(true);
    expect(refused.some((m) => m[2].includes('signature does not verify'))).toBe(true);
    const withAlice = shown(b.model, alice.primary);
    expect(withAlice.filter((m) => m[1] !== 'warning')).toEqual([
      ['in', 'text', 'hi bob'],
      ['out', 'text', 'once'],
    ]);
    const warnings = withAlice.filter((m) => m[1] === 'warning').map((m) => m[2]);
    expect(warnings).toHaveLength(4);
    expect(warnings[0]).toContain('as sent to "mallory@kez.lat"');
    expect(warnings[1]).toContain('went to the key');
    expect(warnings[2]).toContain('not a handle');
    expect(warnings[3]).toContain('replay');
    // nothing is shown as sent to mallory, and no pin moved
    expect(shown(b.model, mallory.primary)).toEqual([['in', 'text', 'hi, mallory']]);
    expect(b.contacts.keyOf(A)).toBe(alice.primary);
    expect(b.contacts.keyOf(M)).toBe(mallory.primary);
  });

  it('a copy marked undeliverable (and the server\'s notice repeating it) marks the sent message failed, once, with no replay warning', async () => {
    const b = await bobInbox();
    await b.inbox.enqueue(item(alice, A, textMessage('hi bob'), { seq: 1, ts: '2026-05-25T03:00:01Z' }));
    const envelope = sent('are you there?');
    await b.inbox.enqueue(outItem(envelope, 2));
    expect(b.model.msgs[alice.primary][1].status).toBe('sent');
    await b.inbox.enqueue({ ...outItem(envelope, 3), undeliverable: true });
    const msgs = b.model.msgs[alice.primary];
    expect(shown(b.model, alice.primary)).toEqual([
      ['in', 'text', 'hi bob'],
      ['out', 'text', 'are you there?'],
    ]);
    expect([msgs[1].status, msgs[1].undeliverable, msgs[1].transient]).toEqual(['failed', true, false]);
    expect(msgs[1].error).toContain('kez.lat never took this message');
    expect(shown(b.model, REFUSED)).toEqual([]);
    // history read again from the start on a fresh log-in: the marked copy alone says it
    const fresh = await bobInbox();
    await fresh.inbox.enqueue(item(alice, A, textMessage('hi bob'), { seq: 1, ts: '2026-05-25T03:00:01Z' }));
    await fresh.inbox.enqueue({ ...outItem(envelope, 2), undeliverable: true });
    await fresh.inbox.enqueue({ ...outItem(envelope, 3), undeliverable: true });
    expect(shown(fresh.model, alice.primary)).toEqual([
      ['in', 'text', 'hi bob'],
      ['out', 'text', 'are you there?'],
    ]);
    expect(fresh.model.msgs[alice.primary][1].status).toBe('failed');
    expect(shown(fresh.model, REFUSED)).toEqual([]);
  });
});
