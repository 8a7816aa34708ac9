/**
 * Receiving files. Everything is keyed by the verified sender and the
 * message that carried it, never by a name the sender chose: one sender's
 * `file_id` cannot reach another sender's file, and a sender reusing a
 * `file_id` for a second file is refused. Pieces that arrive before their
 * description wait under a byte quota per sender, and pieces whose
 * description never comes are dropped after a while, with a note.
 */
import { fromB64, fromB64url } from './crypto/bytes';
import { CHUNK_SIZE, FILE_MAX, INLINE_MAX, blake3Hex, humanSize, safeMime, visibleName } from './files';
import { change, merge, type Change, type History } from './history';
import { keys, type Put, type Storage } from './storage';
import type { FileInfo, Msg } from './types';

/** Bytes of pieces one sender may have waiting for their description. */
export const SENDER_QUOTA = 24 * 1024 * 1024;
/** How long pieces wait for their description before they are dropped. */
export const ORPHAN_MS = 24 * 60 * 60 * 1000;
const MAX_CHUNKS = Math.ceil(FILE_MAX / CHUNK_SIZE);
const FILE_ID_RE = /^[0-9a-zA-Z_-]{1,64}$/;

/** A chunked file announced by a message: where its pieces go. */
export interface Binding {
  msgId: string;
  n: number;
  size: number;
  blake3: string;
  mime: string;
  done: boolean;
}

/** The pieces of one file id waiting, per sender. */
interface Waiting {
  bytes: number;
  first: number;
  have: number[];
}
type Pending = Record<string, Waiting>;

/** What a received file message amounts to. */
export interface Outcome {
  change: Change;
  /** a message to show (a file, or a warning), if any */
  show?: Msg;
}

/** File data is unpadded base64url; standard base64 is accepted too. */
function decodeData(text: unknown): Uint8Array | null {
  if (typeof text !== 'string') return null;
  try {
    return /[+/=]/.test(text) ? fromB64(text) : fromB64url(text);
  } catch {
    return null;
  }
}

function total(p: Pending): number {
  return Object.values(p).reduce((s, w) => s + w.bytes, 0);
}

export class FileInbox {
  private binds = new Map<string, Binding>();
  private pending = new Map<string, Pending>();
  /** senders already told about the quota in this page's life */
  private overQuota = new Set<string>();

  constructor(
    private readonly storage: Storage,
    private readonly history: History,
    private readonly now: () => number = Date.now,
    /** bytes of pieces one sender may have waiting */
    private readonly quota: number = SENDER_QUOTA,
  ) {}

  async load(): Promise<void> {
    for (const [key, b] of await this.storage.entriesWith<Binding>('bind:')) this.binds.set(key, b);
    for (const [key, p] of await this.storage.entriesWith<Pending>('pending:')) this.pending.set(key.slice(8), p);
  }

  /** `file` with mode `inline`: checked and stored under the sender and message. */
  inline(sender: string, id: string, seq: number, ts: string, plain: Record<string, unknown>): Outcome {
    const bytes = decodeData(plain.data);
    const name = visibleName(plain.name);
    if (bytes === null || bytes.length !== plain.size || bytes.length > INLINE_MAX) {
      return this.warn(sender, id, seq, ts, `A file from this contact (${name}) arrived damaged: its data does not match its size.`);
    }
    const mime = safeMime(plain.mime, bytes);
    const key = keys.file(sender, id);
    const file: FileInfo = { key, name, mime, size: bytes.length, n: 1, received: 1, state: 'ready' };
    const msg: Msg = { id, dir: 'in', kind: 'file', text: name, ts, seq, file };
    return { change: merge(change([[key, new Blob([bytes as BlobPart], { type: mime })]]), this.history.add(sender, msg)), show: msg };
  }

  /** `file` with mode `chunked`: binds the sender's file id to this message, then waits for the pieces. */
  async header(sender: string, id: string, seq: number, ts: string, plain: Record<string, unknown>): Promise<Outcome> {
    const name = visibleName(plain.name);
    const fileId = plain.file_id;
    const n = plain.n;
    const size = plain.size;
    const digest = plain.blake3;
    if (
      typeof fileId !== 'string' || !FILE_ID_RE.test(fileId) ||
      typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > MAX_CHUNKS ||
      typeof size !== 'number' || !Number.isInteger(size) || size < 0 || size > FILE_MAX ||
      typeof digest !== 'string' || !/^[0-9a-f]{64}$/.test(digest)
    ) {
      return this.warn(sender, id, seq, ts, `A file from this contact (${name}) arrived with an invalid description. It is not shown.`);
    }
    const bindKey = keys.bind(sender, fileId);
    if (this.binds.has(bindKey)) {
      return this.warn(sender, id, seq, ts, `A file from this contact (${name}) reuses the id of an earlier file. It is refused, and the earlier file is untouched.`);
    }
    const binding: Binding = { msgId: id, n, size, blake3: digest, mime: typeof plain.mime === 'string' ? plain.mime : '', done: false };
    const waiting = this.pending.get(sender)?.[fileId];
    const file: FileInfo = { key: keys.file(sender, id), wireId: fileId, name, mime: 'application/octet-stream', size, n, received: waiting?.have.length ?? 0, state: 'receiving', blake3: digest };
    const msg: Msg = { id, dir: 'in', kind: 'file', text: name, ts, seq, file };
    const bound = change([[bindKey, binding]], () => this.binds.set(bindKey, binding));
    const shown = this.history.add(sender, msg);
    if (waiting && waiting.have.length >= n) {
      const done = await this.assemble(sender, fileId, binding, file, new Map());
      return { change: merge(bound, shown, done), show: msg };
    }
    return { change: merge(bound, shown), show: msg };
  }

