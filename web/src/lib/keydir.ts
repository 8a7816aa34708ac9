/**
 * The key directory, as the app checks it: never take the server's word
 * for a key.
 *
 * Before a key is pinned (a chat started by handle, or a first message
 * from someone new), `vouch` checks against the server's transparency log:
 *
 *  1. the head's signature, under the log key kept from before (a log key
 *     that changes is refused: it would let the server start a new,
 *     different history);
 *  2. that the head extends the newest head kept: the same root for the
 *     same size, a valid consistency proof for a larger one;
 *  3. that the key's registration is included under the head, at the
 *     record's `log_index`, and that the leaf registers exactly that
 *     handle with exactly that key, signed by that key.
 *
 * The newest verified head is kept in IndexedDB and travels in every
 * plaintext the app sends (`head`: `{size, root}`); `compareGossip` checks
 * a peer's against ours, which is how a server that shows different people
 * different directories is caught by them. The same rule as the Python
 * client's (kezchat/client/keydir.py).
 */
import { ProofError, checkExtends, checkRecord, parseHead, type Head } from './crypto/merkle';
import type { Storage } from './storage';

export type DirectoryCode = 'bad_head' | 'log_key_changed' | 'inconsistent' | 'not_included' | 'wrong_leaf' | 'split_view';

/** The key directory does not vouch for what the server said. */
export class DirectoryError extends Error {
  constructor(
    readonly code: DirectoryCode,
    message: string,
  ) {
    super(message);
  }
}

/** The server's log endpoints, as parsed JSON (api.ts). */
export interface LogSource {
  head(): Promise<unknown>;
  inclusion(fqhn: string, size: number): Promise<unknown>;
  consistency(first: number, second: number): Promise<unknown>;
}

/** The head a plaintext carries: what its sender verified last. */
export interface BriefHead {
  size: number;
  root: string;
}

export const HEAD_KEY = 'loghead';
const HEX_HASH = /^[0-9a-f]{64}$/;

/** The loud sentence every split-view warning contains. */
export const SPLIT_WARNING = 'THE SERVER IS SHOWING PEOPLE DIFFERENT KEY DIRECTORIES';

function why(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** A peer's `head` field, or null when it is not one (an older client's message has none). */
export function parseBrief(value: unknown): BriefHead | null {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return null;
  const { size, root } = value as Record<string, unknown>;
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) return null;
  if (typeof root !== 'string' || !HEX_HASH.test(root)) return null;
  return { size, root };
}

export class KeyDirectory {
  private head: Head | null = null;
  /** peers' heads already found consistent with ours (a catch-up of old messages asks once per head) */
  private agreed = new Set<string>();
  /** one check at a time: two lookups at once would race to keep a head */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly source: LogSource,
    private readonly storage: Storage,
    /** where the head is kept: another domain's is kept under its own name */
    private readonly headKey: string = HEAD_KEY,
  ) {}

  /** Read the kept head (a damaged record counts as none). */
  async load(): Promise<void> {
    const value = await this.storage.get<unknown>(this.headKey);
    try {
      this.head = value === undefined ? null : parseHead(value);
    } catch {
      this.head = null;
    }
  }

  /** The newest verified head, or null. */
  kept(): Head | null {
    return this.head;
  }

  /** What every sent plaintext carries: the newest verified head, briefly. */
  brief(): BriefHead | null {
    return this.head && { size: this.head.size, root: this.head.root };
  }

  private serial<T>(work: () => Promise<T>): Promise<T> {
    const next = this.queue.then(work, work);
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** The server's head, checked (signature, log key, consistency with the kept head) and kept if newer. */
  currentHead(): Promise<Head> {
    return this.serial(() => this.refresh());
  }

  private async refresh(): Promise<Head> {
    let head: Head;
    try {
      head = parseHead(await this.source.head());
    } catch (e) {
      throw new DirectoryError('bad_head', `The server's key directory head is refused: ${why(e)}.`);
    }
    const kept = this.head;
    if (kept !== null) await this.checkAgainst(kept, head);
    if (kept === null || head.size > kept.size) {
      await this.storage.set(this.headKey, head);
      this.head = head;
    }
    return head;
  }

  private async checkAgainst(kept: Head, head: Head): Promise<void> {
    if (kept.key !== head.key) {
      throw new DirectoryError(
        'log_key_changed',
        `The server's key directory is now signed by another key (${head.key.slice(8, 20)}…, not ${kept.key.slice(8, 20)}…): it could be showing a different directory.`,
      );
    }
    if (kept.size === head.size && kept.root !== head.root) {
      throw new DirectoryError('split_view', `${SPLIT_WARNING}: two different key directories of size ${head.size}.`);
    }
    const [older, newer] = kept.size <= head.size ? [kept, head] : [head, kept];
    const proof = older.size > 0 && older.size < newer.size ? await this.source.consistency(older.size, newer.size) : null;
    try {
      checkExtends(kept, head, proof);
    } catch (e) {
      throw new DirectoryError(
        'inconsistent',
        `The key directory of size ${newer.size} does not extend the one of size ${older.size} kept before (${why(e)}): the server rewrote its history.`,
      );
    }
  }

  /**
   * Check that the log vouches for `record` (a `/v1/u` or `/v1/by-primary`
   * answer): its handle and key are registered under a verified head.
   * Throws DirectoryError when it does not.
   */
  vouch(record: { fqhn: string; primary: string; log_index?: unknown }): Promise<Head> {
    return this.serial(async () => {
      const head = await this.refresh();
      const index = record.log_index;
      if (typeof index !== 'number' || !Number.isSafeInteger(index) || index < 0 || index >= head.size) {
        throw new DirectoryError('not_included', `The server gives no key directory entry for ${record.fqhn} under its signed head.`);
      }
      const answer = await this.source.inclusion(record.fqhn, head.size);
      try {
        checkRecord(record, head, answer);
      } catch (e) {
        const substituted = e instanceof ProofError && e.message.startsWith('the key directory registers');
        throw new DirectoryError(
          substituted ? 'wrong_leaf' : 'not_included',
          `The key directory does not vouch for ${record.fqhn}'s key (${why(e)}). The server may have substituted a key: nothing was trusted.`,
        );
      }
      return head;
    });
  }

  /**
   * Check a head a peer put in a message against ours: the same size must
   * have the same root, and whichever is larger must extend the other
   * (the proof asked of our server, checked here). Returns the loud
   * warning, or null when they agree or cannot be compared yet.
   */
  compareGossip(value: unknown, catchUp = true): Promise<string | null> {
    return this.serial(async () => {
      const peer = parseBrief(value);
      let ours = this.head;
      if (peer === null || ours === null) return null;
      const split = `${SPLIT_WARNING}: a key directory this person saw (size ${peer.size}) does not match the one the server shows you. Keys looked up now may not be theirs.`;
      try {
        // a peer ahead of us: catch up first (checked against ours)
        if (peer.size > ours.size && catchUp) ours = await this.refresh();
      } catch (e) {
        if (e instanceof DirectoryError) return `${split} (${e.message})`;
        return null;
      }
      if (peer.size === ours.size) return peer.root === ours.root ? null : split;
      if (Math.min(peer.size, ours.size) === 0) return null;
      const [older, newer] = peer.size < ours.size ? [peer, ours] : [ours, peer];
      const pair = `${older.size}:${older.root}:${newer.size}:${newer.root}`;
      if (this.agreed.has(pair)) return null;
      let proof: unknown;
      try {
        proof = await this.source.consistency(older.size, newer.size);
      } catch {
        // our server cannot prove a size it does not show us yet: nothing to compare until it does
        return null;
      }
      try {
        const asHead = (b: BriefHead): Head => ({ size: b.size, root: b.root, ts: '', key: '', sig: '' });
        checkExtends(asHead(older), asHead(newer), proof);
        this.agreed.add(pair);
        return null;
      } catch {
        return split;
      }
    });
  }
}

