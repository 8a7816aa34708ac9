/**
 * Receipts and read state (SPEC §11.3): a peer's receipt moves only our
 * own messages to that peer on, never down; a receipt never pins, opens a
 * conversation or counts as unread; the server's copy of a read receipt
 * this account sent makes another device's unread count agree; receipts
 * going out are batched and not repeated for what another device told.
 */
import { describe, expect, it } from 'vitest';
import type { InboxItem } from './api';
import { seal, type Envelope } from './crypto/envelope';
import { textMessage } from './crypto/plaintext';
import { MAX_RECEIPT_SIGS, ReceiptQueue, parseReceipt, raised, readHere, receipt, untold } from './receipts';
import { RestoreProgress, restoreText } from './restore';
import { CREATED, alice, bob, bobInbox, item, mallory } from './testkit';
import { REFUSED, type Msg } from './types';

const A = 'alice@kez.lat';
const M = 'mallory@kez.lat';

/** The server's copy of something bob sent to `to` (from any of his devices). */
function copyOf(envelope: Envelope, seq: number, to = A, toPrimary = alice.primary): InboxItem {
  return { seq, from: 'bob@kez.lat', from_primary: bob.primary, envelope, created_at: CREATED, direction: 'out', to, to_primary: toPrimary };
}

function sigOf(i: InboxItem): string {
  return (i.envelope as Envelope).sig;
}

type Device = Awaited<ReturnType<typeof bobInbox>>;

function unread(d: Device, peer = alice.primary): number {
  return d.model.convs[peer]?.unread ?? 0;
}

function statuses(d: Device, peer = alice.primary): (string | undefined)[] {
  return (d.model.msgs[peer] ?? []).filter((m) => m.dir === 'out').map((m) => m.status);
}

describe('receipts from a peer', () => {
  it('move our sent messages on (sent → delivered → read), never back, and show nothing', async () => {
    const b = await bobInbox();
    const mine = copyOf(seal(bob, alice.primary, textMessage('hi alice')), 1);
    await b.inbox.enqueue(mine);
    await b.inbox.enqueue(item(alice, A, textMessage('hi bob'), { seq: 2 }));
    expect(statuses(b)).toEqual(['sent']);
    await b.inbox.enqueue(item(alice, A, receipt('delivered', [sigOf(mine)]), { seq: 3 }));
    expect(statuses(b)).toEqual(['delivered']);
    await b.inbox.enqueue(item(alice, A, receipt('read', [sigOf(mine)]), { seq: 4 }));
    expect(statuses(b)).toEqual(['read']);
    // a late delivered receipt does not take it back
    await b.inbox.enqueue(item(alice, A, receipt('delivered', [sigOf(mine)]), { seq: 5 }));
    expect(statuses(b)).toEqual(['read']);
    // receipts are not messages: nothing shown, nothing unread beyond alice's one message
    expect(b.model.msgs[alice.primary].map((m) => m.text).sort()).toEqual(['hi alice', 'hi bob']);
    expect(unread(b)).toBe(1);
    // and the status is stored: a reload shows it
    const again = await bobInbox(b.storage);
    expect(statuses(again)).toEqual(['read']);
  });

  it('only from the key pinned for the peer, and only for messages sent to that peer', async () => {
    const b = await bobInbox();
    const toAlice = copyOf(seal(bob, alice.primary, textMessage('for alice')), 1);
    await b.inbox.enqueue(toAlice);
    await b.inbox.enqueue(item(mallory, M, textMessage('hi from mallory'), { seq: 2 }));
    // mallory (pinned, but not alice) claims alice read it: nothing moves
    await b.inbox.enqueue(item(mallory, M, receipt('read', [sigOf(toAlice)]), { seq: 3 }));
    expect(statuses(b)).toEqual(['sent']);
    // a receipt forged under alice's label but signed by mallory is refused
    await b.inbox.enqueue(item(mallory, A, receipt('read', [sigOf(toAlice)]), { seq: 4, fromPrimary: mallory.primary }));
    expect(statuses(b)).toEqual(['sent']);
    expect(b.model.msgs[mallory.primary].some((m) => m.kind === 'warning')).toBe(true);
  });

  it('from someone not pinned: no conversation, no pin, no unread, no warning', async () => {
    const b = await bobInbox();
    await b.inbox.enqueue(item(mallory, M, receipt('delivered', ['ab'.repeat(64)]), { seq: 1 }));
    expect(b.model.convs).toEqual({});
    expect(b.contacts.keyOf(M)).toBeUndefined();
    expect(b.model.msgs[REFUSED] ?? []).toEqual([]);
    expect(b.inbox.cursor).toBe(1);
  });

  it("a receipt's key directory head is compared (the banner), but it adds no warning message", async () => {
    const compared: unknown[] = [];
    const b = await bobInbox(undefined, undefined, undefined, {
      gossip: async (head) => {
        compared.push(head);
        return 'the server is showing people different key directories';
      },
    });
    const mine = copyOf(seal(bob, alice.primary, textMessage('hi')), 1);
    await b.inbox.enqueue(mine);
    const head = { size: 3, root: 'ab'.repeat(32) };
    await b.inbox.enqueue(item(alice, A, { ...receipt('read', [sigOf(mine)]), head }, { seq: 2 }));
    expect(compared).toEqual([head]);
    expect(statuses(b)).toEqual(['read']);
    expect(b.model.msgs[alice.primary].filter((m) => m.kind === 'warning')).toEqual([]);
  });

  it('a malformed receipt from a pinned peer is a warning that is not unread', async () => {
    const b = await bobInbox();
    await b.inbox.enqueue(item(alice, A, textMessage('hi'), { seq: 1 }));
    await b.inbox.enqueue(item(alice, A, { type: 'receipt', status: 'seen', sigs: ['x'] }, { seq: 2 }));
    const warning = b.model.msgs[alice.primary].find((m) => m.kind === 'warning');
    expect(warning?.text).toContain('malformed');
    expect(unread(b)).toBe(1);
  });
});

