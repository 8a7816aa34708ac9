/**
 * Shared pieces for the unit tests: an IndexedDB stand-in per test, the
 * interop keys, and inbox items as a server (honest or not) would send.
 */
import 'fake-indexeddb/auto';
import { createStore } from 'idb-keyval';
import { fromHex } from './crypto/bytes';
import { seal, sealBytes, type Envelope } from './crypto/envelope';
import { KeyPair } from './crypto/keys';
import type { InboxItem } from './api';
import { Storage } from './storage';
import { Contacts } from './contacts';
import { History, type Model } from './history';
import { FileInbox } from './fileinbox';
import { Inbox } from './inbox';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';

let stores = 0;

/** A fresh store in the stand-in IndexedDB. */
export function freshStorage(): Storage {
  stores += 1;
  return new Storage(createStore(`kezchat-test-${stores}-${Math.random()}`, 'kv'));
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const vectors: any = JSON.parse(readFileSync(resolve(__dirname, '../../../interop/python-vectors.json'), 'utf-8'));

export function vectorKey(name: string): KeyPair {
  return new KeyPair(fromHex(vectors.keys.find((k: { name: string }) => k.name === name).seed_hex));
}

export const alice = vectorKey('alice');
export const bob = vectorKey('bob');
/** carol's key plays mallory: a registered user turned attacker */
export const mallory = vectorKey('carol');

export const CREATED = '2026-05-25T03:00:05Z';
export const NOW = Date.parse('2026-05-25T03:10:00Z');

let nextSeq = 0;

export function item(
  sender: KeyPair,
  label: string,
  plaintext: object | Uint8Array,
  options: { seq?: number; envelope?: Envelope; fromPrimary?: string; ts?: string; createdAt?: string } = {},
): InboxItem {
  nextSeq += 1;
  const envelope =
    options.envelope ??
    (plaintext instanceof Uint8Array
      ? sealBytes(sender, bob.primary, plaintext, { ts: options.ts ?? '2026-05-25T03:00:00Z' })
      : seal(sender, bob.primary, plaintext, { ts: options.ts ?? '2026-05-25T03:00:00Z' }));
  return {
    seq: options.seq ?? nextSeq,
    from: label,
    from_primary: options.fromPrimary ?? sender.primary,
    envelope,
    created_at: options.createdAt ?? CREATED,
  };
}

/** Bob's receiving side, wired as the app wires it, on a given store. */
export async function bobInbox(
  storage: Storage = freshStorage(),
  now = () => NOW,
  quota?: number,
  /** the key directory's part (keydir.ts), when a test plays it */
  hooks: { confirm?: (fqhn: string, primary: string) => Promise<boolean>; gossip?: (head: unknown) => Promise<string | null> } = {},
) {
  const model: Model = { convs: {}, msgs: {} };
  const contacts = new Contacts((await storage.entriesWith<string>('pin:')).map(([k, v]) => [k.slice(4), v]));
  const history = new History(model, storage);
  await history.load();
  const files = new FileInbox(storage, history, now, quota);
  await files.load();
  const failures: string[] = [];
  // the registry as an honest server keeps it
  const registry: Record<string, string> = { 'alice@kez.lat': alice.primary, 'mallory@kez.lat': mallory.primary };
  const confirm = hooks.confirm ?? (async (fqhn: string, primary: string) => registry[fqhn] === primary);
  const gossip = hooks.gossip ?? (async () => null);
  const inbox = new Inbox(bob, storage, contacts, history, files, confirm, gossip, (why) => failures.push(why), now);
  await inbox.load();
  return { storage, model, contacts, history, files, inbox, failures };
}
