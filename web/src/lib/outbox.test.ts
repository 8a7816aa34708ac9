/**
 * Sending: the message is on disk before it is shown, and each status is
 * on disk before it is shown, so a reload at any moment keeps it (the
 * "sent message vanished after a reload" bug). The server is a fetch
 * stand-in here; the browser test runs the real one.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { History, type Model } from './history';
import { Outbox } from './outbox';
import { Signer } from './signer';
import { alice, bob, freshStorage } from './testkit';
import type { Msg } from './types';
import { signedText } from './crypto/auth';

afterEach(() => vi.unstubAllGlobals());

async function setUp() {
  const storage = freshStorage();
  const model: Model = { convs: {}, msgs: {} };
  const history = new History(model, storage);
  await history.commit(history.put(history.fresh(bob.primary, 'bob@kez.lat', '2026-05-25T03:00:00Z')));
  const outbox = new Outbox(new Signer(alice, 'kez.lat'), 'alice', storage, history, () => null);
  return { storage, model, history, outbox };
}

describe('the outbox', () => {
  it('stores the message before it is sent, and "sent" before it shows', async () => {
    const s = await setUp();
    const seenAtSend: (Msg | undefined)[] = [];
    const headers: string[] = [];
    vi.stubGlobal('fetch', async (_url: string, init: RequestInit) => {
      const stored = await s.storage.entriesWith<Msg>('msg:');
      seenAtSend.push(stored[0]?.[1]);
      headers.push(new Headers(init.headers).get('x-kez-auth') ?? '');
      return new Response(JSON.stringify({ seq: 7, created_at: '2026-05-25T03:00:01Z' }), { status: 201 });
    });
    await s.outbox.sendText(bob.primary, 'hello bob');
    expect(seenAtSend[0]?.text).toBe('hello bob');
    expect(seenAtSend[0]?.status).toBe('sending');
    // a reload now (a new History on the same store) still has it, as sent
    const again = new History({ convs: {}, msgs: {} }, s.storage);
    await again.load();
    expect(again.model.msgs[bob.primary].map((m) => [m.text, m.status, m.seq])).toEqual([['hello bob', 'sent', 7]]);
    expect(s.model.msgs[bob.primary][0].status).toBe('sent');
    expect(headers[0]).toMatch(/^\d+:[0-9a-f]{128}$/);
  });

  it('a reload in the middle of a send finds the message, failed with a reason (to retry)', async () => {
    const s = await setUp();
    let release: () => void = () => undefined;
    vi.stubGlobal('fetch', () => new Promise<Response>((resolve) => (release = () => resolve(new Response('{}', { status: 500 })))));
    const sending = s.outbox.sendText(bob.primary, 'in flight');
    await new Promise((r) => setTimeout(r, 50));
    const again = new History({ convs: {}, msgs: {} }, s.storage);
    await again.load();
    const [msg] = again.model.msgs[bob.primary];
    expect([msg.text, msg.status]).toEqual(['in flight', 'failed']);
    expect(msg.error).toContain('before the page closed');
    release();
    await sending;
    expect(s.model.msgs[bob.primary][0].status).toBe('failed');
  });

  it('signs the named form: the server domain on the second line', () => {
    expect(signedText('POST', '/v1/messages', ['ab'], 1, 'kez.lat')).toBe('POST\n@kez.lat\n/v1/messages\nab\n1');
    expect(signedText('POST', '/v1/messages', ['ab'], 1)).toBe('POST\n/v1/messages\nab\n1');
  });
});

describe('sending again when the link is back', () => {
  it('resends a send that failed for lack of a server exactly once, with the same idempotency key', async () => {
    const s = await setUp();
    const keys: string[] = [];
    let up = false;
    vi.stubGlobal('fetch', async (_url: string, init: RequestInit) => {
      keys.push(JSON.parse(String(init.body)).idempotency_key);
      if (!up) throw new TypeError('Failed to fetch');
      return new Response(JSON.stringify({ seq: 9, created_at: '2026-05-25T03:00:01Z' }), { status: 201 });
    });
    await s.outbox.sendText(bob.primary, 'while down');
    const [msg] = s.model.msgs[bob.primary];
    expect([msg.status, msg.transient]).toEqual(['failed', true]);
    up = true;
    // the link reports "live" twice in a row: still sent once
    await Promise.all([s.outbox.resend(), s.outbox.resend()]);
    expect(s.model.msgs[bob.primary].map((m) => [m.status, m.seq])).toEqual([['sent', 9]]);
    expect(keys).toEqual([`${msg.id}:0`, `${msg.id}:0`]);
    await s.outbox.resend();
    expect(keys.length).toBe(2);
  });

  it('does not resend what the server refused (a 4xx), and resends what a reload interrupted', async () => {
    const s = await setUp();
    let calls = 0;
    vi.stubGlobal('fetch', async () => {
      calls += 1;
      return new Response('{"error":{"code":"unknown_recipient","message":"no such handle"}}', { status: 404 });
    });
    await s.outbox.sendText(bob.primary, 'refused');
    expect(s.model.msgs[bob.primary][0].transient).toBe(false);
    await s.outbox.resend();
    expect(calls).toBe(1);

    // a send cut short by a reload is failed on load, and sent once the link is live
    let release: () => void = () => undefined;
    vi.stubGlobal('fetch', () => new Promise<Response>((resolve) => (release = () => resolve(new Response('{}', { status: 500 })))));
    const cut = s.outbox.sendText(bob.primary, 'cut short');
    await new Promise((r) => setTimeout(r, 50));
    const model: Model = { convs: {}, msgs: {} };
    const again = new History(model, s.storage);
    await again.load();
    const outbox = new Outbox(new Signer(alice, 'kez.lat'), 'alice', s.storage, again, () => null);
    vi.stubGlobal('fetch', async () => new Response(JSON.stringify({ seq: 11, created_at: '2026-05-25T03:00:01Z' }), { status: 201 }));
    await outbox.resend();
    expect(model.msgs[bob.primary].map((m) => [m.text, m.status])).toEqual([['refused', 'failed'], ['cut short', 'sent']]);
    release();
    await cut;
  });

  it('after a reload, a part the server already has (409 idempotency_conflict for the new sealing) counts as sent', async () => {
    const s = await setUp();
    let release: () => void = () => undefined;
    // the first attempt reaches the server, but the page closes before the answer
    vi.stubGlobal('fetch', () => new Promise<Response>((resolve) => (release = () => resolve(new Response('{}', { status: 500 })))));
    const cut = s.outbox.sendText(bob.primary, 'arrived, answer lost');
    await new Promise((r) => setTimeout(r, 50));
    const model: Model = { convs: {}, msgs: {} };
    const again = new History(model, s.storage);
    await again.load();
    const outbox = new Outbox(new Signer(alice, 'kez.lat'), 'alice', s.storage, again, () => null);
    vi.stubGlobal('fetch', async () => new Response('{"error":{"code":"idempotency_conflict","message":"used"}}', { status: 409 }));
    await outbox.resend();
    expect(model.msgs[bob.primary].map((m) => [m.text, m.status])).toEqual([['arrived, answer lost', 'sent']]);
    release();
    await cut;
  });
});
