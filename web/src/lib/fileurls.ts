/**
 * Object URLs for stored files, made while something shows the file and
 * released when nothing does: each `acquire` is paired with a `release`
 * (a message bubble does so on mount and destroy), and the URL is revoked
 * when the last user lets go, so finished files do not pin memory for the
 * life of the page.
 */
import type { Storage } from './storage';

interface Held {
  url: Promise<string | null>;
  users: number;
}

export class FileUrls {
  private held = new Map<string, Held>();

  constructor(
    private readonly storage: Storage,
    private readonly create: (blob: Blob) => string = (b) => URL.createObjectURL(b),
    private readonly revoke: (url: string) => void = (u) => URL.revokeObjectURL(u),
  ) {}

  acquire(key: string): Promise<string | null> {
    let h = this.held.get(key);
    if (!h) {
      h = { users: 0, url: this.storage.get<Blob>(key).then((blob) => (blob ? this.create(blob) : null)) };
      this.held.set(key, h);
    }
    h.users += 1;
    return h.url;
  }

  release(key: string): void {
    const h = this.held.get(key);
    if (!h) return;
    h.users -= 1;
    if (h.users > 0) return;
    this.held.delete(key);
    void h.url.then((url) => url && this.revoke(url));
  }

  /** How many URLs are alive (for tests and the log-out check). */
  get live(): number {
    return this.held.size;
  }

  releaseAll(): void {
    for (const key of [...this.held.keys()]) {
      const h = this.held.get(key)!;
      h.users = 1;
      this.release(key);
    }
  }
}
