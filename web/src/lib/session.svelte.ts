/**
 * The signed-in person's state: the account, the unlocked key, the
 * conversations and their messages, and the live link to the inbox.
 *
 * Every received item goes through one queue, in seq order, so the saved
 * cursor always means "everything up to here is stored locally". The app
 * never acknowledges (DELETE) on its own: the same key may be open in the
 * CLI or another browser, and each keeps its own cursor.
 */
import * as api from './api';
import { ApiError, type HandleRecord, type InboxItem } from './api';
import { fromB64, fromB64url, randomBytes, toHex } from './crypto/bytes';
import { EnvelopeError, open, seal, type Envelope } from './crypto/envelope';
import { parseHandle } from './crypto/handles';
import { KeyPair } from './crypto/keys';
import { mnemonicToSeed, seedToMnemonic } from './crypto/mnemonic';
import { registration } from './crypto/registration';
import { nextEvent } from './crypto/sigchain';
import { nowRfc3339 } from './crypto/time';
import { openSeed, sealSeed, type SealedSeed } from './crypto/vault';
import { db } from './db';
import { INLINE_MAX, blake3Hex, chunkCount, humanSize, tooBig } from './files';
import { chunkedHeader, fileChunk, inlineFile, textMessage } from './crypto/plaintext';
import type { Account, Conversation, Msg } from './types';

export type LinkStatus = 'connecting' | 'live' | 'reconnecting';

interface Vault {
  sealed: SealedSeed;
  account: Account;
}

interface IncomingFile {
  peer: string;
  msgId: string;
  n: number;
  size: number;
  blake3: string;
  mime: string;
}

const RETRY_MAX_MS = 4000;

function newId(): string {
  return toHex(randomBytes(12));
}

/** File data is unpadded base64url; standard base64 is accepted too. */
function decodeData(text: unknown): Uint8Array {
  const t = String(text);
  return /[+/=]/.test(t) ? fromB64(t) : fromB64url(t);
}

function short(primary: string): string {
  return primary.slice(8, 20) + '…';
}

export class Session {
  loaded = $state(false);
  account = $state<Account | null>(null);
  locked = $state(false);
  convs = $state<Record<string, Conversation>>({});
  msgs = $state<Record<string, Msg[]>>({});
  status = $state<LinkStatus>('connecting');
  /** why the server refuses this account (its key or handle is gone), if it does */
  refused = $state<string | null>(null);
  /** true when another tab of this browser already runs the account */
  elsewhere = $state(false);
  active = $state<string | null>(null);
  fileUrls = $state<Record<string, string>>({});
  contacts = $state<Record<string, string>>({});

  key: KeyPair | null = null;
  private vault: Vault | null = null;
  private cursor = 0;
  private queue: Promise<void> = Promise.resolve();
  private source: EventSource | null = null;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private failures = 0;
  private running = false;
  private dirty = new Set<string>();
  private saveTimer: ReturnType<typeof setTimeout> | null = null;
  private saving: Promise<void> = Promise.resolve();
  private outbox = new Map<string, Envelope[]>();

  async load(): Promise<void> {
    this.vault = (await db.get<Vault>('vault')) ?? null;
    this.account = this.vault?.account ?? null;
    this.locked = this.vault !== null;
    this.loaded = true;
  }

  // ---- accounts --------------------------------------------------------

  /** Register `handle` for a new key and start its sigchain. */
  async create(handle: string, key: KeyPair, passphrase: string): Promise<void> {
    const { server } = await api.healthz();
    const record = await api.register(registration(key, handle, server, nowRfc3339()));
    const account = this.accountOf(record, server);
    account.chainStarted = await this.startChain(key, account);
    await this.saveVault(key, account, passphrase);
    await this.begin(key, account);
  }

  /** Log in from the 24 words: the key must already have a handle here. */
  async login(words: string, passphrase: string): Promise<void> {
    const key = new KeyPair(mnemonicToSeed(words));
    const [{ server }, record] = await Promise.all([api.healthz(), api.byPrimary(key.primary)]);
    if (record === null) {
      throw new ApiError('not_found', 'No account on this server uses these words. Check them, or create a new account.');
    }
    const account = this.accountOf(record, server);
    account.chainStarted = true;
    await this.saveVault(key, account, passphrase);
    await this.begin(key, account);
  }

