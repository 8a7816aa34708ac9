/**
 * Progress of a restore: the catch-up over `GET /v1/inbox` when it has
 * much to fetch (a log-in from the words on a new browser, or a device
 * back after a long time). The server says each page's `last`, the
 * inbox's latest seq; seqs are consecutive per inbox, so what is still
 * to come is at most `last - cursor`. Without `last` (an older server)
 * only what is done is known, and only that is said.
 */

/** Below this many items to go, a catch-up is quick and shows no progress. */
export const SHOW_FROM = 50;

export interface Progress {
  done: number;
  /** null when the server does not say */
  total: number | null;
}

export class RestoreProgress {
  private start: number | null = null;
  private last: number | null = null;
  /** shown while not null */
  current: Progress | null = null;

  constructor(private readonly changed: (p: Progress | null) => void = () => undefined) {}

  /** A page of the catch-up came, starting after `cursor`. */
  paged(count: number, last: number | undefined, cursor: number): void {
    if (count === 0) {
      this.finish();
      return;
    }
    if (typeof last === 'number' && Number.isFinite(last)) this.last = Math.max(last, this.last ?? 0);
    if (this.start === null) {
      // a short catch-up shows nothing; a page without `last` that is full may be long
      const togo = this.last === null ? (count >= 200 ? Infinity : 0) : this.last - cursor;
      if (togo < SHOW_FROM) return;
      this.start = cursor;
    }
    this.show(cursor);
  }

  /** The item at `cursor` is stored. */
  stored(cursor: number): void {
    if (this.start !== null) this.show(cursor);
  }

  get active(): boolean {
    return this.start !== null;
  }

  private show(cursor: number): void {
    const start = this.start ?? cursor;
    const done = Math.max(0, cursor - start);
    const total = this.last === null ? null : Math.max(done, this.last - start);
    this.current = { done, total };
    this.changed(this.current);
  }

  private finish(): void {
    const was = this.start !== null;
    this.start = null;
    this.current = null;
    if (was) this.changed(null);
  }
}

const number = new Intl.NumberFormat('en-US');

/** "Restoring 1,234 of 5,000", or "Restoring 1,234 messages" when the total is not known. */
export function restoreText(p: Progress): string {
  return p.total === null ? `Restoring ${number.format(p.done)} messages` : `Restoring ${number.format(p.done)} of ${number.format(p.total)}`;
}
