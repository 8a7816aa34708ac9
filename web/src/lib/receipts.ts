/**
 * Receipts and read state (SPEC §11.3), as plain logic over the history.
 *
 * A receipt is a plaintext like any message — `{"type": "receipt",
 * "status": "delivered"|"read", "sigs": [...]}` — sealed to the peer, so
 * the server cannot tell it from a message. It names messages by their
 * envelope signatures. Three ways one arrives here, all after the trust
 * rule (trust.ts) verified it:
 *
 * - from a pinned peer: the messages we sent that peer (and only those)
 *   move on to `delivered` or `read`;
 * - as the server's copy of a receipt this account sent, from this device
 *   or another (`direction: "out"`): the peer's messages it names are
 *   read here too (that is how read state reaches every device, so the
 *   unread counts agree), and are not receipted again;
 * - from anyone not pinned: ignored. A receipt never creates a
 *   conversation, never pins, never notifies.
 *
 * Receipts this device sends are batched: what becomes due within a short
 * delay goes out as one receipt per peer and status.
 */
import { change, merge, plain, type Change, type History } from './history';
import type { Msg, MsgStatus } from './types';

export type ReceiptStatus = 'delivered' | 'read';

/**
 * Where a read receipt goes when read receipts are off: to this account
 * itself. The server keeps a message to oneself once, in one's own inbox,
 * so every device of the account reads it and the read state still
 * agrees everywhere; the peer is told nothing.
 */
export const SELF = 'self';

/** At most this many signatures in one receipt (as the Python client). */
export const MAX_RECEIPT_SIGS = 1000;

/**
 * This app sends at most this many per receipt: sealing and signing a
 * receipt of 1,000 signatures took 100-165 ms of the main thread at the
 * end of a 3,000-message restore; a quarter of that stays short.
 */
export const SEND_SIGS = 250;

const SIG_RE = /^[0-9a-f]{128}$/;

const RANK: Record<MsgStatus, number> = { sending: 0, failed: 0, sent: 1, delivered: 2, read: 3 };

export function receipt(status: ReceiptStatus, sigs: string[]) {
  return { type: 'receipt', status, sigs };
}

/** The receipt in a verified plaintext, or null when it is not a well-formed one. */
export function parseReceipt(plaintext: Record<string, unknown>): { status: ReceiptStatus; sigs: string[] } | null {
  const { status, sigs } = plaintext;
  if (status !== 'delivered' && status !== 'read') return null;
  if (!Array.isArray(sigs) || sigs.length < 1 || sigs.length > MAX_RECEIPT_SIGS) return null;
  if (!sigs.every((s) => typeof s === 'string' && SIG_RE.test(s))) return null;
  return { status, sigs: sigs as string[] };
}

/** The status an out-message shows after a receipt: never lower than it was. */
export function raised(current: MsgStatus | undefined, by: ReceiptStatus): MsgStatus {
  const now = current ?? 'sent';
  return RANK[by] > RANK[now] ? by : now;
}

/** A message that counts as unread: received, not yet read on any device of this account. */
export function unread(msg: Msg): boolean {
  return msg.dir === 'in' && msg.read === false;
}

export function unreadCount(msgs: readonly Msg[]): number {
  let n = 0;
  for (const m of msgs) if (unread(m)) n += 1;
  return n;
}

/** The strongest receipt this account sent for a message, after another. */
function told(current: ReceiptStatus | undefined, next: ReceiptStatus): ReceiptStatus {
  return current === 'read' || next === 'read' ? 'read' : 'delivered';
}

/**
 * The signature of a received message: kept on new messages; older ones
 * are found through the inbox's record of signatures by seq.
 */
export type SigOf = (msg: Msg) => string | undefined;

/**
 * Of `sigs` (messages from `peer`), those no device of this account has
 * receipted with `status` yet: one pass over the conversation.
 */
export function untold(history: History, peer: string, status: ReceiptStatus, sigs: readonly string[], sigOf: SigOf): string[] {
  const done = new Set<string>();
  for (const m of history.model.msgs[peer] ?? []) {
    if (m.dir !== 'in' || m.told === undefined || (status === 'read' && m.told !== 'read')) continue;
    const sig = sigOf(m);
    if (sig !== undefined) done.add(sig);
  }
  return sigs.filter((s) => !done.has(s));
}

/** A peer's receipt: our messages to that peer that it names move on. */
export function fromPeer(history: History, peer: string, status: ReceiptStatus, sigs: readonly string[]): Change {
  const changes: Change[] = [];
  const done = new Set<string>();
  for (const sig of sigs) {
    const m = history.sentWithSig(peer, sig);
    if (m === undefined || done.has(m.id)) continue;
    done.add(m.id);
    const next = raised(m.status, status);
    if (next !== m.status) changes.push(history.update(peer, m.id, { status: next, error: undefined, transient: false }));
  }
  return merge(...changes);
}

/**
 * The server's copy of a receipt this account sent to `peer` (from any
 * device): the messages it names are receipted, and read when it says so.
 */
export function fromSelf(history: History, peer: string, status: ReceiptStatus, sigs: readonly string[], sigOf: SigOf): Change {
  const named = new Set(sigs);
  const marked = new Map<string, Partial<Msg>>();
  for (const m of history.model.msgs[peer] ?? []) {
    if (m.dir !== 'in') continue;
    const sig = sigOf(m);
    if (sig === undefined || !named.has(sig)) continue;
    const changes: Partial<Msg> = {};
    if (told(m.told, status) !== m.told) changes.told = told(m.told, status);
    if (status === 'read' && m.read === false) changes.read = true;
    if (Object.keys(changes).length) marked.set(m.id, changes);
  }
  return markMany(history, peer, marked);
}