  async unlock(passphrase: string): Promise<void> {
    if (!this.vault) throw new Error('there is no account in this browser');
    const seed = await openSeed(this.vault.sealed, passphrase);
    await this.begin(new KeyPair(seed), this.vault.account);
  }

  /**
   * Remove from the server what this browser has already saved. Only when
   * the person asks: other devices holding the key may not have it yet.
   */
  async clearServerCopies(): Promise<number> {
    await this.queue;
    await this.flush();
    if (!this.key || !this.account || this.cursor === 0) return 0;
    return (await api.acknowledge(this.key, this.account.handle, this.cursor)).deleted;
  }

  /** The words again, after the passphrase proves it is the owner asking. */
  async revealWords(passphrase: string): Promise<string> {
    if (!this.vault) throw new Error('there is no account in this browser');
    return seedToMnemonic(await openSeed(this.vault.sealed, passphrase));
  }

  /** Log out: close the stream and wipe everything this app stored. */
  async logout(): Promise<void> {
    await this.forget();
    this.vault = null;
    this.account = null;
    this.locked = false;
    this.convs = {};
    this.msgs = {};
    this.contacts = {};
    this.fileUrls = {};
    this.cursor = 0;
  }

  private accountOf(record: HandleRecord, server: string): Account {
    return {
      handle: record.handle,
      fqhn: record.fqhn,
      primary: record.primary,
      server,
      sigchainUrl: record.sigchain_url,
      chainStarted: false,
    };
  }

  /** Stop everything and wipe the store (nothing pending may write after). */
  private async forget(): Promise<void> {
    this.stop();
    this.key = null;
    this.dirty.clear();
    if (this.saveTimer !== null) clearTimeout(this.saveTimer);
    this.saveTimer = null;
    await this.saving;
    for (const url of Object.values(this.fileUrls)) URL.revokeObjectURL(url);
    this.fileUrls = {};
    this.outbox.clear();
    this.queue = Promise.resolve();
    await db.wipe();
  }

  private async saveVault(key: KeyPair, account: Account, passphrase: string): Promise<void> {
    const sealed = await sealSeed(key.seed, passphrase);
    await this.forget();
    this.vault = { sealed, account };
    await db.set('vault', this.vault);
  }

  /** First event of the sigchain: where this account can be reached. */
  private async startChain(key: KeyPair, account: Account): Promise<boolean> {
    // a home server without a sig-server publishes no sigchain: nothing to start
    if (!account.sigchainUrl) return true;
    try {
      const events = await api.chain(account.sigchainUrl);
      if (events.length === 0) {
        const body = { id: 'chat-https', protocol: 'https', url: location.origin, inbox: account.fqhn };
        await api.appendEvent(account.sigchainUrl, nextEvent(key, [], 'add_endpoint', body, nowRfc3339()));
      }
      return true;
    } catch {
      return false;
    }
  }

  /**
   * One tab per browser runs the account: two would each write their own
   * idea of the history into the one store. A Web Lock held for the life
   * of the page says which.
   */
  private claimTab(): Promise<boolean> {
    if (!navigator.locks) return Promise.resolve(true);
    return new Promise((resolve) => {
      void navigator.locks.request('kezchat-account', { ifAvailable: true }, (lock) => {
        resolve(lock !== null);
        // held until the page goes away
        return lock === null ? undefined : new Promise<void>(() => undefined);
      });
    });
  }

  private tabClaimed: Promise<boolean> | null = null;

  private async begin(key: KeyPair, account: Account): Promise<void> {
    this.tabClaimed ??= this.claimTab();
    if (!(await this.tabClaimed)) {
      this.tabClaimed = null;
      this.elsewhere = true;
      this.locked = false;
      this.account = account;
      return;
    }
    this.elsewhere = false;
    this.key = key;
    this.account = account;
    this.cursor = (await db.get<number>('cursor')) ?? 0;
    this.contacts = (await db.get<Record<string, string>>('contacts')) ?? {};
    const convs = (await db.get<Record<string, Conversation>>('convs')) ?? {};
    const msgs: Record<string, Msg[]> = {};
    for (const peer of Object.keys(convs)) {
      msgs[peer] = ((await db.get<Msg[]>(`msgs:${peer}`)) ?? []).map((m) =>
        m.status === 'sending' ? { ...m, status: 'failed', error: 'not sent before the page closed' } : m,
      );
    }
    this.convs = convs;
    this.msgs = msgs;
    this.locked = false;
    if (!account.chainStarted && this.vault) {
      account.chainStarted = await this.startChain(key, account);
      this.vault.account = { ...account };
      await db.set('vault', $state.snapshot(this.vault));
    }
    this.running = true;
    this.status = 'connecting';
    void this.catchUp();
  }

