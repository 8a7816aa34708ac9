/**
 * Everything the app keeps in the browser, in one IndexedDB store, one
 * record per thing: the sealed seed, the inbox cursor, one record per
 * conversation, one per message, one per pinned contact, one per envelope
 * signature seen, files and the pieces of files still arriving.
 *
 * Writes are awaited, never batched on a timer: a message is on disk
 * before it is shown as sent or received, so a reload right after finds
 * it. `write` puts and deletes in one transaction, which is how the inbox
 * keeps its cursor honest (the cursor moves in the transaction that
 * stores what it covers). Log-out clears the store.
 */
import { createStore, promisifyRequest as request, type UseStore } from 'idb-keyval';

export const keys = {
  vault: 'vault',
  cursor: 'cursor',
  conv: (peer: string) => `conv:${peer}`,
  msg: (peer: string, id: string) => `msg:${peer}:${id}`,
  pin: (fqhn: string) => `pin:${fqhn}`,
  sig: (sig: string) => `sig:${sig}`,
  /** a finished file: by its sender and the message that carried it */
  file: (sender: string, msgId: string) => `file:${sender}:${msgId}`,
  /** a sender's chunked file id, bound to the message that announced it */
  bind: (sender: string, fileId: string) => `bind:${sender}:${fileId}`,
  chunk: (sender: string, fileId: string, i: number) => `chunk:${sender}:${fileId}:${i}`,
  /** what pieces of whose files are waiting, with their bytes and age */
  pending: (sender: string) => `pending:${sender}`,
};

export type Put = [key: string, value: unknown];

export class Storage {
  constructor(private readonly store: UseStore = createStore('kezchat', 'kv')) {}

  get<T>(key: string): Promise<T | undefined> {
    return this.store('readonly', (s) => request<T | undefined>(s.get(key)));
  }

  /** Several values by key, in one transaction. */
  getMany<T>(names: string[]): Promise<(T | undefined)[]> {
    return this.store('readonly', (s) => Promise.all(names.map((k) => request<T | undefined>(s.get(k)))));
  }

  /** Every key that starts with `prefix` (keys only: files stay on disk). */
  async keysWith(prefix: string): Promise<string[]> {
    const range = IDBKeyRange.bound(prefix, prefix + '\uffff');
    const all = await this.store('readonly', (s) => request<IDBValidKey[]>(s.getAllKeys(range)));
    return all.map(String);
  }

  /** Every record whose key starts with `prefix`, as [key, value]. */
  async entriesWith<T>(prefix: string): Promise<[string, T][]> {
    const range = IDBKeyRange.bound(prefix, prefix + '\uffff');
    return this.store('readonly', async (s) => {
      const [ks, vs] = await Promise.all([request<IDBValidKey[]>(s.getAllKeys(range)), request<T[]>(s.getAll(range))]);
      return ks.map((k, i) => [String(k), vs[i]] as [string, T]);
    });
  }

  /** Put and delete in one transaction: all of it is stored, or none. */
  write(puts: Put[], dels: string[] = []): Promise<void> {
    return this.store('readwrite', (s) => {
      for (const [k, v] of puts) s.put(v, k);
      for (const k of dels) s.delete(k);
      return request<void>(s.transaction);
    });
  }

  set(key: string, value: unknown): Promise<void> {
    return this.write([[key, value]]);
  }

  wipe(): Promise<void> {
    return this.store('readwrite', (s) => {
      s.clear();
      return request<void>(s.transaction);
    });
  }
}