describe('read state across devices', () => {
  it("the server's copy of a read receipt makes another device's unread count agree", async () => {
    // two devices of bob's, fed the same inbox
    const here = await bobInbox();
    const there = await bobInbox();
    const both = async (i: InboxItem) => {
      await here.inbox.enqueue(i);
      await there.inbox.enqueue(i);
    };
    const m1 = item(alice, A, textMessage('one'), { seq: 1, ts: '2026-05-25T03:00:01Z' });
    const m2 = item(alice, A, textMessage('two'), { seq: 2, ts: '2026-05-25T03:00:02Z' });
    await both(m1);
    await both(m2);
    expect([unread(here), unread(there)]).toEqual([2, 2]);
    // "here" shows the conversation: both read, and a read receipt is due for both
    const { change, sigs } = readHere(here.history, alice.primary, here.inbox.sigOf);
    await here.history.commit(change);
    expect(sigs).toEqual([sigOf(m1), sigOf(m2)]);
    expect(unread(here)).toBe(0);
    // it goes to alice; the server keeps bob's copy, which both devices read
    await both(copyOf(seal(bob, alice.primary, receipt('read', sigs)), 3));
    expect([unread(here), unread(there)]).toEqual([0, 0]);
    // neither device tells alice again
    expect(readHere(there.history, alice.primary, there.inbox.sigOf).sigs).toEqual([]);
    expect(there.inbox.messageOf(alice.primary, sigOf(m1))?.told).toBe('read');
    // a third message is unread on both until read
    await both(item(alice, A, textMessage('three'), { seq: 4, ts: '2026-05-25T03:00:04Z' }));
    expect([unread(here), unread(there)]).toEqual([1, 1]);
    // and the state survives a reload
    const reloaded = await bobInbox(there.storage);
    expect(unread(reloaded)).toBe(1);
    expect(reloaded.model.msgs[alice.primary].filter((m: Msg) => m.read === false).map((m: Msg) => m.text)).toEqual(['three']);
  });

  it('receipts are not sent again for what another device told', async () => {
    const b = await bobInbox();
    const m1 = item(alice, A, textMessage('one'), { seq: 1 });
    const m2 = item(alice, A, textMessage('two'), { seq: 2 });
    await b.inbox.enqueue(m1);
    await b.inbox.enqueue(m2);
    await b.inbox.enqueue(copyOf(seal(bob, alice.primary, receipt('delivered', [sigOf(m1)])), 3));
    const both = [sigOf(m1), sigOf(m2)];
    expect(untold(b.history, alice.primary, 'delivered', both, b.inbox.sigOf)).toEqual([sigOf(m2)]);
    expect(untold(b.history, alice.primary, 'read', both, b.inbox.sigOf)).toEqual(both);
  });

  it('read receipts off: a read note to ourselves reads the messages on every device, pins nobody, tells no one', async () => {
    const b = await bobInbox();
    const m1 = item(alice, A, textMessage('one'), { seq: 1 });
    const m2 = item(mallory, M, textMessage('two'), { seq: 2 });
    await b.inbox.enqueue(m1);
    await b.inbox.enqueue(m2);
    expect([unread(b), unread(b, mallory.primary)]).toEqual([1, 1]);
    await b.inbox.enqueue(item(bob, 'bob@kez.lat', receipt('read', [sigOf(m1), sigOf(m2)]), { seq: 3 }));
    expect([unread(b), unread(b, mallory.primary)]).toEqual([0, 0]);
    expect(b.contacts.keyOf('bob@kez.lat')).toBeUndefined();
    expect(Object.keys(b.model.convs).sort()).toEqual([alice.primary, mallory.primary].sort());
    expect(b.model.msgs[REFUSED] ?? []).toEqual([]);
    // the peer was not told: a read receipt is still due if read receipts come back on
    expect(b.inbox.messageOf(alice.primary, sigOf(m1))?.told).toBeUndefined();
    // a note signed by someone else but addressed as ours changes nothing
    await b.inbox.enqueue(item(alice, A, textMessage('three'), { seq: 4 }));
    const m3 = b.inbox.sigOf(b.model.msgs[alice.primary].at(-1)!)!;
    await b.inbox.enqueue(item(mallory, 'bob@kez.lat', receipt('read', [m3]), { seq: 5 }));
    expect(unread(b)).toBe(1);
  });

  it('a delivered receipt from another device marks messages told, not read', async () => {
    const b = await bobInbox();
    const m1 = item(alice, A, textMessage('one'), { seq: 1 });
    await b.inbox.enqueue(m1);
    await b.inbox.enqueue(copyOf(seal(bob, alice.primary, receipt('delivered', [sigOf(m1)])), 2));
    expect(unread(b)).toBe(1);
    expect(b.inbox.messageOf(alice.primary, sigOf(m1))?.told).toBe('delivered');
    // a receipt of ours naming messages of another conversation changes nothing there
    await b.inbox.enqueue(item(mallory, M, textMessage('hi'), { seq: 3 }));
    const m3sig = b.inbox.sigOf(b.model.msgs[mallory.primary][0])!;
    await b.inbox.enqueue(copyOf(seal(bob, alice.primary, receipt('read', [m3sig])), 4));
    expect(unread(b, mallory.primary)).toBe(1);
  });

  it('the inbox tells of each stored message (for delivered receipts), not of receipts or our own copies', async () => {
    const b = await bobInbox();
    const told: [string, string, boolean][] = [];
    b.inbox.hooks = { received: (peer, sig, read) => told.push([peer, sig, read]) };
    const m1 = item(alice, A, textMessage('one'), { seq: 1 });
    await b.inbox.enqueue(m1);
    await b.inbox.enqueue(copyOf(seal(bob, alice.primary, textMessage('mine')), 2));
    await b.inbox.enqueue(item(alice, A, receipt('delivered', ['ab'.repeat(64)]), { seq: 3 }));
    expect(told).toEqual([[alice.primary, sigOf(m1), false]]);
  });
});

