/**
 * Sending. A message is stored (status `sending`) before it is shown, and
 * each status after that is stored before it is shown, so a reload at any
 * moment finds it. Sealed envelopes are kept in memory until the send
 * succeeds, so a retry sends the very same envelope, and the idempotency
 * key per part makes the server answer a part it already has with its
 * first seq instead of storing it twice. After a reload the message is
 * sealed again; a part the server already has then answers 409
 * `idempotency_conflict` under the same key, which means it was delivered.
 *
 * A send that failed because the server could not be reached is sent
 * again by itself when the link is live again (`resend`): the same
 * idempotency keys make that exactly once, even when the first attempt
 * did reach the server and only its answer was lost.
 */
import * as api from './api';
import { ApiError } from './api';
import { randomBytes, toHex } from './crypto/bytes';
import { seal, type Envelope } from './crypto/envelope';
import { chunkedHeader, fileChunk, inlineFile, textMessage } from './crypto/plaintext';
import { INLINE_MAX, chunkCount, safeMime, tooBig, visibleName } from './files';
import { change, merge, type History } from './history';
import type { BriefHead } from './keydir';
import { keys, type Storage } from './storage';
import type { Signer } from './signer';
import { raised, receipt, type ReceiptStatus } from './receipts';
import type { Msg } from './types';

/** A failure that may pass when the server is back (not a refusal of the message itself). */
export function transient(e: unknown): boolean {
  if (e instanceof ApiError) return e.code === 'unreachable' || e.status >= 500 || e.status === 429 || e.status === 0;
  return false;
}

export function newId(): string {
  return toHex(randomBytes(12));
}

export class Outbox {
  private sealed = new Map<string, Envelope[]>();
  /** messages being sent now: a retry of one of them waits for nothing and does nothing */
  private busy = new Set<string>();

  constructor(
    private readonly signer: Signer,
    /** the sender's own handle, as the server knows it */
    private readonly handle: string,
    private readonly storage: Storage,
    private readonly history: History,
    /** what every plaintext carries besides itself: the newest verified key directory head (keydir.ts) */
    private readonly head: () => BriefHead | null,
  ) {}

  /** `plaintext` with our newest verified head, so the recipient can compare directories. */
  private stamped<T extends object>(plaintext: T): T & { head?: BriefHead } {
    const head = this.head();
    return head === null ? plaintext : { ...plaintext, head };
  }

  async sendText(peer: string, text: string): Promise<void> {
    const msg: Msg = { id: newId(), dir: 'out', kind: 'text', text, ts: new Date().toISOString(), status: 'sending' };
    await this.history.commit(this.history.add(peer, msg));
    await this.deliver(peer, msg.id);
  }

  /** Throws with a friendly sentence for files over 10 MiB. */
  async sendFile(peer: string, file: File): Promise<void> {
    const big = tooBig(file.size);
    if (big) throw new Error(big);
    const id = newId();
    const bytes = new Uint8Array(await file.arrayBuffer());
    const declared = file.type || 'application/octet-stream';
    const key = keys.file(this.signer.key.primary, id);
    const mime = safeMime(declared, bytes);
    const name = visibleName(file.name);
    const n = bytes.length <= INLINE_MAX ? 1 : chunkCount(bytes.length);
    const msg: Msg = {
      id,
      dir: 'out',
      kind: 'file',
      text: name,
      ts: new Date().toISOString(),
      status: 'sending',
      file: { key, wireId: n > 1 ? newId() : undefined, name: file.name, mime, declared, size: bytes.length, n, received: 0, state: 'ready' },
    };
    await this.history.commit(merge(change([[key, new Blob([bytes as BlobPart], { type: mime })]]), this.history.add(peer, msg)));
    await this.deliver(peer, id);
  }

  retry(peer: string, id: string): Promise<void> {
    return this.deliver(peer, id);
  }

  /** Send again, once each, every failed message the server did not refuse. */
  async resend(): Promise<void> {
    const due: [string, string][] = [];
    for (const [peer, list] of Object.entries(this.history.model.msgs)) {
      for (const m of list) if (m.dir === 'out' && m.status === 'failed' && m.transient && !this.busy.has(m.id)) due.push([peer, m.id]);
    }
    for (const [peer, id] of due) await this.deliver(peer, id);
  }

