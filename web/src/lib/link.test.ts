/**
 * The link: catch-up from the stored cursor, one item at a time into the
 * pipeline, then the stream; the named signing form first, the older one
 * only when the server refuses the named one.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Link } from './link';
import type { OpenNats } from './natslive';
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

type Listener = (event: unknown) => void;

/** A stand-in EventSource whose readyState and events the test drives. */
class ScriptedSource {
  readyState = 0;
  closed = false;
  onopen: (() => void) | null = null;
  onerror: (() => void) | null = null;
  listeners: Listener[] = [];
  constructor(readonly url: string) {}
  close() {
    this.closed = true;
    this.readyState = 2;
  }
  addEventListener(_type: string, listener: Listener) {
    this.listeners.push(listener);
  }
  emit(item: object) {
    for (const listener of this.listeners) listener({ data: JSON.stringify(item) });
  }
}

function emptyInbox(pages: InboxItem[][] = []) {
  const queue = [...pages];
  vi.stubGlobal('fetch', async () => new Response(JSON.stringify({ messages: queue.shift() ?? [], next: 0 }), { status: 200 }));
}

function harness(nats: ConstructorParameters<typeof Link>[5] = null) {
  let cursor = 0;
  const state = { statuses: [] as string[], transports: [] as string[], got: [] as number[], sources: [] as ScriptedSource[] };
  const link = new Link(new Signer(alice, 'kez.lat'), 'alice', 'alice@kez.lat', {
    deliver: async (item) => {
      state.got.push(item.seq);
      cursor = item.seq;
    },
    cursor: () => cursor,
    status: (s) => state.statuses.push(s),
    refused: () => undefined,
    transport: (t) => state.transports.push(t),
  }, (url) => {
    const source = new ScriptedSource(url);
    state.sources.push(source);
    return source as unknown as EventSource;
  }, nats);
  return { link, state };
}

describe('the stream', () => {
  it('lets the browser reconnect its EventSource itself, and makes a new one only when it gives up', async () => {
    emptyInbox();
    const { link, state } = harness();
    link.start();
    await vi.waitFor(() => expect(state.sources).toHaveLength(1));
    const first = state.sources[0];
    first.onopen!();
    expect(state.statuses.at(-1)).toBe('live');
    expect(state.transports).toEqual(['sse']);
    // a network error: the browser is reconnecting (readyState CONNECTING), nothing new is made
    first.readyState = 0;
    first.onerror!();
    expect(state.statuses.at(-1)).toBe('reconnecting');
    first.onopen!();
    expect(state.statuses.at(-1)).toBe('live');
    expect(state.sources).toHaveLength(1);
    expect(first.closed).toBe(false);
    first.emit({ seq: 7 });
    await vi.waitFor(() => expect(state.got).toEqual([7]));
    // refused (readyState CLOSED): caught up, and a freshly signed one from the cursor
    first.readyState = 2;
    first.onerror!();
    await vi.waitFor(() => expect(state.sources).toHaveLength(2), { timeout: 3000 });
    expect(state.sources[1].url).toContain('since=7');
    expect(state.sources[1].url).toMatch(/&exp=\d+&/);
    link.stop();
    expect(state.sources[1].closed).toBe(true);
  });
});

