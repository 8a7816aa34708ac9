/**
 * The inbox pipeline: every item, in seq order, is verified (trust.ts),
 * classified, stored with the cursor in one transaction, and only then
 * shown. The saved cursor therefore always means "everything up to here
 * is stored here". If storing fails, the pipeline stops and says so: the
 * cursor stays put, and the next start reads the item again.
 *
 * Early items (a restore still paging while the live stream brings a new
 * message): a live item may be enqueued `early`, ahead of the cursor. It
 * is shown at once only when order cannot change what it means: a
 * verified text from a sender already pinned, under that sender's key.
 * It is stored (with its signature, by seq) but the cursor does not move;
 * when the catch-up reaches its seq, that seq is recognised as stored
 * (its signature is stored under that very seq, which also holds across a
 * reload) and only the cursor moves. Anything else ahead of the cursor is
 * left for the catch-up, in seq order. So the cursor still means
 * "everything up to here is stored", nothing is shown twice, and trust
 * decisions (pins, key changes, replays) still happen in seq order.
 */
import type { InboxItem } from './api';
import type { Contacts } from './contacts';
import type { KeyPair } from './crypto/keys';
import type { FileInbox, Outcome } from './fileinbox';
import { humanSize, visibleName } from './files';
import { change, merge, type Change, type History } from './history';
import { DirectoryError } from './keydir';
import { keys, type Put, type Storage } from './storage';
import { fromOwnNote, fromPeer, fromSelf, parseReceipt } from './receipts';
import { judge, judgeOwn, type Verdict } from './trust';
import { quote } from './visible';
import { REFUSED, type Conversation, type Msg } from './types';

/** What the inbox tells the app besides storing (receipts.ts). */
export interface InboxHooks {
  /** a message from `peer` was stored here, with its envelope signature; `read`: shown as it came */
  received(peer: string, sig: string, read: boolean): void;
}

export class Inbox {
  cursor = 0;
  /** why the pipeline stopped, when it did */
  failure: string | null = null;
  hooks: InboxHooks = { received: () => undefined };
  private seen = new Set<string>();
  /** the envelope signature of each item stored, by seq, and back (receipts name messages by it) */
  private sigBySeq = new Map<number, string>();
  private seqBySig = new Map<string, number>();
  private queue: Promise<void> = Promise.resolve();
  /** seqs above the cursor stored early (see the module's docstring) */
  private early = new Set<number>();

  constructor(
    private readonly me: KeyPair,
    private readonly storage: Storage,
    private readonly contacts: Contacts,
    private readonly history: History,
    private readonly files: FileInbox,
    /**
     * Whether the registry names `primary` as `fqhn`'s key: asked before a
     * first-use pin, so a relay that relabels a stranger's first message
     * as someone not yet pinned is caught (a lookup that fails is a no;
     * a DirectoryError thrown says the key directory does not vouch for it)
     */
    private readonly confirm: (fqhn: string, primary: string) => Promise<boolean>,
    /**
     * The loud warning for a plaintext whose `head` disagrees with the key
     * directory we see (keydir.ts), or null
     */
    private readonly gossip: (head: unknown, peer?: string) => Promise<string | null>,
    /** told when the pipeline stops */
    private readonly onFailure: (why: string) => void = () => undefined,
    private readonly now: () => number = Date.now,
  ) {}

  async load(): Promise<void> {
    this.cursor = (await this.storage.get<number>(keys.cursor)) ?? 0;
    for (const [key, seq] of await this.storage.entriesWith<number>('sig:')) this.remember(key.slice(4), seq);
  }

  private remember(sig: string, seq: number): void {
    this.seen.add(sig);
    this.sigBySeq.set(seq, sig);
    this.seqBySig.set(sig, seq);
  }

  /** The envelope signature of a received message (receipts name it by that). */
  sigOf = (msg: Msg): string | undefined => (msg.dir === 'in' && msg.seq !== undefined ? this.sigBySeq.get(msg.seq) : undefined);

  /** The received message of `peer`'s conversation that has this signature. */
  messageOf(peer: string, sig: string): Msg | undefined {
    const seq = this.seqBySig.get(sig);
    return seq === undefined ? undefined : this.history.find(peer, `in:${seq}`);
  }

  /**
   * Queue an item; the returned promise settles when it (and all before it)
   * are handled. `early`: a live item that may be ahead of the cursor.
   */
  enqueue(item: InboxItem, early = false): Promise<void> {
    this.queue = this.queue.then(() => this.ingest(item, early));
    return this.queue;
  }

  /** Everything queued so far is handled. */
  settled(): Promise<void> {
    return this.queue;
  }

  /** Whether the item at `seq` is stored already: shown early, in this run or before a reload. */
  private storedEarly(item: InboxItem, seq: number): boolean {
    if (this.early.has(seq)) return true;
    const sig = (item?.envelope as { sig?: unknown } | null)?.sig;
    return typeof sig === 'string' && this.seqBySig.get(sig) === seq;
  }

