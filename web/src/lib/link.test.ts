/**
 * The link: catch-up from the stored cursor, one item at a time into the
 * pipeline, then the stream; the named signing form first, the older one
 * only when the server refuses the named one.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Link } from './link';
import { Signer } from './signer';
import { alice } from './testkit';
import type { InboxItem } from './api';
import { verifyBytes } from './crypto/keys';
import { utf8 } from './crypto/bytes';

afterEach(() => vi.unstubAllGlobals());

function fakeSource() {
  return { close: () => undefined, addEventListener: () => undefined, onopen: null, onerror: null, readyState: 0 };
}

describe('the link', () => {
  it('catches up page by page from the cursor, then opens the stream; falls back to the older form on 401', async () => {
    const signed: string[] = [];
    const pages: Record<number, InboxItem[]> = { 0: [{ seq: 1 } as InboxItem, { seq: 2 } as InboxItem], 2: [] };
    vi.stubGlobal('fetch', async (url: string, init: RequestInit) => {
      const auth = new Headers(init.headers).get('x-kez-auth')!;
      const [ts, sig] = auth.split(':');
      const since = Number(/since=(\d+)/.exec(url)![1]);
      const named = `GET\n@kez.lat\n/v1/inbox/alice\nsince=${since}\n${ts}`;
      const old = `GET\n/v1/inbox/alice\nsince=${since}\n${ts}`;
      signed.push(verifyBytes(alice.primary, utf8(named), sig) ? 'named' : verifyBytes(alice.primary, utf8(old), sig) ? 'old' : '?');
      // a server from before the named form
      if (signed.at(-1) !== 'old') return new Response('{"error":{"code":"unauthorized","message":"no"}}', { status: 401 });
      return new Response(JSON.stringify({ messages: pages[since], next: since }), { status: 200 });
    });
    let cursor = 0;
    const got: number[] = [];
    const urls: string[] = [];
    const signer = new Signer(alice, 'kez.lat');
    const link = new Link(signer, 'alice', 'alice@kez.lat', {
      deliver: async (item) => {
        got.push(item.seq);
        cursor = item.seq;
      },
      cursor: () => cursor,
      status: () => undefined,
      refused: () => undefined,
    }, (url) => {
      urls.push(url);
      return fakeSource();
    });
    link.start();
    await vi.waitFor(() => expect(urls).toHaveLength(1));
    link.stop();
    expect(got).toEqual([1, 2]);
    expect(signed).toEqual(['named', 'old', 'old']);
    expect(signer.named).toBe(false);
    expect(urls[0]).toContain('since=2');
    // signed with exp, so the browser's own reconnects can reuse it for hours
    expect(urls[0]).toMatch(/&exp=\d+&/);
  });
});
