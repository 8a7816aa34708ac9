/**
 * Conversations and their messages: the shown model, and the records that
 * store it (one per conversation, one per message). Changes come as a
 * `Change`: the records to write and what to do to the model once they
 * are written, so nothing is shown that a reload would lose.
 */
import { keys, type Put, type Storage } from './storage';
import { REFUSED, type Conversation, type Msg } from './types';

export interface Model {
  convs: Record<string, Conversation>;
  msgs: Record<string, Msg[]>;
}

export interface Change {
  puts: Put[];
  dels: string[];
  /** run after the records are stored */
  apply: () => void;
}

export function change(puts: Put[] = [], apply: () => void = () => undefined, dels: string[] = []): Change {
  return { puts, dels, apply };
}

/** Several changes as one (one transaction, applied in order). */
export function merge(...changes: Change[]): Change {
  return {
    puts: changes.flatMap((c) => c.puts),
    dels: changes.flatMap((c) => c.dels),
    apply: () => changes.forEach((c) => c.apply()),
  };
}

/** A plain copy (the model's objects may be reactive proxies, which IndexedDB cannot clone). */
export function plain<T>(value: T): T {
  return JSON.parse(JSON.stringify(value)) as T;
}

function preview(msg: Msg): string {
  if (msg.kind === 'file') return `File: ${msg.text}`;
  if (msg.kind === 'warning') return `⚠ ${msg.text}`;
  return msg.text;
}

export class History {
  /**
   * Each conversation's messages by id, and its sent messages by envelope
   * signature, kept with the model (a scan of a long conversation per
   * item made a restore of thousands of messages quadratic).
   */
  private ids = new Map<string, Map<string, Msg>>();
  private outSigs = new Map<string, Map<string, Msg>>();

  constructor(
    readonly model: Model,
    private readonly storage: Storage,
    /** whether the person is looking at this conversation right now */
    private readonly watching: (peer: string) => boolean = () => false,
    /** told of each message newly shown in a conversation (for notifications) */
    private readonly arrived: (peer: string, msg: Msg) => void = () => undefined,
  ) {}

  /** Read every conversation and message; what was still sending when the page closed is failed. */
  async load(): Promise<void> {
    const convs: Record<string, Conversation> = {};
    for (const [, conv] of await this.storage.entriesWith<Conversation>('conv:')) convs[conv.primary] = conv;
    const msgs: Record<string, Msg[]> = {};
    const interrupted: Put[] = [];
    for (const [key, msg] of await this.storage.entriesWith<Msg>('msg:')) {
      // msg:<peer>:<id>, where the peer is a primary (or the refused list) and the id may hold colons
      const peer = /^msg:(ed25519:[0-9a-f]{64}|[a-z]+):/.exec(key)?.[1];
      if (peer === undefined) continue;
      if (msg.status === 'sending') {
        msg.status = 'failed';
        msg.error = 'not sent before the page closed';
        msg.transient = true;
        interrupted.push([key, msg]);
      }
      (msgs[peer] ??= []).push(msg);
    }
    for (const list of Object.values(msgs)) list.sort((a, b) => (a.ts < b.ts ? -1 : a.ts > b.ts ? 1 : 0));
    for (const peer of Object.keys(convs)) msgs[peer] ??= [];
    if (interrupted.length) await this.storage.write(interrupted);
    this.model.convs = convs;
    this.model.msgs = msgs;
    this.reindex();
  }

  /** Index every conversation again (after the model's lists were replaced). */
  private reindex(): void {
    this.ids.clear();
    this.outSigs.clear();
    for (const [peer, list] of Object.entries(this.model.msgs)) for (const m of list) this.indexed(peer, m);
  }

  /** Index `m` (as the model holds it: the object a find must return). */
  private indexed(peer: string, m: Msg): void {
    let ids = this.ids.get(peer);
    if (!ids) this.ids.set(peer, (ids = new Map()));
    ids.set(m.id, m);
    if (m.dir === 'out' && m.sigs) {
      let sigs = this.outSigs.get(peer);
      if (!sigs) this.outSigs.set(peer, (sigs = new Map()));
      for (const sig of m.sigs) sigs.set(sig, m);
    }
  }

  find(peer: string, id: string): Msg | undefined {
    return this.ids.get(peer)?.get(id);
  }