  // ---- the inbox: catch-up, then the live stream ----------------------

  private async catchUp(): Promise<void> {
    try {
      for (;;) {
        const key = this.key;
        if (!this.running || !key || !this.account) return;
        const page = await api.inbox(key, this.account.handle, this.cursor);
        for (const item of page.messages) this.enqueue(item);
        await this.queue;
        if (page.messages.length === 0) break;
      }
      this.openStream();
    } catch {
      this.scheduleReconnect();
    }
  }

  private openStream(): void {
    if (!this.running || !this.key || !this.account) return;
    // A fresh URL every time: the signed auth= is good for 60 s only, so
    // EventSource's own retry (same URL) would be refused after that.
    const source = new EventSource(api.streamUrl(this.key, this.account.handle, this.cursor));
    this.source = source;
    source.onopen = () => {
      this.status = 'live';
      this.failures = 0;
      this.refused = null;
    };
    source.addEventListener('message', (event) => {
      try {
        this.enqueue(JSON.parse((event as MessageEvent).data) as InboxItem);
      } catch {
        /* a frame that is not JSON is not a message */
      }
    });
    source.onerror = () => {
      source.close();
      if (this.source === source) this.source = null;
      this.scheduleReconnect();
    };
  }

  private scheduleReconnect(): void {
    if (!this.running) return;
    this.status = 'reconnecting';
    if (this.retryTimer) clearTimeout(this.retryTimer);
    const delay = Math.min(500 * 2 ** this.failures, RETRY_MAX_MS);
    this.failures += 1;
    // EventSource hides the status of a refused stream: after a few
    // failures, ask the inbox, whose answer says whether the server is
    // down (keep trying) or no longer accepts this key (say so).
    const probe = this.failures >= 3 ? this.probe() : Promise.resolve();
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void probe.then(() => this.queue).then(() => this.openStream());
    }, delay);
  }

  private async probe(): Promise<void> {
    if (!this.key || !this.account) return;
    try {
      await api.inbox(this.key, this.account.handle, this.cursor, 1);
      this.refused = null;
    } catch (e) {
      if (e instanceof ApiError && (e.status === 401 || e.status === 404)) {
        this.refused = `The server no longer accepts this key for ${this.account.fqhn}. If you did not change it, someone may have taken over the handle: check with the server's operator.`;
      }
    }
  }

  /** Reconnect now (the browser says the network is back). */
  reconnectNow(): void {
    if (!this.running || this.source) return;
    this.failures = 0;
    this.scheduleReconnect();
  }

  private stop(): void {
    this.running = false;
    this.source?.close();
    this.source = null;
    if (this.retryTimer) clearTimeout(this.retryTimer);
  }

  private enqueue(item: InboxItem): void {
    this.queue = this.queue.then(() => this.ingest(item)).catch(() => undefined);
  }

  private async ingest(item: InboxItem): Promise<void> {
    if (!Number.isInteger(item.seq) || item.seq <= this.cursor) return;
    try {
      await this.receive(item);
    } finally {
      this.cursor = item.seq;
      this.persistSoon('__cursor__');
    }
  }

  // ---- receiving --------------------------------------------------------

  private async receive(item: InboxItem): Promise<void> {
    const key = this.key!;
    const peer = item.from_primary;
    const conv = this.ensureConversation(peer, item.from);
    const id = `in:${item.seq}`;
    if (this.msgs[peer]?.some((m) => m.id === id)) return;
    let plain: Record<string, unknown>;
    try {
      plain = open(key, item.envelope, peer);
    } catch (e) {
      const why = e instanceof EnvelopeError ? e.message : 'it is not a valid envelope';
      this.addMessage(peer, {
        id,
        dir: 'in',
        kind: 'warning',
        text: `A message from ${item.from} could not be verified: ${why}. It is not shown.`,
        ts: item.created_at,
        seq: item.seq,
      });
      return;
    }
    const ts = typeof plain.ts === 'string' ? plain.ts : item.created_at;
    switch (plain.type) {
      case 'text':
        this.addMessage(peer, { id, dir: 'in', kind: 'text', text: String(plain.text ?? ''), ts, seq: item.seq });
        return;
      case 'file':
        await this.receiveFile(peer, id, item, plain);
        return;
      case 'file_chunk':
        await this.receiveChunk(plain);
        return;
      case 'file_share':
        this.addMessage(peer, {
          id,
          dir: 'in',
          kind: 'share',
          text: `${String(plain.name)} (${humanSize(Number(plain.size) || 0)}) — Download requires the desktop client`,
          ts,
          seq: item.seq,
        });
        return;
      default:
        this.addMessage(peer, {
          id,
          dir: 'in',
          kind: 'warning',
          text: `${conv.fqhn} sent a kind of message this app does not know (${String(plain.type)}).`,
          ts,
          seq: item.seq,
        });
    }
  }

  private async receiveFile(peer: string, id: string, item: InboxItem, plain: Record<string, unknown>): Promise<void> {
    const name = String(plain.name ?? 'file');
    const mime = typeof plain.mime === 'string' ? plain.mime : 'application/octet-stream';
    const size = Number(plain.size) || 0;
    if (plain.mode === 'inline') {
      const fileId = `inline-${item.seq}`;
      let bytes: Uint8Array;
      try {
        bytes = decodeData(plain.data);
      } catch {
        bytes = new Uint8Array();
      }
      const ok = bytes.length === size;
      if (ok) await db.set(`file:${fileId}`, new Blob([bytes as BlobPart], { type: mime }));
      this.addMessage(peer, {
        id,
        dir: 'in',
        kind: 'file',
        text: name,
        ts: item.created_at,
        seq: item.seq,
        file: { fileId, name, mime, size, n: 1, received: ok ? 1 : 0, state: ok ? 'ready' : 'failed' },
        error: ok ? undefined : 'the attachment is damaged',
      });
      return;
    }
    const fileId = String(plain.file_id);
    const n = Number(plain.n);
    if (!/^[0-9a-zA-Z_-]{1,64}$/.test(fileId) || !Number.isInteger(n) || n < 1 || n > 200) {
      this.addMessage(peer, { id, dir: 'in', kind: 'warning', text: 'A file arrived with an invalid description.', ts: item.created_at, seq: item.seq });
      return;
    }
    const info: IncomingFile = { peer, msgId: id, n, size, blake3: String(plain.blake3), mime };
    await db.set(`fileinfo:${fileId}`, info);
    const have = (await db.get<number[]>(`chunks:${fileId}`)) ?? [];
    this.addMessage(peer, {
      id,
      dir: 'in',
      kind: 'file',
      text: name,
      ts: item.created_at,
      seq: item.seq,
      file: { fileId, name, mime, size, n, received: have.length, state: 'receiving', blake3: info.blake3 },
    });
    await this.assemble(fileId);
  }

  private async receiveChunk(plain: Record<string, unknown>): Promise<void> {
    const fileId = String(plain.file_id);
    const i = Number(plain.i);
    if (!/^[0-9a-zA-Z_-]{1,64}$/.test(fileId) || !Number.isInteger(i) || i < 0 || i >= 200) return;
    let bytes: Uint8Array;
    try {
      bytes = decodeData(plain.data);
    } catch {
      return;
    }
    const have = (await db.get<number[]>(`chunks:${fileId}`)) ?? [];
    if (have.includes(i)) return;
    await db.set(`chunk:${fileId}:${i}`, bytes);
    have.push(i);
    await db.set(`chunks:${fileId}`, have);
    await this.assemble(fileId);
  }

  /** Once the description and every chunk are here: join, check, keep. */
  private async assemble(fileId: string): Promise<void> {
    const info = await db.get<IncomingFile>(`fileinfo:${fileId}`);
    if (!info) return;
    const have = (await db.get<number[]>(`chunks:${fileId}`)) ?? [];
    const msg = this.msgs[info.peer]?.find((m) => m.id === info.msgId);
    if (!msg?.file || msg.file.state !== 'receiving') return;
    msg.file.received = Math.min(have.length, info.n);
    if (have.length < info.n) {
      this.persistSoon(`msgs:${info.peer}`);
      return;
    }
    const parts: Uint8Array[] = [];
    for (let i = 0; i < info.n; i++) parts.push((await db.get<Uint8Array>(`chunk:${fileId}:${i}`)) ?? new Uint8Array());
    const whole = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
    let offset = 0;
    for (const p of parts) {
      whole.set(p, offset);
      offset += p.length;
    }
    if (whole.length !== info.size || blake3Hex(whole) !== info.blake3) {
      msg.file.state = 'failed';
      msg.error = 'the file arrived damaged (its BLAKE3 does not match)';
    } else {
      await db.set(`file:${fileId}`, new Blob([whole as BlobPart], { type: info.mime }));
      msg.file.state = 'ready';
    }
    for (let i = 0; i < info.n; i++) await db.del(`chunk:${fileId}:${i}`);
    await db.del(`chunks:${fileId}`);
    await db.del(`fileinfo:${fileId}`);
    this.persistSoon(`msgs:${info.peer}`);
  }

  // ---- conversations ------------------------------------------------------

  /**
   * The conversation with `primary`, created when new. Keys are pinned on
   * first use; a known handle arriving with another key is flagged loudly.
   */
  ensureConversation(primary: string, fqhn: string): Conversation {
    let conv = this.convs[primary];
    const pinned = this.contacts[fqhn];
    if (pinned === undefined) {
      this.contacts[fqhn] = primary;
      void db.set('contacts', $state.snapshot(this.contacts));
    }
    if (!conv) {
      conv = { primary, fqhn, unread: 0, lastTs: nowRfc3339(), lastText: '' };
      if (pinned !== undefined && pinned !== primary) {
        conv.keyChanged = `${fqhn} now uses a different key (${short(primary)}) than the one you pinned (${short(pinned)}). It may be a new device, or someone else. Check with them another way before trusting it.`;
      }
      this.convs[primary] = conv;
      this.msgs[primary] = [];
      this.persistConvs();
    } else if (conv.fqhn !== fqhn) {
      conv.fqhn = fqhn;
      this.persistConvs();
    }
    return this.convs[primary];
  }

  /** Resolve what a person typed into "Start a chat"; returns the peer's primary. */
  async startChat(text: string): Promise<string> {
    const account = this.account!;
    const handle = parseHandle(text, account.server);
    if (handle.fqhn === account.fqhn) {
      throw new Error("That's you! Ask someone for their KEZ (like alice@" + account.server + '), or open a second browser and create another account.');
    }
    if (handle.server !== account.server) {
      throw new Error(`${handle.fqhn} lives on another server; this app reaches people on ${account.server} only.`);
    }
    const record = await api.lookup(handle.local);
    if (record === null) {
      throw new Error(`Nobody is registered as ${handle.fqhn}. Check the spelling, or ask them for their KEZ.`);
    }
    this.ensureConversation(record.primary, record.fqhn);
    return record.primary;
  }

  open(primary: string | null): void {
    this.active = primary;
    if (primary && this.convs[primary] && this.convs[primary].unread > 0) {
      this.convs[primary].unread = 0;
      this.persistConvs();
    }
  }

  private addMessage(peer: string, msg: Msg): void {
    const list = (this.msgs[peer] ??= []);
    list.push(msg);
    list.sort((a, b) => (a.ts < b.ts ? -1 : a.ts > b.ts ? 1 : 0));
    const conv = this.convs[peer];
    if (conv) {
      conv.lastTs = msg.ts;
      conv.lastText = msg.kind === 'file' ? `File: ${msg.text}` : msg.text;
      if (msg.dir === 'in' && (this.active !== peer || document.hidden)) conv.unread += 1;
      this.persistConvs();
    }
    this.persistSoon(`msgs:${peer}`);
  }

  // ---- sending --------------------------------------------------------------

  async sendText(peer: string, text: string): Promise<void> {
    const msg: Msg = { id: newId(), dir: 'out', kind: 'text', text, ts: nowRfc3339(), status: 'sending' };
    this.addMessage(peer, msg);
    await this.deliver(peer, msg.id);
  }

  /** Throws with a friendly sentence for files over 10 MiB. */
  async sendFile(peer: string, file: File): Promise<void> {
    const big = tooBig(file.size);
    if (big) throw new Error(big);
    const fileId = newId();
    const mime = file.type || 'application/octet-stream';
    await db.set(`file:${fileId}`, new Blob([await file.arrayBuffer()], { type: mime }));
    const n = file.size <= INLINE_MAX ? 1 : chunkCount(file.size);
    const msg: Msg = {
      id: newId(),
      dir: 'out',
      kind: 'file',
      text: file.name,
      ts: nowRfc3339(),
      status: 'sending',
      file: { fileId, name: file.name, mime, size: file.size, n, received: 0, state: 'ready' },
    };
    this.addMessage(peer, msg);
    await this.deliver(peer, msg.id);
  }

  retry(peer: string, msgId: string): Promise<void> {
    return this.deliver(peer, msgId);
  }

  private async envelopesFor(peer: string, msg: Msg): Promise<Envelope[]> {
    const key = this.key!;
    if (msg.kind === 'text') return [seal(key, peer, textMessage(msg.text))];
    const f = msg.file!;
    const blob = await db.get<Blob>(`file:${f.fileId}`);
    if (!blob) throw new Error('the file is no longer in this browser');
    const bytes = new Uint8Array(await blob.arrayBuffer());
    if (bytes.length <= INLINE_MAX) return [seal(key, peer, inlineFile(f.name, f.mime, bytes))];
    const header = chunkedHeader(f.name, f.mime, bytes, f.fileId);
    const envelopes = [seal(key, peer, header)];
    for (let i = 0; i < header.n; i++) envelopes.push(seal(key, peer, fileChunk(f.fileId, bytes, i)));
    return envelopes;
  }

  private async deliver(peer: string, msgId: string): Promise<void> {
    const msg = this.msgs[peer]?.find((m) => m.id === msgId);
    const conv = this.convs[peer];
    if (!msg || !conv || !this.key || !this.account) return;
    msg.status = 'sending';
    msg.error = undefined;
    try {
      let envelopes = this.outbox.get(msgId);
      if (!envelopes) {
        envelopes = await this.envelopesFor(peer, msg);
        this.outbox.set(msgId, envelopes);
      }
      // already-sent parts are answered 200 from their idempotency key
      const start = msg.file ? msg.file.received : 0;
      for (let i = start; i < envelopes.length; i++) {
        const answer = await api.send(this.key, this.account.handle, conv.fqhn, envelopes[i], `${msgId}:${i}`);
        if (i === 0) msg.seq = answer.seq;
        if (msg.file) msg.file.received = i + 1;
      }
      if (msg.file) msg.file.received = msg.file.n;
      msg.status = 'sent';
      this.outbox.delete(msgId);
    } catch (e) {
      msg.status = 'failed';
      msg.error = e instanceof Error ? e.message : 'not sent';
    }
    this.persistSoon(`msgs:${peer}`);
  }

  // ---- files and persistence ----------------------------------------------

  /** An object URL for a stored file (made once, on demand). */
  async fileUrl(fileId: string): Promise<string | null> {
    if (this.fileUrls[fileId]) return this.fileUrls[fileId];
    const blob = await db.get<Blob>(`file:${fileId}`);
    if (!blob) return null;
    const url = URL.createObjectURL(blob);
    this.fileUrls[fileId] = url;
    return url;
  }

  private persistConvs(): void {
    this.persistSoon('__convs__');
  }

  /**
   * Mark something for the next write. One timer batches the writes; the
   * cursor is written last, so what is on disk never claims messages that
   * are not (a reload re-reads from the saved cursor).
   */
  private persistSoon(what: string): void {
    this.dirty.add(what);
    if (this.saveTimer === null) this.saveTimer = setTimeout(() => void this.flush(), 150);
  }

  /** Write everything marked now (also before the page goes away). */
  flush(): Promise<void> {
    if (this.saveTimer !== null) clearTimeout(this.saveTimer);
    this.saveTimer = null;
    this.saving = this.saving.then(() => this.commit()).catch(() => undefined);
    return this.saving;
  }

  private async commit(): Promise<void> {
    if (!this.key || this.dirty.size === 0) return;
    const cursor = this.cursor;
    const dirty = [...this.dirty];
    this.dirty.clear();
    for (const what of dirty) {
      if (what === '__convs__') await db.set('convs', $state.snapshot(this.convs));
      else if (what.startsWith('msgs:')) await db.set(what, $state.snapshot(this.msgs[what.slice(5)] ?? []));
    }
    if (dirty.includes('__cursor__')) await db.set('cursor', cursor);
  }
}

export const session = new Session();