/**
 * A read receipt this account sent itself (read receipts off): the
 * messages it names are read, in whichever conversation they are; no
 * peer was told, so nothing is marked told.
 */
export function fromOwnNote(history: History, sigs: readonly string[], sigOf: SigOf): Change {
  const named = new Set(sigs);
  const changes: Change[] = [];
  for (const peer of Object.keys(history.model.convs)) {
    const marked = new Map<string, Partial<Msg>>();
    for (const m of history.model.msgs[peer] ?? []) {
      if (m.dir !== 'in' || m.read !== false) continue;
      const sig = sigOf(m);
      if (sig !== undefined && named.has(sig)) marked.set(m.id, { read: true });
    }
    changes.push(markMany(history, peer, marked));
  }
  return merge(...changes);
}

/**
 * This device shows `peer`'s conversation to the person: every unread
 * message there is read. Returns the change and the signatures to send a
 * read receipt for (those no device of ours receipted as read yet).
 */
export function readHere(history: History, peer: string, sigOf: SigOf): { change: Change; sigs: string[] } {
  const marked = new Map<string, Partial<Msg>>();
  const sigs: string[] = [];
  for (const m of history.model.msgs[peer] ?? []) {
    if (m.dir !== 'in') continue;
    if (m.read === false) marked.set(m.id, { read: true });
    const sig = m.kind === 'warning' ? undefined : sigOf(m);
    // only what this account has not told the peer is read already
    if (sig !== undefined && m.read === false && m.told !== 'read') sigs.push(sig);
  }
  // messages stored before read state was kept have none: the count alone goes
  if (marked.size === 0) return { change: history.read(peer), sigs };
  return { change: markMany(history, peer, marked), sigs };
}

/** Rewrite the marked messages and the conversation's unread count, in one change. */
function markMany(history: History, peer: string, marked: Map<string, Partial<Msg>>): Change {
  const conv = history.model.convs[peer];
  const list = history.model.msgs[peer] ?? [];
  if (marked.size === 0) return change();
  const changes = [...marked].map(([id, c]) => history.update(peer, id, c));
  if (conv) {
    const count = unreadCount(list.map((m) => (marked.has(m.id) ? { ...m, ...marked.get(m.id) } : m)));
    if (count !== conv.unread) {
      const next = { ...plain(conv), unread: count };
      changes.push(history.put(next));
    }
  }
  return merge(...changes);
}

/**
 * Receipts waiting to go out, batched: everything added within `delay`
 * ms goes as one receipt per peer and status (of at most `most`
 * signatures, SEND_SIGS unless told). A receipt that fails to go out is kept
 * and tried again with the next batch (`kick`, e.g. when the link is live
 * again); nothing here ever fails a message.
 */
export class ReceiptQueue {
  private due = new Map<string, Set<string>>();
  private timer: ReturnType<typeof setTimeout> | null = null;
  private running: Promise<void> | null = null;
  private held = false;

  constructor(
    /** seal and send one receipt */
    private readonly send: (peer: string, status: ReceiptStatus, sigs: string[]) => Promise<void>,
    /** of a batch's signatures, those that still need this receipt when it goes (another device may have sent it meanwhile) */
    private readonly needed: (peer: string, status: ReceiptStatus, sigs: string[]) => string[] = (_p, _s, sigs) => sigs,
    private readonly delay = 400,
    private readonly most = SEND_SIGS,
  ) {}

  add(peer: string, status: ReceiptStatus, sigs: readonly string[]): void {
    if (sigs.length === 0) return;
    const key = `${status} ${peer}`;
    const set = this.due.get(key) ?? new Set<string>();
    for (const s of sigs) set.add(s);
    this.due.set(key, set);
    this.kick();
  }

  /**
   * Hold receipts back (during a restore: another device may have sent
   * them, which the restore shows later), or let them go.
   */
  hold(on: boolean): void {
    this.held = on;
    if (!on) this.kick();
  }

  /** Send what is due after the delay (once: a later add does not put it off). */
  kick(): void {
    if (this.held || this.timer !== null || this.due.size === 0) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.flush();
    }, this.delay);
  }

  /** Send everything due now; resolves when it is sent or put back. */
  async flush(): Promise<void> {
    if (this.running) await this.running;
    this.running = this.sendDue();
    try {
      await this.running;
    } finally {
      this.running = null;
    }
  }

  get pending(): number {
    let n = 0;
    for (const s of this.due.values()) n += s.size;
    return n;
  }

  clear(): void {
    this.due.clear();
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  private async sendDue(): Promise<void> {
    const batch = this.due;
    this.due = new Map();
    for (const [key, set] of batch) {
      const space = key.indexOf(' ');
      const status = key.slice(0, space) as ReceiptStatus;
      const peer = key.slice(space + 1);
      const sigs = this.needed(peer, status, [...set]);
      for (let i = 0; i < sigs.length; i += this.most) {
        const part = sigs.slice(i, i + this.most);
        try {
          await this.send(peer, status, part);
        } catch {
          // kept for the next batch (not on a timer: the next add or kick)
          const again = this.due.get(key) ?? new Set<string>();
          for (const s of part) again.add(s);
          this.due.set(key, again);
        }
      }
    }
  }
}
