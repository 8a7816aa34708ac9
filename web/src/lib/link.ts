/**
 * The link to the inbox: catch up over `GET /v1/inbox` from the cursor,
 * then follow the live transport. Items go to a sink in seq order; the
 * link waits for the sink before it asks for more, so the cursor it
 * resumes from is always the stored one.
 *
 * Two live transports, one pipeline:
 *  - NATS over WebSocket, when the server advertises it (healthz
 *    `nats_ws`): the device's durable consumer says that something
 *    arrived, the link catches up over HTTP and only then acknowledges it
 *    (natslive.ts). While NATS is unreachable, SSE stands in.
 *  - SSE: one stock EventSource on a URL signed with `exp` (SPEC §11.4),
 *    which the browser itself reconnects with Last-Event-ID across server
 *    restarts. A new one is made only when the browser gives up on it (the
 *    server refused it) or before its `exp` comes.
 *
 * A restore stays usable for new messages: when the first page of a
 * catch-up says there is more to come (its `last` is beyond the page), an
 * SSE stream opens at once from `last`, so what arrives from then on is
 * not stuck behind the backlog. Until a catch-up has met the inbox's end
 * (while it runs, and after it failed until one succeeds), a stream item is
 * handed over `early` (the inbox shows it ahead of the cursor only when
 * order cannot change it, inbox.ts) and kept; once the catch-up ends, the
 * kept items are handed over again in seq order, so none that had to wait
 * its turn is lost to a race with the catch-up's last page. The cursor
 * itself still only moves in seq order.
 */
import * as api from './api';
import { ApiError, type InboxItem } from './api';
import type { KeyPair } from './crypto/keys';
import type { Arrival, NatsFeed, OpenNats } from './natslive';
import type { Signer } from './signer';
import { NATS_RETRY_MS, chooseTransport, resignDelay, streamExpiry, type Transport } from './transport';

export type LinkStatus = 'connecting' | 'live' | 'reconnecting';
export type { Transport };

const RETRY_MAX_MS = 4000;
/** EventSource.readyState once the browser has given up on a stream */
const CLOSED = 2;
/** how long an arrival waits for its message to be stored (a native client's message is stored by the chat-server first) */
const COVER_TRIES = 20;
const COVER_WAIT_MS = 250;
/** on NATS, how often the chat-server is asked (and, after a failure, asked again) */
const NATS_CHECK_MS = 15_000;
const NATS_RECHECK_MS = 2_000;
/** signatures of recently delivered items remembered (to match NATS arrivals) */
const RECENT_SIGS = 2048;

export interface LinkHooks {
  /** take an item; resolves once it is stored (or refused and stored as a warning); `early`: a live item during a catch-up */
  deliver: (item: InboxItem, early?: boolean) => Promise<void>;
  /** the stored cursor */
  cursor: () => number;
  status: (status: LinkStatus) => void;
  /** a sentence when the server refuses this key, null when it accepts it again */
  refused: (why: string | null) => void;
  /** which transport carries live messages now */
  transport?: (transport: Transport) => void;
  /** a page of the catch-up is in: `last` is the inbox's latest seq when the server says (restore progress); an empty page ends it */
  paged?: (count: number, last: number | undefined) => void;
}

/** What the link needs for NATS: where (asked each time it connects), as which device. */
export interface NatsOptions {
  url: () => Promise<string | null>;
  device: string;
  open?: OpenNats;
}

