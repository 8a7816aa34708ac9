/**
 * The link to the inbox: catch up over `GET /v1/inbox` from the cursor,
 * then follow the live stream (EventSource), and on any failure back off
 * and start again from the cursor. Items go to a sink in seq order; the
 * link waits for the sink before it asks for more, so the cursor it
 * resumes from is always the stored one.
 */
import * as api from './api';
import { ApiError, type InboxItem } from './api';
import type { Signer } from './signer';

export type LinkStatus = 'connecting' | 'live' | 'reconnecting';

const RETRY_MAX_MS = 4000;

export interface LinkHooks {
  /** take an item; resolves once it is stored (or refused and stored as a warning) */
  deliver: (item: InboxItem) => Promise<void>;
  /** the stored cursor */
  cursor: () => number;
  status: (status: LinkStatus) => void;
  /** a sentence when the server refuses this key, null when it accepts it again */
  refused: (why: string | null) => void;
  /** a page of the catch-up is in: `last` is the inbox's latest seq when the server says (restore progress); an empty page ends it */
  paged?: (count: number, last: number | undefined) => void;
}

type Source = Pick<EventSource, 'close' | 'addEventListener'> & { onopen: unknown; onerror: unknown };

export class Link {
  private running = false;
  private source: Source | null = null;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private failures = 0;

  constructor(
    private readonly signer: Signer,
    private readonly local: string,
    private readonly fqhn: string,
    private readonly hooks: LinkHooks,
    private readonly openSource: (url: string) => Source = (url) => new EventSource(url),
  ) {}

  start(): void {
    this.running = true;
    this.hooks.status('connecting');
    void this.catchUp();
  }

  stop(): void {
    this.running = false;
    this.source?.close();
    this.source = null;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }

  /** Reconnect now (the browser says the network is back). */
  reconnectNow(): void {
    if (!this.running || this.source) return;
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

  private async catchUp(): Promise<void> {
    try {
      for (;;) {
        if (!this.running) return;
        const page = await this.page(this.hooks.cursor());
        this.hooks.paged?.(page.messages.length, page.last);
        for (const item of page.messages) await this.hooks.deliver(item);
        if (page.messages.length === 0) break;
      }
      this.hooks.refused(null);
      this.openStream();
    } catch (e) {
      this.explain(e);
      this.scheduleReconnect();
    }
  }

  private openStream(): void {
    if (!this.running) return;
    // A fresh URL every time: the signed auth= is good for 60 s only, so
    // EventSource's own retry (same URL) would be refused after that.
    const source = this.openSource(api.streamUrl(this.signer, this.local, this.hooks.cursor()));
    this.source = source;
    source.onopen = () => {
      this.hooks.status('live');
      this.failures = 0;
    };
    source.addEventListener('message', (event) => {
      let item: InboxItem;
      try {
        item = JSON.parse((event as MessageEvent).data) as InboxItem;
      } catch {
        return; // a frame that is not JSON is not a message
      }
      void this.hooks.deliver(item);
    });
    source.onerror = () => {
      source.close();
      if (this.source === source) this.source = null;
      this.scheduleReconnect();
    };
  }

  private scheduleReconnect(): void {
    if (!this.running) return;
    this.hooks.status('reconnecting');
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
