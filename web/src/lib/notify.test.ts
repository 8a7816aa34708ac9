/** Notifications: who wrote in the title, text only when asked, none for the open conversation. */
import { describe, expect, it } from 'vitest';
import { Notifier, notice, type NotificationApi } from './notify';
import type { Msg } from './types';

const text = (t: string): Msg => ({ id: '1', dir: 'in', kind: 'text', text: t, ts: '2026-05-25T03:00:00Z' });

function fakeApi(permission: NotificationPermission) {
  const shown: { title: string; options?: NotificationOptions; n: { onclick: ((e: Event) => unknown) | null; closed: boolean } }[] = [];
  class Fake {
    static permission = permission;
    static requestPermission = async () => permission;
    onclick: ((e: Event) => unknown) | null = null;
    closed = false;
    constructor(title: string, options?: NotificationOptions) {
      shown.push({ title, options, n: this });
    }
    close() {
      this.closed = true;
    }
  }
  return { api: Fake as unknown as NotificationApi, shown };
}

describe('notifications', () => {
  it('title the handle; the text only when the person opted in', () => {
    expect(notice('p', 'bob@kez.lat', text('secret plans'), false)).toEqual({ title: 'bob@kez.lat', body: 'New message', tag: 'kezchat:p' });
    expect(notice('p', 'bob@kez.lat', text('secret plans'), true).body).toBe('secret plans');
  });

  it('none for the conversation being read, none without permission, none for warnings; a click opens it', () => {
    const opened: string[] = [];
    let showText = false;
    const { api, shown } = fakeApi('granted');
    const notifier = new Notifier(
      { showText: () => showText, looking: (peer) => peer === 'open', handleOf: (peer) => `${peer}@kez.lat`, open: (peer) => opened.push(peer) },
      api,
    );
    notifier.arrived('open', text('seen already'));
    notifier.arrived('other', { ...text('forged'), kind: 'warning' });
    notifier.arrived('other', { ...text('mine'), dir: 'out' });
    expect(shown).toEqual([]);
    notifier.arrived('other', text('hello'));
    showText = true;
    notifier.arrived('other', text('hello again'));
    expect(shown.map((s) => [s.title, s.options?.body])).toEqual([['other@kez.lat', 'New message'], ['other@kez.lat', 'hello again']]);
    shown[0].n.onclick!(new Event('click'));
    expect(opened).toEqual(['other']);
    expect(shown[0].n.closed).toBe(true);

    const denied = fakeApi('default');
    new Notifier({ showText: () => true, looking: () => false, handleOf: () => 'x@kez.lat', open: () => undefined }, denied.api).arrived('x', text('hi'));
    expect(denied.shown).toEqual([]);
  });
});