  private async ingest(item: InboxItem, early = false): Promise<void> {
    if (this.failure !== null) return;
    const seq = item?.seq;
    if (typeof seq !== 'number' || !Number.isInteger(seq) || seq <= this.cursor) return;
    if (this.storedEarly(item, seq)) {
      if (early) return;
      // its turn: it is stored, only the cursor moves
      try {
        await this.history.commit(change([[keys.cursor, seq]]));
        this.cursor = seq;
        this.early.delete(seq);
      } catch (e) {
        this.stop(e, seq);
      }
      return;
    }
    try {
      const rule = item.direction === 'out' ? judgeOwn : judge;
      // another server never took a message we sent: the marked copy (and the server's notice repeating it) is no replay
      const undeliverable = item.direction === 'out' && item.undeliverable === true;
      let verdict = rule(this.me, item, this.contacts, (sig) => !undeliverable && this.seen.has(sig), this.now());
      // (a note to ourselves pins nobody: nothing to confirm)
      const unconfirmed =
        verdict.ok && verdict.pinNew && verdict.sender !== this.me.primary ? await this.unconfirmed(verdict.handle, verdict.sender) : null;
      if (verdict.ok && unconfirmed !== null) {
        verdict = {
          ok: false,
          reason: verdict.out
            ? `A message shown as sent by you to ${verdict.handle} is addressed to a key ${unconfirmed}. It is not shown, and nothing is pinned.`
            : `A first message labelled ${verdict.handle} is signed by a key ${unconfirmed}. It is not shown, and nothing is pinned.`,
          peer: null,
          sig: verdict.sig,
          at: verdict.at,
        };
      }
      // the sender's key directory head, against ours (of the sender's domain; our own copies carry our server's): a split view is warned about on this message
      // ahead of the cursor, only what order cannot change is shown now; the rest waits for its turn
      if (early && !(verdict.ok && !verdict.out && !verdict.pinNew && verdict.plain.type === 'text' && typeof verdict.plain.text === 'string' && unconfirmed === null)) return;
      const split = verdict.ok && 'head' in verdict.plain ? await this.gossip(verdict.plain.head, item.direction === 'out' ? undefined : verdict.handle).catch(() => null) : null;
      const outcome = await this.classify(seq, verdict, undeliverable);
      const puts: Put[] = early ? [] : [[keys.cursor, seq]];
      let remember = () => undefined as void;
      if (verdict.sig !== undefined && !this.seen.has(verdict.sig)) {
        const sig = verdict.sig;
        puts.push([keys.sig(sig), seq]);
        remember = () => this.remember(sig, seq);
      }
      await this.history.commit(merge(outcome, change(puts, remember)));
      if (early) this.early.add(seq);
      else this.cursor = seq;
      if (verdict.ok && !verdict.out && verdict.plain.type !== 'receipt') {
        const shown = this.history.find(verdict.sender, `in:${seq}`);
        if (shown?.dir === 'in' && shown.kind !== 'warning') this.hooks.received(verdict.sender, verdict.sig, shown.read === true);
      }
      // a receipt shows nothing, not even this: the lasting banner says it
      if (split !== null && verdict.ok && verdict.plain.type !== 'receipt') {
        const warning: Msg = { id: `in:${seq}:keydir`, dir: 'in', kind: 'warning', text: split, ts: verdict.at, seq };
        await this.history.commit(this.history.add(verdict.sender, warning));
      }
    } catch (e) {
      this.stop(e, seq);
    }
  }

  private stop(e: unknown, seq: number): void {
    this.failure = `Saving received messages failed (${e instanceof Error ? e.message : String(e)}). Nothing after message ${seq} is shown; reload the page to try again.`;
    this.onFailure(this.failure);
  }

  /** Null when the first-use pin may go ahead, else why not (the end of a sentence). */
  private async unconfirmed(fqhn: string, primary: string): Promise<string | null> {
    const no = `the registry does not give ${fqhn}`;
    try {
      return (await this.confirm(fqhn, primary)) ? null : no;
    } catch (e) {
      // the key directory refused it: say why, loudly
      return e instanceof DirectoryError ? `the key directory does not vouch for under ${fqhn} (${e.message})` : no;
    }
  }