/** A record of another domain as our server passes it on: with that domain's head and inclusion proof attached. */
export interface RemoteRecord {
  fqhn: string;
  primary: string;
  log_index?: unknown;
  directory?: { head?: unknown; inclusion?: unknown };
}

/**
 * Every key directory the app checks: our server's, and each other
 * domain's (SPEC §11.5). Another domain's log comes through our server:
 * the head and inclusion proof attached to its record, consistency proofs
 * asked with `server=<domain>`. Its log key is kept from its first head
 * (under `loghead:<domain>`) and every later head is held to it, exactly
 * as for our own server. A peer of another domain gossips its own
 * server's head: it is compared with the head kept of that domain.
 */
export class Directories {
  private remote = new Map<string, { dir: KeyDirectory; attached: RemoteRecord['directory'] }>();

  constructor(
    readonly own: KeyDirectory,
    private readonly ownDomain: string,
    private readonly storage: Storage,
    private readonly consistency: (first: number, second: number, server: string) => Promise<unknown>,
  ) {}

  private async of(domain: string): Promise<{ dir: KeyDirectory; attached: RemoteRecord['directory'] }> {
    let entry = this.remote.get(domain);
    if (entry === undefined) {
      const slot: { dir: KeyDirectory | null; attached: RemoteRecord['directory'] } = { dir: null, attached: undefined };
      const source: LogSource = {
        head: async () => slot.attached?.head,
        inclusion: async () => slot.attached?.inclusion,
        consistency: (first, second) => this.consistency(first, second, domain),
      };
      slot.dir = new KeyDirectory(source, this.storage, `${HEAD_KEY}:${domain}`);
      await slot.dir.load();
      entry = slot as { dir: KeyDirectory; attached: RemoteRecord['directory'] };
      this.remote.set(domain, entry);
    }
    return entry;
  }

  /** Vouch for a record of any domain (KeyDirectory.vouch). */
  async vouch(record: RemoteRecord): Promise<Head> {
    const domain = record.fqhn.slice(record.fqhn.lastIndexOf('@') + 1);
    if (domain === this.ownDomain) return this.own.vouch(record);
    const entry = await this.of(domain);
    entry.attached = record.directory;
    return entry.dir.vouch(record);
  }

  /** Compare a peer's gossiped head with the directory of the peer's domain (KeyDirectory.compareGossip). */
  async compareGossip(value: unknown, peer: string | undefined): Promise<string | null> {
    const domain = peer === undefined ? this.ownDomain : peer.slice(peer.lastIndexOf('@') + 1);
    if (domain === this.ownDomain) return this.own.compareGossip(value);
    if (!this.remote.has(domain) && (await this.storage.get<unknown>(`${HEAD_KEY}:${domain}`)) === undefined) return null;
    return (await this.of(domain)).dir.compareGossip(value, false);
  }
}