describe('NATS', () => {
  function fakeNats(fail = false) {
    const calls = { opened: 0, closed: 0, device: '', events: null as null | Parameters<OpenNats>[3] };
    const open: OpenNats = async (_url, _key, device, events) => {
      calls.opened += 1;
      if (fail) throw new Error('no broker');
      calls.device = device;
      calls.events = events;
      return { close: async () => void (calls.closed += 1) };
    };
    return { calls, open };
  }

  it('is the transport when the server advertises it; an arrival is caught up over HTTP before it is acknowledged', async () => {
    emptyInbox([[], [{ seq: 1, envelope: { sig: 'aa' } } as unknown as InboxItem]]);
    const { calls, open } = fakeNats();
    const { link, state } = harness({ url: async () => 'ws://127.0.0.1:1', device: 'webtest', open });
    link.start();
    await vi.waitFor(() => expect(state.transports).toEqual(['nats']));
    await vi.waitFor(() => expect(state.statuses.at(-1)).toBe('live'));
    expect(calls.device).toBe('webtest');
    expect(state.sources).toHaveLength(0);
    await calls.events!.arrived({ sig: 'aa', storedSeq: null });
    expect(state.got).toEqual([1]);
    // not an envelope (nothing will be stored for it): one catch-up, then acknowledged
    let asked = 0;
    vi.stubGlobal('fetch', async () => {
      asked += 1;
      return new Response(JSON.stringify({ messages: [], next: 1 }), { status: 200 });
    });
    await calls.events!.arrived({ sig: null, storedSeq: null });
    expect(asked).toBe(1);
    // stored with a seq already behind the cursor: nothing to ask
    await calls.events!.arrived({ sig: null, storedSeq: 1 });
    expect(asked).toBe(1);
    // the broker drops: SSE stands in from the cursor; back: SSE closed, NATS again
    calls.events!.down();
    await vi.waitFor(() => expect(state.sources).toHaveLength(1));
    expect(state.transports.at(-1)).toBe('sse');
    expect(state.sources[0].url).toContain('since=1');
    calls.events!.up();
    expect(state.sources[0].closed).toBe(true);
    expect(state.transports.at(-1)).toBe('nats');
    link.stop();
    expect(calls.closed).toBe(1);
  });

  it('asks the chat-server itself while on NATS: its outage is "reconnecting", its return "live"', async () => {
    const answers = ['ok', 'down', 'ok'];
    vi.stubGlobal('fetch', async () => {
      if ((answers.shift() ?? 'ok') === 'down') throw new TypeError('connection refused');
      return new Response(JSON.stringify({ messages: [], next: 0 }), { status: 200 });
    });
    const { open } = fakeNats();
    const { link, state } = harness({ url: async () => 'ws://127.0.0.1:1', device: 'webtest', open });
    link.start();
    await vi.waitFor(() => expect(state.statuses).toContain('reconnecting'));
    await vi.waitFor(() => expect(state.statuses.at(-1)).toBe('live'), { timeout: 5000 });
    // each change once: "live" again is what resends failed messages
    expect(state.statuses).toEqual(['connecting', 'reconnecting', 'live']);
    expect(state.transports).toEqual(['nats']);
    link.stop();
  });

  it('falls back to SSE when the broker cannot be reached, and when none is advertised', async () => {
    emptyInbox();
    const { calls, open } = fakeNats(true);
    const { link, state } = harness({ url: async () => 'ws://127.0.0.1:1', device: 'webtest', open });
    link.start();
    await vi.waitFor(() => expect(state.sources).toHaveLength(1));
    expect(calls.opened).toBe(1);
    expect(state.transports).toEqual(['sse']);
    link.stop();

    const none = fakeNats();
    const second = harness({ url: async () => null, device: 'webtest', open: none.open });
    second.link.start();
    await vi.waitFor(() => expect(second.state.sources).toHaveLength(1));
    expect(none.calls.opened).toBe(0);
    second.link.stop();
  });
});

describe('a restore stays usable for new messages', () => {
  it('a long catch-up opens the stream at once from `last`; its items come early, then again in their turn', async () => {
    // three pages: the first says the inbox goes up to 5
    const pages = [
      [{ seq: 1 }, { seq: 2 }],
      [{ seq: 3 }, { seq: 4 }, { seq: 5 }],
      [{ seq: 6 }],
      [],
    ] as InboxItem[][];
    vi.stubGlobal('fetch', async () => new Response(JSON.stringify({ messages: pages.shift() ?? [], next: 0, last: 5 }), { status: 200 }));
    let cursor = 0;
    const got: string[] = [];
    const sources: ScriptedSource[] = [];
    let release: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const link = new Link(new Signer(alice, 'kez.lat'), 'alice', 'alice@kez.lat', {
      deliver: async (item, early) => {
        got.push(`${item.seq}${early ? ' early' : ''}`);
        if (early) return;
        // the backlog is slow: the catch-up waits here on its third item
        if (item.seq === 3) await gate;
        cursor = item.seq;
      },
      cursor: () => cursor,
      status: () => undefined,
      refused: () => undefined,
    }, (url) => {
      const source = new ScriptedSource(url);
      sources.push(source);
      return source as unknown as EventSource;
    });
    link.start();
    await vi.waitFor(() => expect(sources).toHaveLength(1));
    // opened from the inbox's latest seq, not from the cursor (the backlog is the catch-up's)
    expect(sources[0].url).toContain('since=5');
    // a new message mid-restore is handed over at once, ahead of the backlog
    sources[0].emit({ seq: 6 });
    await vi.waitFor(() => expect(got).toContain('6 early'));
    expect(got).toEqual(['1', '2', '3', '6 early']);
    release();
    // the catch-up reads it in its turn, and the stream's copy is handed over once more after it (seq <= cursor then: nothing)
    await vi.waitFor(() => expect(got).toHaveLength(8));
    expect(got).toEqual(['1', '2', '3', '6 early', '4', '5', '6', '6']);
    // the stream stays the one opened early: no second one
    expect(sources).toHaveLength(1);
    link.stop();
  });

  it('a short catch-up opens the stream only after it, from the cursor', async () => {
    const pages = [[{ seq: 1 }, { seq: 2 }], []] as InboxItem[][];
    vi.stubGlobal('fetch', async () => new Response(JSON.stringify({ messages: pages.shift() ?? [], next: 0, last: 2 }), { status: 200 }));
    const { link, state } = harness();
    link.start();
    await vi.waitFor(() => expect(state.sources).toHaveLength(1));
    expect(state.got).toEqual([1, 2]);
    expect(state.sources[0].url).toContain('since=2');
    link.stop();
  });
});