describe('receipts going out', () => {
  const s = (n: number) => n.toString(16).padStart(2, '0').repeat(64);

  it('are batched: one receipt per peer and status, each signature once', async () => {
    const sent: [string, string, string[]][] = [];
    const q = new ReceiptQueue(async (peer, status, sigs) => void sent.push([peer, status, sigs]), undefined, 10_000);
    q.add('p1', 'delivered', [s(1), s(2)]);
    q.add('p1', 'delivered', [s(2), s(3)]);
    q.add('p2', 'delivered', [s(4)]);
    q.add('p1', 'read', [s(1)]);
    await q.flush();
    q.clear();
    expect(sent).toEqual([
      ['p1', 'delivered', [s(1), s(2), s(3)]],
      ['p2', 'delivered', [s(4)]],
      ['p1', 'read', [s(1)]],
    ]);
  });

  it('skip what another device told meanwhile, and keep what failed for the next batch', async () => {
    const sent: string[][] = [];
    let fail = true;
    const q = new ReceiptQueue(
      async (_p, _st, sigs) => {
        if (fail) throw new Error('unreachable');
        sent.push(sigs);
      },
      (_p, _st, sigs) => sigs.filter((sig) => sig !== s(9)),
      10_000,
    );
    q.add('p', 'delivered', [s(1), s(9)]);
    await q.flush();
    expect(sent).toEqual([]);
    expect(q.pending).toBe(1);
    fail = false;
    q.hold(true);
    q.add('p', 'delivered', [s(2)]);
    await q.flush();
    q.clear();
    expect(sent).toEqual([[s(1), s(2)]]);
  });

  it('split above 250 signatures (or as told, never above 1000)', async () => {
    const sent: number[] = [];
    const many = Array.from({ length: 1500 }, (_, i) => i.toString(16).padStart(128, '0'));
    const q = new ReceiptQueue(async (_p, _st, sigs) => void sent.push(sigs.length), undefined, 10_000);
    q.add('p', 'read', many);
    await q.flush();
    expect(sent).toEqual([250, 250, 250, 250, 250, 250]);
    sent.length = 0;
    const big = new ReceiptQueue(async (_p, _st, sigs) => void sent.push(sigs.length), undefined, 10_000, MAX_RECEIPT_SIGS);
    big.add('p', 'read', many);
    await big.flush();
    expect(sent).toEqual([1000, 500]);
    q.clear();
    big.clear();
  });
});