  private async envelopes(peer: string, msg: Msg): Promise<Envelope[]> {
    const key = this.signer.key;
    if (msg.kind === 'text') return [seal(key, peer, this.stamped(textMessage(msg.text)))];
    const f = msg.file!;
    const blob = await this.storage.get<Blob>(f.key);
    if (!blob) throw new Error('the file is no longer in this browser');
    const bytes = new Uint8Array(await blob.arrayBuffer());
    const mime = f.declared ?? f.mime;
    if (bytes.length <= INLINE_MAX) return [seal(key, peer, this.stamped(inlineFile(f.name, mime, bytes)))];
    const header = chunkedHeader(f.name, mime, bytes, f.wireId ?? msg.id);
    const out = [seal(key, peer, this.stamped(header))];
    for (let i = 0; i < header.n; i++) out.push(seal(key, peer, this.stamped(fileChunk(header.file_id, bytes, i))));
    return out;
  }

  private async deliver(peer: string, id: string): Promise<void> {
    if (this.busy.has(id)) return;
    this.busy.add(id);
    try {
      await this.attempt(peer, id);
    } finally {
      this.busy.delete(id);
    }
  }

  private async attempt(peer: string, id: string): Promise<void> {
    const msg = this.history.find(peer, id);
    const conv = this.history.model.convs[peer];
    if (!msg || !conv) return;
    if (msg.status !== 'sending') await this.history.commit(this.history.update(peer, id, { status: 'sending', error: undefined, transient: false }));
    try {
      let envelopes = this.sealed.get(id);
      if (!envelopes) {
        envelopes = await this.envelopes(peer, msg);
        this.sealed.set(id, envelopes);
        // stored before sending: the server's copy of it, which may come
        // back on the stream before the answer, is recognised as this one
        const sigs = [...(this.history.find(peer, id)?.sigs ?? []), envelopes[0].sig];
        await this.history.commit(this.history.update(peer, id, { sigs }));
      }
      // parts already sent are answered 200 from their idempotency key
      const start = msg.file ? Math.min(msg.file.received, envelopes.length) : 0;
      let seq = msg.seq;
      for (let i = start; i < envelopes.length; i++) {
        const answer = await this.sendPart(conv.fqhn, envelopes[i], `${id}:${i}`);
        if (i === 0 && answer) seq = answer.seq;
        if (msg.file && envelopes.length > 1) {
          await this.history.commit(this.history.update(peer, id, { seq, file: { ...msg.file, received: i + 1 } }));
        }
      }
      // a receipt may have come in before the answer: never back to `sent`
      const now = this.history.find(peer, id)?.status;
      const done: Partial<Msg> = { status: now === 'delivered' || now === 'read' ? raised(now, 'delivered') : 'sent', seq };
      if (msg.file) done.file = { ...msg.file, received: msg.file.n };
      await this.history.commit(this.history.update(peer, id, done));
      this.sealed.delete(id);
    } catch (e) {
      const failed: Partial<Msg> = { status: 'failed', error: e instanceof Error ? e.message : 'not sent', transient: transient(e) };
      await this.history.commit(this.history.update(peer, id, failed));
    }
  }

  /**
   * One part; null when the server already holds this part under its key
   * but from an earlier sealing (a reload between the send and its answer
   * re-seals the message, and the server answers that with a conflict):
   * it is delivered, only its seq is not known here.
   */
  private async sendPart(to: string, envelope: Envelope, key: string): Promise<{ seq: number } | null> {
    try {
      return await api.send(this.signer, this.handle, to, envelope, key);
    } catch (e) {
      if (e instanceof ApiError && e.code === 'idempotency_conflict') return null;
      throw e;
    }
  }

  /**
   * One receipt to `peer` (receipts.ts batches them). It is not stored
   * here: it shows nothing, and a lost one is only a status not moving on.
   */
  async sendReceipt(peer: string, status: ReceiptStatus, sigs: string[]): Promise<void> {
    const conv = this.history.model.convs[peer];
    if (!conv) return;
    const envelope = seal(this.signer.key, peer, this.stamped(receipt(status, sigs)));
    await api.send(this.signer, this.handle, conv.fqhn, envelope, `receipt:${newId()}`);
  }

  /** A read receipt to this account itself (read receipts off: only our own devices learn it). */
  async sendReadNote(sigs: string[]): Promise<void> {
    const envelope = seal(this.signer.key, this.signer.key.primary, this.stamped(receipt('read', sigs)));
    await api.send(this.signer, this.handle, this.handle, envelope, `receipt:${newId()}`);
  }

  clear(): void {
    this.sealed.clear();
  }
}