  /** Our sent message to `peer` whose envelope (any sealing of its first part) has `sig`. */
  sentWithSig(peer: string, sig: string): Msg | undefined {
    const m = this.outSigs.get(peer)?.get(sig);
    return m !== undefined && m.sigs?.includes(sig) ? m : undefined;
  }

  /** A new conversation with `primary`, shown as the pinned `fqhn` (not yet stored). */
  fresh(primary: string, fqhn: string, ts: string): Conversation {
    return { primary, fqhn, unread: 0, lastTs: ts, lastText: '' };
  }

  /** Store and show a conversation record. */
  put(conv: Conversation): Change {
    const record = plain(conv);
    return change([[keys.conv(conv.primary), record]], () => {
      this.model.convs[conv.primary] = record;
      this.model.msgs[conv.primary] ??= [];
    });
  }

  /**
   * Add a message to `peer`'s conversation (or to the refused list);
   * `base` is the conversation when it is new in this same change.
   */
  add(peer: string, msg: Msg, extra: Partial<Conversation> = {}, base?: Conversation): Change {
    // received: unread until shown (here, or on another device: receipts.ts)
    if (msg.dir === 'in' && msg.read === undefined) msg.read = peer !== REFUSED && this.watching(peer);
    const puts: Put[] = [[keys.msg(peer, msg.id), plain(msg)]];
    let conv: Conversation | undefined;
    const current = base ?? this.model.convs[peer];
    if (peer !== REFUSED && current) {
      conv = { ...plain(current), ...extra };
      if (msg.ts >= conv.lastTs || !conv.lastText) {
        conv.lastTs = msg.ts > conv.lastTs ? msg.ts : conv.lastTs;
        conv.lastText = preview(msg);
        conv.lastOut = msg.dir === 'out';
      }
      if (msg.dir === 'in' && !msg.read) conv.unread += 1;
      puts.push([keys.conv(peer), conv]);
    }
    return change(puts, () => {
      this.model.msgs[peer] ??= [];
      // read back: with a reactive model this is the tracked array
      const list = this.model.msgs[peer];
      if (conv) this.model.convs[peer] = conv;
      if (this.find(peer, msg.id)) return;
      let i = list.length;
      while (i > 0 && list[i - 1].ts > msg.ts) i -= 1;
      list.splice(i, 0, msg);
      this.indexed(peer, list[i]);
      if (conv && msg.dir === 'in') this.arrived(peer, msg);
    });
  }

  /** Change a shown message: the record is rewritten first. */
  update(peer: string, id: string, changes: Partial<Msg>): Change {
    const msg = this.find(peer, id);
    if (!msg) return change();
    const next: Msg = { ...plain(msg), ...plain(changes) };
    return change([[keys.msg(peer, id), next]], () => {
      const shown = this.find(peer, id);
      if (shown) {
        Object.assign(shown, next);
        if (changes.sigs) this.indexed(peer, shown);
      }
    });
  }

  /**
   * Move a conversation and all its messages to another key (the person
   * chose to trust a contact's new key), with `note` at the end.
   */
  rekey(old: string, next: string, note: Msg): Change {
    const conv = this.model.convs[old];
    if (!conv) return change();
    const moved = (this.model.msgs[old] ?? []).map((m) => plain(m));
    const record: Conversation = { ...plain(conv), primary: next, lastTs: note.ts, lastText: note.text };
    delete record.keyChanged;
    delete record.newKey;
    delete record.lastOut;
    const puts: Put[] = [[keys.conv(next), record], ...[...moved, note].map((m): Put => [keys.msg(next, m.id), m])];
    const dels = [keys.conv(old), ...moved.map((m) => keys.msg(old, m.id))];
    return change(puts, () => {
      this.model.convs[next] = record;
      this.model.msgs[next] = [...moved, note];
      delete this.model.convs[old];
      delete this.model.msgs[old];
      this.reindex();
    }, dels);
  }

  /** Mark a conversation read (the person opened it); receipts.ts `readHere` also marks each message. */
  read(peer: string): Change {
    const conv = this.model.convs[peer];
    if (!conv || conv.unread === 0) return change();
    const next = { ...plain(conv), unread: 0 };
    return change([[keys.conv(peer), next]], () => {
      const shown = this.model.convs[peer];
      if (shown) shown.unread = 0;
    });
  }

  async commit(c: Change): Promise<void> {
    if (c.puts.length || c.dels.length) await this.storage.write(c.puts, c.dels);
    c.apply();
  }
}