describe('receipt plaintexts and statuses', () => {
  it('parses only well-formed receipts', () => {
    const sig = 'ab'.repeat(64);
    expect(parseReceipt(receipt('read', [sig]))).toEqual({ status: 'read', sigs: [sig] });
    expect(parseReceipt({ type: 'receipt', status: 'seen', sigs: [sig] })).toBeNull();
    expect(parseReceipt({ type: 'receipt', status: 'read', sigs: [] })).toBeNull();
    expect(parseReceipt({ type: 'receipt', status: 'read', sigs: ['AB'.repeat(64)] })).toBeNull();
    expect(parseReceipt({ type: 'receipt', status: 'read', sigs: 'x' })).toBeNull();
  });

  it('never lowers a status; a failed send the peer has is delivered after all', () => {
    expect(raised('sent', 'delivered')).toBe('delivered');
    expect(raised('read', 'delivered')).toBe('read');
    expect(raised('failed', 'delivered')).toBe('delivered');
    expect(raised('sending', 'read')).toBe('read');
  });
});

describe('restore progress', () => {
  it('says how many of how many, from the inbox’s last seq, and ends on the empty page', () => {
    const seen: (string | null)[] = [];
    const p = new RestoreProgress((x) => seen.push(x && restoreText(x)));
    p.paged(200, 5000, 0);
    for (let c = 1; c <= 200; c += 1) p.stored(c);
    expect(seen.at(-1)).toBe('Restoring 200 of 5,000');
    p.paged(200, 5001, 200);
    p.stored(1234);
    expect(seen.at(-1)).toBe('Restoring 1,234 of 5,001');
    p.paged(0, 5001, 5001);
    expect(seen.at(-1)).toBeNull();
    expect(p.active).toBe(false);
  });

  it('shows nothing for a short catch-up, and only what is done when the server does not say the total', () => {
    const seen: (string | null)[] = [];
    const short = new RestoreProgress((x) => seen.push(x && restoreText(x)));
    short.paged(10, 30, 20);
    short.stored(30);
    expect(seen).toEqual([]);
    const older = new RestoreProgress((x) => seen.push(x && restoreText(x)));
    older.paged(200, undefined, 0);
    older.stored(150);
    expect(seen.at(-1)).toBe('Restoring 150 messages');
  });
});
