/**
 * Sending. A message is stored (status `sending`) before it is shown, and
 * each status after that is stored before it is shown, so a reload at any
 * moment finds it. Sealed envelopes are kept only while a send is under
 * way: they are remade from the stored message for a retry, and the
 * idempotency key per part makes the server answer a part it already has
 * with its first seq instead of storing it twice.
 */
import * as api from './api';
import { randomBytes, toHex } from './crypto/bytes';
import { seal, type Envelope } from './crypto/envelope';
import { chunkedHeader, fileChunk, inlineFile, textMessage } from './crypto/plaintext';
import { INLINE_MAX, chunkCount, safeMime, tooBig, visibleName } from './files';
import { change, merge, type History } from './history';
import { keys, type Storage } from './storage';
import type { Signer } from './signer';
import type { Msg } from './types';

export function newId(): string {
  return toHex(randomBytes(12));
}

export class Outbox {
  private sealed = new Map<string, Envelope[]>();

  constructor(
    private readonly signer: Signer,
    /** the sender's own handle, as the server knows it */
    private readonly handle: string,
    private readonly storage: Storage,
    private readonly history: History,
  ) {}

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

  private async envelopes(peer: string, msg: Msg): Promise<Envelope[]> {
    const key = this.signer.key;
    if (msg.kind === 'text') return [seal(key, peer, textMessage(msg.text))];
    const f = msg.file!;
    const blob = await this.storage.get<Blob>(f.key);
    if (!blob) throw new Error('the file is no longer in this browser');
    const bytes = new Uint8Array(await blob.arrayBuffer());
    const mime = f.declared ?? f.mime;
    if (bytes.length <= INLINE_MAX) return [seal(key, peer, inlineFile(f.name, mime, bytes))];
    const header = chunkedHeader(f.name, mime, bytes, f.wireId ?? msg.id);
    const out = [seal(key, peer, header)];
    for (let i = 0; i < header.n; i++) out.push(seal(key, peer, fileChunk(header.file_id, bytes, i)));
    return out;
  }

  private async deliver(peer: string, id: string): Promise<void> {
    const msg = this.history.find(peer, id);
    const conv = this.history.model.convs[peer];
    if (!msg || !conv) return;
    if (msg.status !== 'sending') await this.history.commit(this.history.update(peer, id, { status: 'sending', error: undefined }));
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
        const answer = await api.send(this.signer, this.handle, conv.fqhn, envelopes[i], `${id}:${i}`);
        if (i === 0) seq = answer.seq;
        if (msg.file && envelopes.length > 1) {
          await this.history.commit(this.history.update(peer, id, { seq, file: { ...msg.file, received: i + 1 } }));
        }
      }
      const done: Partial<Msg> = { status: 'sent', seq };
      if (msg.file) done.file = { ...msg.file, received: msg.file.n };
      await this.history.commit(this.history.update(peer, id, done));
      this.sealed.delete(id);
    } catch (e) {
      await this.history.commit(this.history.update(peer, id, { status: 'failed', error: e instanceof Error ? e.message : 'not sent' }));
    }
  }

  clear(): void {
    this.sealed.clear();
  }
}
