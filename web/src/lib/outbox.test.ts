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
  const outbox = new Outbox(new Signer(alice, 'kez.lat'), 'alice', storage, history);
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