  private async classify(seq: number, v: Verdict, undeliverable = false): Promise<Change> {
    const id = `in:${seq}`;
    if (!v.ok) {
      const msg: Msg = { id, dir: 'in', kind: 'warning', text: v.reason, ts: v.at, seq };
      return this.history.add(v.peer ?? REFUSED, msg, v.keyChanged ? { keyChanged: v.keyChanged, newKey: v.newKey } : {});
    }
    // a receipt is never a message: it pins nobody and opens no conversation
    if (v.plain.type === 'receipt') return this.receipt(seq, v);
    let opened = change();
    let base: Conversation | undefined;
    if (v.pinNew) {
      base = this.history.model.convs[v.sender] ?? this.history.fresh(v.sender, v.handle, v.at);
      const pin = this.contacts.pinRecord(v.handle, v.sender);
      opened = merge(change([pin], () => this.contacts.apply(v.handle, v.sender)), this.history.put(base));
    }
    const add = (msg: Msg) => this.history.add(v.sender, msg, {}, base);
    if (v.out) return merge(opened, this.sentCopy(seq, v, add, undeliverable));
    const p = v.plain;
    let result: Outcome | Change;
    switch (p.type) {
      case 'text':
        result = typeof p.text === 'string'
          ? add({ id, dir: 'in', kind: 'text', text: p.text, ts: v.at, seq })
          : add({ id, dir: 'in', kind: 'warning', text: `A message from ${v.handle} has no text. It is not shown.`, ts: v.at, seq });
        break;
      case 'file':
        if (base && !this.history.model.convs[v.sender]) {
          // the file module adds to the model's conversation: store it first
          await this.history.commit(opened);
          opened = change();
        }
        result = p.mode === 'inline'
          ? this.files.inline(v.sender, id, seq, v.at, p)
          : p.mode === 'chunked'
            ? await this.files.header(v.sender, id, seq, v.at, p)
            : add({ id, dir: 'in', kind: 'warning', text: `A file from ${v.handle} has an unknown mode. It is not shown.`, ts: v.at, seq });
        break;
      case 'file_chunk':
        if (base && !this.history.model.convs[v.sender]) {
          await this.history.commit(opened);
          opened = change();
        }
        result = await this.files.chunk(v.sender, seq, v.at, p);
        break;
      case 'file_share':
        result = typeof p.blake3 === 'string' && /^[0-9a-f]{64}$/.test(p.blake3)
          ? add({
              id,
              dir: 'in',
              kind: 'share',
              text: `${visibleName(p.name)} (${humanSize(Number(p.size) || 0)})`,
              ts: v.at,
              seq,
              share: { name: visibleName(p.name), size: Number(p.size) || 0, blake3: p.blake3, from: v.handle },
            })
          : add({ id, dir: 'in', kind: 'warning', text: `A file offer from ${v.handle} has no valid BLAKE3 hash. It is not shown.`, ts: v.at, seq });
        break;
      default:
        result = add({ id, dir: 'in', kind: 'warning', text: `${v.handle} sent a kind of message this app does not know (${quote(p.type, 40)}).`, ts: v.at, seq });
    }
    return merge(opened, 'change' in result ? result.change : result);
  }

  /**
   * A verified receipt: from a pinned peer it moves our messages to that
   * peer on; as the server's copy of one this account sent (from any
   * device), it carries our read state here. From anyone not pinned it
   * is ignored (not even a warning: it shows nothing and changes nothing).
   */
  private receipt(seq: number, v: Extract<Verdict, { ok: true }>): Change {
    const r = parseReceipt(v.plain);
    // to ourselves, signed by our own key: read state from a device whose read receipts are off
    if (!v.out && v.sender === this.me.primary) return r?.status === 'read' ? fromOwnNote(this.history, r.sigs, this.sigOf) : change();
    if (v.pinNew) return change();
    if (r === null) {
      const text = v.out
        ? `A receipt you sent to ${v.handle} is malformed. It is ignored.`
        : `A receipt from ${v.handle} is malformed. It is ignored.`;
      return this.history.add(v.sender, { id: `in:${seq}`, dir: 'in', kind: 'warning', text, ts: v.at, seq, read: true });
    }
    return v.out ? fromSelf(this.history, v.sender, r.status, r.sigs, this.sigOf) : fromPeer(this.history, v.sender, r.status, r.sigs);
  }

  /**
   * The server's copy of a message this account sent: nothing to do when
   * this browser sent it (its local copy has the same signature); else
   * shown as our own sent message in the conversation with its
   * recipient. File pieces and receipts show nothing.
   */
  private sentCopy(seq: number, v: Extract<Verdict, { ok: true }>, add: (msg: Msg) => Change, undeliverable = false): Change {
    const peer = v.handle.slice(v.handle.lastIndexOf('@') + 1);
    const failed: Partial<Msg> = undeliverable
      ? { status: 'failed', undeliverable: true, transient: false, error: `not delivered: ${peer} never took this message` }
      : {};
    const shown = this.history.sentWithSig(v.sender, v.sig);
    if (shown !== undefined) return undeliverable && !shown.undeliverable ? this.history.update(v.sender, shown.id, failed) : change();
    const id = `out:${seq}`;
    const p = v.plain;
    if (p.type === 'text' && typeof p.text === 'string') {
      return add({ id, dir: 'out', kind: 'text', text: p.text, ts: v.at, status: 'sent', sigs: [v.sig], ...failed });
    }
    if ((p.type === 'file' || p.type === 'file_share') && typeof p.name === 'string') {
      const text = `You sent ${visibleName(p.name)} (${humanSize(Number(p.size) || 0)}) from another device.`;
      return add({ id, dir: 'out', kind: 'note', text, ts: v.at, status: 'sent', sigs: [v.sig], ...failed });
    }
    return change();
  }
}
