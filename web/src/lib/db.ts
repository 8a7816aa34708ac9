/**
 * Everything the app keeps in the browser, in one IndexedDB store:
 * the sealed seed, the inbox cursor, conversations, messages, pinned
 * contacts, file chunks and finished files. Log-out wipes the store.
 */
import { clear, createStore, del, get, set, keys } from 'idb-keyval';

const store = createStore('kezchat', 'kv');

export const db = {
  get: <T>(key: string) => get<T>(key, store),
  set: (key: string, value: unknown) => set(key, value, store),
  del: (key: string) => del(key, store),
  keys: () => keys(store),
  wipe: () => clear(store),
};