  /** `file_chunk`: kept under the sender until its file is whole. */
  async chunk(sender: string, seq: number, ts: string, plain: Record<string, unknown>): Promise<Outcome> {
    const fileId = plain.file_id;
    const i = plain.i;
    const bytes = decodeData(plain.data);
    if (typeof fileId !== 'string' || !FILE_ID_RE.test(fileId) || typeof i !== 'number' || !Number.isInteger(i) || i < 0 || i >= MAX_CHUNKS || bytes === null || bytes.length > CHUNK_SIZE) {
      return this.warn(sender, `in:${seq}`, seq, ts, 'A piece of a file from this contact is malformed. It is dropped.');
    }
    const binding = this.binds.get(keys.bind(sender, fileId));
    if (binding?.done || (binding && i >= binding.n)) return { change: change() };
    const pending: Pending = { ...(this.pending.get(sender) ?? {}) };
    const waiting: Waiting = pending[fileId] ? { ...pending[fileId], have: [...pending[fileId].have] } : { bytes: 0, first: this.now(), have: [] };
    if (waiting.have.includes(i)) return { change: change() };
    if (total(pending) + bytes.length > this.quota) {
      if (this.overQuota.has(sender)) return { change: change() };
      this.overQuota.add(sender);
      return this.warn(sender, `in:${seq}`, seq, ts, `Pieces of files from this contact are over the ${humanSize(this.quota)} that may wait for their description; further pieces are dropped.`, 'note');
    }
    waiting.have.push(i);
    waiting.bytes += bytes.length;
    pending[fileId] = waiting;
    const stored = change(
      [[keys.chunk(sender, fileId, i), bytes], [keys.pending(sender), pending]],
      () => this.pending.set(sender, pending),
    );
    if (!binding) return { change: stored };
    const msg = this.history.find(sender, binding.msgId);
    if (!msg?.file) return { change: stored };
    if (waiting.have.length < binding.n) {
      return { change: merge(stored, this.history.update(sender, binding.msgId, { file: { ...msg.file, received: waiting.have.length } })) };
    }
    const done = await this.assemble(sender, fileId, binding, msg.file, new Map([[i, bytes]]));
    return { change: merge(stored, done) };
  }

  /** Join, check against the announced size and BLAKE3, keep; the pieces go. */
  private async assemble(sender: string, fileId: string, binding: Binding, file: FileInfo, fresh: Map<number, Uint8Array>): Promise<Change> {
    const names = Array.from({ length: binding.n }, (_, i) => keys.chunk(sender, fileId, i));
    const stored = await this.storage.getMany<Uint8Array>(names.filter((_, i) => !fresh.has(i)));
    const parts: Uint8Array[] = [];
    let next = 0;
    for (let i = 0; i < binding.n; i++) parts.push(fresh.get(i) ?? stored[next++] ?? new Uint8Array());
    const whole = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
    let offset = 0;
    for (const p of parts) {
      whole.set(p, offset);
      offset += p.length;
    }
    const ok = whole.length === binding.size && blake3Hex(whole) === binding.blake3;
    const mime = ok ? safeMime(binding.mime, whole) : file.mime;
    const finished: Binding = { ...binding, done: true };
    const bindKey = keys.bind(sender, fileId);
    const pending: Pending = { ...(this.pending.get(sender) ?? {}) };
    delete pending[fileId];
    const puts: Put[] = [[bindKey, finished], [keys.pending(sender), pending]];
    if (ok) puts.push([file.key, new Blob([whole as BlobPart], { type: mime })]);
    const updated = this.history.update(sender, binding.msgId, {
      file: { ...file, mime, received: binding.n, state: ok ? 'ready' : 'failed' },
      error: ok ? undefined : 'the file arrived damaged (its size or BLAKE3 does not match)',
    });
    const stateChange = change(puts, () => {
      this.binds.set(bindKey, finished);
      this.pending.set(sender, pending);
    }, names);
    return merge(stateChange, updated);
  }

  /**
   * Drop pieces that waited longer than `ORPHAN_MS` for a description,
   * with a note in the sender's conversation saying how much went.
   */
  async expire(): Promise<void> {
    const limit = this.now() - ORPHAN_MS;
    for (const [sender, pending] of [...this.pending]) {
      const old = Object.entries(pending).filter(([fileId, w]) => w.first < limit && !this.binds.has(keys.bind(sender, fileId)));
      if (old.length === 0) continue;
      const kept: Pending = Object.fromEntries(Object.entries(pending).filter(([id]) => !old.some(([o]) => o === id)));
      const dels = old.flatMap(([fileId, w]) => w.have.map((i) => keys.chunk(sender, fileId, i)));
      const pieces = old.reduce((s, [, w]) => s + w.have.length, 0);
      const bytes = old.reduce((s, [, w]) => s + w.bytes, 0);
      const ts = new Date(this.now()).toISOString();
      const note: Msg = {
        id: `note:${this.now()}:${sender.slice(8, 16)}`,
        dir: 'in',
        kind: 'note',
        text: `${pieces} pieces of files (${humanSize(bytes)}) from this contact never got their description and were dropped.`,
        ts,
      };
      const peer = this.history.model.convs[sender] ? sender : 'refused';
      await this.history.commit(
        merge(change([[keys.pending(sender), kept]], () => this.pending.set(sender, kept), dels), this.history.add(peer, note)),
      );
    }
  }

  private warn(sender: string, id: string, seq: number, ts: string, text: string, kind: 'warning' | 'note' = 'warning'): Outcome {
    const msg: Msg = { id, dir: 'in', kind, text, ts, seq };
    return { change: this.history.add(sender, msg), show: msg };
  }
}