type Source = Pick<EventSource, 'close' | 'addEventListener'> & { onopen: unknown; onerror: unknown; readyState?: number };

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export class Link {
  private running = false;
  private source: Source | null = null;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private resignTimer: ReturnType<typeof setTimeout> | null = null;
  private natsTimer: ReturnType<typeof setTimeout> | null = null;
  private failures = 0;
  private nats: NatsFeed | null = null;
  /** whether the NATS connection is up now (it may exist and be reconnecting) */
  private natsUp = false;
  private natsRetryAt = 0;
  private connectingNats = false;
  /** catch-ups run one at a time */
  private pulling: Promise<void> = Promise.resolve();
  private recent = new Set<string>();
  private current: LinkStatus | null = null;
  private checkTimer: ReturnType<typeof setTimeout> | null = null;
  /**
   * Whether the cursor has met the inbox's end since the last catch-up
   * began (a catch-up that failed leaves it false): until then every
   * stream item is early, and kept
   */
  private caughtUp = false;
  /** catch-ups running now, and the stream items that came before the cursor caught up */
  private pulls = 0;
  private held: InboxItem[] = [];

  constructor(
    private readonly signer: Signer,
    private readonly local: string,
    private readonly fqhn: string,
    private readonly hooks: LinkHooks,
    private readonly openSource: (url: string) => Source = (url) => new EventSource(url),
    private readonly natsOptions: NatsOptions | null = null,
    private readonly now: () => number = Date.now,
  ) {}

  start(): void {
    this.running = true;
    this.caughtUp = false;
    this.current = null;
    this.setStatus('connecting');
    void this.catchUp();
  }

  stop(): void {
    this.running = false;
    this.closeSource();
    this.stopChecks();
    for (const timer of [this.retryTimer, this.natsTimer]) if (timer) clearTimeout(timer);
    this.retryTimer = this.natsTimer = null;
    const nats = this.nats;
    this.nats = null;
    this.natsUp = false;
    void nats?.close();
  }

  /** Status changes only: "live" again is what sends failed messages out again. */
  private setStatus(status: LinkStatus): void {
    if (status === this.current) return;
    this.current = status;
    this.hooks.status(status);
  }

  /** Reconnect now (the browser says the network is back). */
  reconnectNow(): void {
    if (!this.running || this.source || this.natsUp) return;
    this.failures = 0;
    this.scheduleReconnect();
  }

  /**
   * One page of the inbox. A server from before the named signing form
   * answers 401 to it: then the older form is tried once and kept.
   */
  private async page(since: number): Promise<{ messages: InboxItem[]; last?: number }> {
    try {
      return await api.inbox(this.signer, this.local, since);
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 401 && this.signer.named)) throw e;
      this.signer.named = false;
      try {
        return await api.inbox(this.signer, this.local, since);
      } catch (again) {
        this.signer.named = true;
        throw again;
      }
    }
  }

  private async deliver(item: InboxItem, early = false): Promise<void> {
    await this.hooks.deliver(item, early);
    const sig = (item?.envelope as { sig?: unknown } | null)?.sig;
    if (typeof sig === 'string') {
      this.recent.add(sig);
      if (this.recent.size > RECENT_SIGS) this.recent.delete(this.recent.values().next().value as string);
    }
  }

  /** Every stored page from the cursor on, one catch-up at a time. */
  private pull(): Promise<void> {
    const run = this.pulling.then(async () => {
      this.pulls += 1;
      this.caughtUp = false;
      try {
        for (;;) {
          if (!this.running) return;
          const page = await this.page(this.hooks.cursor());
          this.hooks.paged?.(page.messages.length, page.last);
          this.streamEarly(page.messages, page.last);
          for (const item of page.messages) await this.deliver(item);
          if (page.messages.length === 0) {
            this.caughtUp = true;
            return;
          }
        }
      } finally {
        this.pulls -= 1;
        if (this.pulls === 0 && this.caughtUp) await this.handHeld();
      }
    });
    this.pulling = run.catch(() => undefined);
    return run;
  }

  /** A long catch-up: the live stream opens now, from the inbox's latest seq. */
  private streamEarly(messages: InboxItem[], last: number | undefined): void {
    const seq = messages.at(-1)?.seq;
    if (this.source || this.natsUp || !this.running || typeof last !== 'number' || typeof seq !== 'number' || last <= seq) return;
    this.openStream(last);
  }

  /** The stream items that came during a catch-up, in seq order, now in their turn. */
  private async handHeld(): Promise<void> {
    const held = this.held.sort((a, b) => a.seq - b.seq);
    this.held = [];
    for (const item of held) if (this.running) await this.deliver(item);
  }

  private async catchUp(): Promise<void> {
    try {
      await this.pull();
      if (!this.running) return;
      this.hooks.refused(null);
      await this.openLive();
    } catch (e) {
      this.explain(e);
      this.scheduleReconnect();
    }
  }

  /** NATS when the server has it and it answers; else SSE. */
  private async openLive(): Promise<void> {
    if (this.natsOptions && !this.nats && (await this.tryNats())) return;
    if (!this.running || this.natsUp || this.source) return;
    this.openStream();
  }

  private async tryNats(): Promise<boolean> {
    const options = this.natsOptions;
    if (!options || this.connectingNats || !this.running) return false;
    const url = await options.url().catch(() => null);
    if (chooseTransport(url, this.natsRetryAt, this.now()) !== 'nats' || !url) return false;
    this.connectingNats = true;
    let feed0: NatsFeed | null = null;
    try {
      const key: KeyPair = this.signer.key;
      // the NATS client is loaded only when a server has NATS for it (it doubles the app's size)
      const open = options.open ?? (await import('./natslive')).openNats;
      const feed = await open(url, key, options.device, {
        arrived: (arrival) => this.arrived(arrival),
        down: () => this.natsDown(),
        up: () => this.natsBack(),
        ended: () => this.natsEnded(feed0),
      });
      feed0 = feed;
      if (!this.running) {
        void feed.close();
        return false;
      }
      this.nats = feed;
      this.natsBack();
      return true;
    } catch {
      this.natsRetryAt = this.now() + NATS_RETRY_MS;
      this.scheduleNatsRetry();
      return false;
    } finally {
      this.connectingNats = false;
    }
  }

  /** While SSE stands in, NATS is tried again now and then. */
  private scheduleNatsRetry(): void {
    if (this.natsTimer || !this.running) return;
    this.natsTimer = setTimeout(() => {
      this.natsTimer = null;
      if (!this.running || this.nats) return;
      void this.tryNats();
    }, NATS_RETRY_MS);
  }

  /** NATS is up: it carries the live messages; what came meanwhile is caught up. */
  private natsBack(): void {
    if (!this.running) return;
    this.natsUp = true;
    this.closeSource();
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.failures = 0;
    this.hooks.transport?.('nats');
    this.check();
  }

  /**
   * While NATS carries the messages, the chat-server itself is asked now
   * and then (one catch-up): its restart is then seen as "reconnecting"
   * and its return as "live" (which sends what failed meanwhile), and
   * anything the broker never carried (sent while it was down) is read.
   */
  private check(): void {
    this.stopChecks();
    this.pull().then(
      () => {
        if (!this.natsUp) return;
        this.setStatus('live');
        this.checkTimer = setTimeout(() => this.check(), NATS_CHECK_MS);
      },
      (e) => {
        if (!this.natsUp) return;
        this.explain(e);
        this.setStatus('reconnecting');
        this.checkTimer = setTimeout(() => this.check(), NATS_RECHECK_MS);
      },
    );
  }

  private stopChecks(): void {
    if (this.checkTimer) clearTimeout(this.checkTimer);
    this.checkTimer = null;
  }

  /** NATS dropped (its client reconnects by itself): SSE carries the messages meanwhile. */
  private natsDown(): void {
    if (!this.running) return;
    this.natsUp = false;
    this.stopChecks();
    if (!this.source && !this.retryTimer) void this.catchUp();
  }

  /** The NATS client gave up: SSE carries on, and NATS is tried again later. */
  private natsEnded(feed: NatsFeed | null): void {
    if (feed !== null && this.nats !== feed) return;
    this.nats = null;
    this.natsRetryAt = this.now() + NATS_RETRY_MS;
    this.scheduleNatsRetry();
    this.natsDown();
  }

  /**
   * A consumer message: caught up over HTTP until it is stored here (a
   * message a native client published is stored by the chat-server a
   * moment after it reaches the broker), then acknowledged.
   */
  private async arrived(arrival: Arrival): Promise<void> {
    // not an envelope: the chat-server stores none, so one catch-up is all it is worth
    const tries = arrival.sig === null && arrival.storedSeq === null ? 1 : COVER_TRIES;
    for (let i = 0; i < tries && this.running; i++) {
      if (this.covered(arrival)) return;
      try {
        await this.pull();
        if (this.natsUp) this.setStatus('live');
      } catch (e) {
        this.explain(e);
        this.setStatus('reconnecting');
      }
      if (this.covered(arrival)) return;
      await sleep(COVER_WAIT_MS);
    }
  }

  private covered(arrival: Arrival): boolean {
    if (arrival.sig !== null && this.recent.has(arrival.sig)) return true;
    return arrival.storedSeq !== null && arrival.storedSeq <= this.hooks.cursor();
  }

  private closeSource(): void {
    this.source?.close();
    this.source = null;
    if (this.resignTimer) clearTimeout(this.resignTimer);
    this.resignTimer = null;
  }

  private openStream(since: number = this.hooks.cursor()): void {
    if (!this.running) return;
    this.closeSource();
    // signed with exp: the browser's own reconnects (Last-Event-ID) reuse this URL for hours
    const exp = streamExpiry(Math.floor(this.now() / 1000));
    const source = this.openSource(api.streamUrl(this.signer, this.local, since, exp));
    this.source = source;
    this.hooks.transport?.('sse');
    source.onopen = () => {
      this.setStatus('live');
      this.failures = 0;
    };
    source.addEventListener('message', (event) => {
      let item: InboxItem;
      try {
        item = JSON.parse((event as MessageEvent).data) as InboxItem;
      } catch {
        return; // a frame that is not JSON is not a message
      }
      if (!this.caughtUp && typeof item?.seq === 'number') {
        // the cursor is behind (a catch-up runs, or failed and is due again): shown now if it can be, handed over again in its turn
        this.held.push(item);
        void this.deliver(item, true);
      } else void this.deliver(item);
    });
    source.onerror = () => {
      if (this.source !== source) return;
      if (source.readyState !== undefined && source.readyState !== CLOSED) {
        // the browser reconnects by itself, with Last-Event-ID
        this.setStatus('reconnecting');
        return;
      }
      // the browser gave up (the server refused the stream): catch up and sign anew
      this.closeSource();
      this.scheduleReconnect();
    };
    // before exp, a freshly signed URL (from the stored cursor)
    this.resignTimer = setTimeout(() => {
      if (this.source === source) this.openStream();
    }, resignDelay(exp, this.now()));
  }

  private scheduleReconnect(): void {
    if (!this.running) return;
    this.setStatus('reconnecting');
    if (this.retryTimer) clearTimeout(this.retryTimer);
    const delay = Math.min(500 * 2 ** this.failures, RETRY_MAX_MS);
    this.failures += 1;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void this.catchUp();
    }, delay);
  }

  /** A refused key is said plainly; an unreachable server is just "reconnecting". */
  private explain(e: unknown): void {
    if (e instanceof ApiError && (e.status === 401 || e.status === 404)) {
      this.hooks.refused(
        `The server no longer accepts this key for ${this.fqhn}. If you did not change it, someone may have taken over the handle: check with the server's operator.`,
      );
    }
  }
}
