/**
 * One record per message: adding a message writes that message and its
 * conversation, never the conversation's other messages.
 */
import { describe, expect, it } from 'vitest';
import { History, plain, type Model } from './history';
import { freshStorage } from './testkit';
import type { Msg } from './types';

describe('history', () => {
  it('writes one record per message, in order of time, and reads them back', async () => {
    const storage = freshStorage();
    const model: Model = { convs: {}, msgs: {} };
    const h = new History(model, storage);
    const peer = 'ed25519:' + 'ab'.repeat(32);
    await h.commit(h.put(h.fresh(peer, 'alice@kez.lat', '2026-05-25T03:00:00Z')));
    const msg = (id: string, ts: string): Msg => ({ id, dir: 'in', kind: 'text', text: id, ts });
    for (let i = 0; i < 20; i++) await h.commit(h.add(peer, msg(`in:${i}`, `2026-05-25T03:00:${String(40 - i).padStart(2, '0')}Z`)));
    const c = h.add(peer, msg('in:late', '2026-05-25T03:01:00Z'));
    expect(c.puts.map(([k]) => k)).toEqual([`msg:${peer}:in:late`, `conv:${peer}`]);
    await h.commit(c);
    expect(model.msgs[peer][0].id).toBe('in:19');
    expect(model.msgs[peer].at(-1)!.id).toBe('in:late');
    expect(model.convs[peer].unread).toBe(21);
    await h.commit(h.read(peer));
    const again = new History({ convs: {}, msgs: {} }, storage);
    await again.load();
    expect(plain(again.model.msgs[peer]).map((m) => m.id)).toEqual(plain(model.msgs[peer]).map((m) => m.id));
    expect(again.model.convs[peer].unread).toBe(0);
    expect(again.model.convs[peer].lastText).toBe('in:late');
  });
});
