/**
 * The signed-in person's state, as the views see it: a thin reactive
 * façade. The work is done by small modules, each with one job:
 *
 *   link.ts       catch-up over GET /v1/inbox, the live stream, back-off
 *   inbox.ts      verify → classify → store (with the cursor) → show
 *   trust.ts      the trust rule for one item (signature, label, pins, replays)
 *   contacts.ts   the pin map, handle → key and key → handle
 *   keydir.ts     the key directory: no key is pinned unless the log vouches for it
 *   fileinbox.ts  received files, keyed by sender and message
 *   fileurls.ts   object URLs made while shown, revoked after
 *   outbox.ts     sending, every status stored before it is shown
 *   receipts.ts   delivered/read receipts, and read state across devices
 *   restore.ts    the progress of a long catch-up (a log-in from the words)
 *   history.ts    conversations and messages, one record each
 *   storage.ts    the IndexedDB store
 *   notify.ts     browser notifications for arriving messages
 *   signup.ts     asking the server before a key is made
 *
 * The app never acknowledges (DELETE) on its own: the same key may be open
 * in the CLI or another browser, and each keeps its own cursor.
 */
import * as api from './api';
import { ApiError, type HandleRecord } from './api';
import { Contacts } from './contacts';
import { parseHandle } from './crypto/handles';
import { KeyPair } from './crypto/keys';
import { mnemonicToSeed, seedToMnemonic, wordProblem } from './crypto/mnemonic';
import { registration } from './crypto/registration';
import { nextEvent } from './crypto/sigchain';
import { nowRfc3339 } from './crypto/time';
import { openSeed, sealSeed, type SealedSeed } from './crypto/vault';
import { startingEndpoints } from './endpoints';
import { FileInbox } from './fileinbox';
import { FileUrls } from './fileurls';
import { History, change, merge } from './history';
import { Inbox } from './inbox';
import { Directories, DirectoryError, KeyDirectory } from './keydir';
import { Link, type LinkStatus, type Transport } from './link';
import { Notifier, notificationApi } from './notify';
import { Outbox } from './outbox';
import { ReceiptQueue, SELF, readHere, untold } from './receipts';
import { RestoreProgress, type Progress } from './restore';
import { trustNewKey } from './repin';
import { Signer } from './signer';
import { Storage, keys } from './storage';
import { deviceName } from './transport';
import type { Account, Conversation, Msg } from './types';

export type { LinkStatus, Transport };

/** Choices the person made in Settings (kept in this browser, wiped on log-out). */
export interface Prefs {
  /** show the message text in notifications (off: only who wrote) */
  notifyText: boolean;
  /** the person said "not now" to notifications */
  notifyDismissed: boolean;
  /** tell senders when their messages were read (delivered receipts go either way) */
  readReceipts: boolean;
}

const DEFAULT_PREFS: Prefs = { notifyText: false, notifyDismissed: false, readReceipts: true };

const PREFS_KEY = 'prefs';

/** localStorage, or null where the browser refuses it. */
function browserStorage(): globalThis.Storage | null {
  try {
    return globalThis.localStorage ?? null;
  } catch {
    return null;
  }
}
const DIRECTORY_WARNING_KEY = 'keydir-warning';

/** A key directory failure that says the server's history itself is not one (a banner, not just a refusal). */
function lasting(e: unknown): e is DirectoryError {
  return e instanceof DirectoryError && (e.code === 'log_key_changed' || e.code === 'inconsistent' || e.code === 'split_view');
}

interface Vault {
  sealed: SealedSeed;
  account: Account;
}

/** Everything that lives only while an account is unlocked. */
interface Running {
  key: KeyPair;
  signer: Signer;
  contacts: Contacts;
  history: History;
  keydir: KeyDirectory;
  /** ours and other domains' (federation) */
  directories: Directories;
  inbox: Inbox;
  outbox: Outbox;
  receipts: ReceiptQueue;
  link: Link;
  expiry: ReturnType<typeof setInterval>;
}

export class Session {
  loaded = $state(false);
  account = $state<Account | null>(null);
  locked = $state(false);
  convs = $state<Record<string, Conversation>>({});
  msgs = $state<Record<string, Msg[]>>({});
  status = $state<LinkStatus>('connecting');
  /** which transport carries live messages: NATS over WebSocket or SSE */
  transport = $state<Transport | null>(null);
  /** why the server refuses this account (its key or handle is gone), if it does */
  refused = $state<string | null>(null);
  /** why received messages stopped being stored, if they did */
  saveError = $state<string | null>(null);
  /** the loud, lasting warning that the server shows people different key directories, once seen */
  directoryWarning = $state<string | null>(null);
  /** true when another tab of this browser already runs the account */
  elsewhere = $state(false);
  active = $state<string | null>(null);
  prefs = $state<Prefs>({ ...DEFAULT_PREFS });
  /** a long catch-up (a log-in from the words) under way: how far it is */
  restoring = $state<Progress | null>(null);
  /** the browser's notification permission, or null when it has none */
  notifyPermission = $state<NotificationPermission | null>(notificationApi()?.permission ?? null);

  key: KeyPair | null = null;
  private vault: Vault | null = null;
  private run: Running | null = null;
  private tabClaimed: Promise<boolean> | null = null;

  constructor(
    private readonly storage: Storage = new Storage(),
    readonly files: FileUrls = new FileUrls(storage),
  ) {}

  async load(): Promise<void> {
    this.vault = (await this.storage.get<Vault>(keys.vault)) ?? null;
    this.prefs = { ...this.prefs, ...((await this.storage.get<Prefs>(PREFS_KEY)) ?? {}) };
    this.account = this.vault?.account ?? null;
    this.locked = this.vault !== null;
    // say that another tab runs the account before asking for the passphrase
    if (this.vault) {
      this.tabClaimed = this.claimTab();
      if (!(await this.tabClaimed)) {
        this.tabClaimed = null;
        this.elsewhere = true;
      }
    }
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
    const problem = wordProblem(words);
    if (problem !== null) throw new ApiError('bad_words', problem);
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
    const run = this.run;
    if (!run || !this.account) return 0;
    await run.inbox.settled();
    if (run.inbox.cursor === 0) return 0;
    return (await api.acknowledge(run.signer, this.account.handle, run.inbox.cursor)).deleted;
  }

  /** The words again, after the passphrase proves it is the owner asking. */
  async revealWords(passphrase: string): Promise<string> {
    if (!this.vault) throw new Error('there is no account in this browser');
    return seedToMnemonic(await openSeed(this.vault.sealed, passphrase));
  }

  /**
   * Lock the key in this browser under a new passphrase; the old one must
   * open it first (someone at an unlocked screen cannot take it over).
   */
  async changePassphrase(old: string, next: string): Promise<void> {
    if (!this.vault) throw new Error('there is no account in this browser');
    if (next.length < 8) throw new Error('Choose a new passphrase of at least 8 characters.');
    let seed: Uint8Array;
    try {
      seed = await openSeed(this.vault.sealed, old);
    } catch {
      throw new Error('The current passphrase is not right: nothing was changed.');
    }
    const vault: Vault = { sealed: await sealSeed(seed, next), account: $state.snapshot(this.vault.account) as Account };
    await this.storage.set(keys.vault, vault);
    this.vault = vault;
  }

  async setPrefs(changes: Partial<Prefs>): Promise<void> {
    const next = { ...$state.snapshot(this.prefs), ...changes };
    await this.storage.set(PREFS_KEY, next);
    this.prefs = next;
  }

  /** Ask for notification permission: only ever from a click. */
  async enableNotifications(): Promise<void> {
    const api = notificationApi();
    if (!api) return;
    this.notifyPermission = await api.requestPermission();
  }

  /** Log out: close the stream and wipe everything this app stored. */
  async logout(): Promise<void> {
    await this.forget();
    this.vault = null;
    this.account = null;
    this.locked = false;
  }

  /** Everything received so far is stored (nothing waits on a timer; this is for page hide). */
  async flush(): Promise<void> {
    await this.run?.inbox.settled();
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
    const run = this.run;
    this.run = null;
    this.key = null;
    if (run) {
      run.link.stop();
      clearInterval(run.expiry);
      run.outbox.clear();
      run.receipts.clear();
      await run.inbox.settled();
    }
    this.files.releaseAll();
    this.convs = {};
    this.msgs = {};
    this.saveError = null;
    this.directoryWarning = null;
    this.prefs = { ...DEFAULT_PREFS };
    this.restoring = null;
    await this.storage.wipe();
  }

  private async saveVault(key: KeyPair, account: Account, passphrase: string): Promise<void> {
    const sealed = await sealSeed(key.seed, passphrase);
    await this.forget();
    this.vault = { sealed, account };
    await this.storage.set(keys.vault, this.vault);
  }

  /** First events of the sigchain: where this account can be reached (NATS first, when the server has it). */
  private async startChain(key: KeyPair, account: Account): Promise<boolean> {
    // a home server without a sig-server publishes no sigchain: nothing to start
    if (!account.sigchainUrl) return true;
    try {
      const events = await api.chain(account.sigchainUrl);
      if (events.length === 0) {
        const natsWs = await api.healthz().then((h) => h.nats_ws ?? null, () => null);
        for (const body of startingEndpoints(key.publicHex, location.origin, account.fqhn, natsWs)) {
          const event = nextEvent(key, events, 'add_endpoint', body, nowRfc3339());
          await api.appendEvent(account.sigchainUrl, event);
          events.push(event);
        }
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
    // the domain signed into every request: the part after @ in the handle
    const signer = new Signer(key, account.fqhn.slice(account.fqhn.indexOf('@') + 1));
    const contacts = new Contacts((await this.storage.entriesWith<string>('pin:')).map(([k, v]) => [k.slice(4), v]));
    const looking = (peer: string) => this.active === peer && !document.hidden && document.hasFocus();
    const notifier = new Notifier({
      showText: () => this.prefs.notifyText,
      looking,
      handleOf: (peer) => this.convs[peer]?.fqhn,
      open: (peer) => {
        window.focus();
        location.hash = `#/chat/${peer}`;
      },
    });
    const history = new History(this, this.storage, (peer) => this.active === peer && !document.hidden, (peer, msg) =>
      notifier.arrived(peer, msg),
    );
    await history.load();
    const files = new FileInbox(this.storage, history);
    await files.load();
    const keydir = new KeyDirectory(api.log, this.storage);
    await keydir.load();
    const directories = new Directories(keydir, account.server, this.storage, (a, b, server) => api.log.consistency(a, b, server));
    this.directoryWarning = (await this.storage.get<string>(DIRECTORY_WARNING_KEY)) ?? null;
    // a first message pins its sender only if the registry names that key for that handle and the log vouches for it
    const confirm = async (fqhn: string, primary: string) => {
      const domain = fqhn.slice(fqhn.lastIndexOf('@') + 1);
      const record = await api.byPrimary(primary, domain === account.server ? undefined : domain);
      if (record?.fqhn !== fqhn) return false;
      await directories.vouch(record);
      return true;
    };
    const gossip = async (head: unknown, peer?: string) => {
      const warning = await directories.compareGossip(head, peer);
      if (warning !== null) await this.warnDirectory(warning);
      return warning;
    };
    const inbox = new Inbox(key, this.storage, contacts, history, files, confirm, gossip, (why) => {
      this.saveError = why;
      this.run?.link.stop();
    });
    await inbox.load();
    const outbox = new Outbox(signer, account.handle, this.storage, history, () => keydir.brief());
    // a receipt goes only where no device of ours sent it already
    const receipts = new ReceiptQueue(
      (peer, status, sigs) => (peer === SELF ? outbox.sendReadNote(sigs) : outbox.sendReceipt(peer, status, sigs)),
      (peer, status, sigs) => untold(history, peer, status, sigs, inbox.sigOf),
    );
    inbox.hooks = {
      received: (peer, sig, read) => {
        receipts.add(peer, 'delivered', [sig]);
        if (read) receipts.add(this.prefs.readReceipts ? peer : SELF, 'read', [sig]);
      },
    };
    const progress = new RestoreProgress((p) => {
      this.restoring = p;
      receipts.hold(p !== null);
    });
    const link = new Link(signer, account.handle, account.fqhn, {
      deliver: (item, early) => inbox.enqueue(item, early).then(() => progress.stored(inbox.cursor)),
      cursor: () => inbox.cursor,
      status: (s) => {
        this.status = s;
        // the server is back: what failed to go out while it was away goes now
        if (s === 'live') {
          void outbox.resend();
          receipts.kick();
        }
      },
      refused: (why) => (this.refused = why),
      transport: (t) => (this.transport = t),
      paged: (count, last) => progress.paged(count, last, inbox.cursor),
    }, undefined, {
      // asked on every connect: NATS when the server advertises a WebSocket for it
      url: async () => (await api.healthz()).nats_ws ?? null,
      device: deviceName(browserStorage()),
    });
    const expire = () => files.expire().catch((e) => (this.saveError = `Dropping old file pieces failed: ${String(e)}`));
    await expire();
    const expiry = setInterval(() => void expire(), 60 * 60 * 1000);
    this.run = { key, signer, contacts, history, keydir, directories, inbox, outbox, receipts, link, expiry };
    this.locked = false;
    if (!account.chainStarted && this.vault) {
      account.chainStarted = await this.startChain(key, account);
      this.vault.account = { ...account };
      await this.storage.set(keys.vault, $state.snapshot(this.vault));
    }
    link.start();
    // the newest head, so the first message sent carries one; a log that fails its checks is said loudly
    void keydir.currentHead().then(
      () => undefined,
      (e) => (lasting(e) ? this.warnDirectory(e.message) : undefined),
    );
  }

  /** Keep the key directory warning (a banner until log-out) and show it. */
  private async warnDirectory(warning: string): Promise<void> {
    this.directoryWarning = warning;
    await this.storage.set(DIRECTORY_WARNING_KEY, warning);
  }

  /** Reconnect now (the browser says the network is back). */
  reconnectNow(): void {
    this.run?.link.reconnectNow();
  }

  // ---- conversations ------------------------------------------------------

  /** The key pinned for a handle, if any. */
  pinnedKey(fqhn: string): string | undefined {
    return this.run?.contacts.keyOf(fqhn);
  }

  /** Resolve what a person typed into "Start a chat"; returns the peer's primary. */
  async startChat(text: string): Promise<string> {
    const account = this.account!;
    const run = this.run!;
    const handle = parseHandle(text, account.server);
    if (handle.fqhn === account.fqhn) {
      throw new Error("That's you! Ask someone for their KEZ (like alice@" + account.server + '), or open a second browser and create another account.');
    }
    const remote = handle.server !== account.server;
    const pinned = run.contacts.keyOf(handle.fqhn);
    if (pinned !== undefined) return pinned;
    // asking first keeps an unknown name from logging a 404 in the console
    // (another domain's handle is looked up through our server, which asks that domain)
    const check = remote ? null : await api.checkRegister(handle.local);
    const record = check?.available ? null : await api.lookup(remote ? handle.fqhn : handle.local);
    if (record === null || record.fqhn !== handle.fqhn) {
      throw new Error(`Nobody is registered as ${handle.fqhn}. Check the spelling, or ask them for their KEZ.`);
    }
    const other = run.contacts.handleOf(record.primary);
    if (other !== undefined) {
      throw new Error(`The server says ${handle.fqhn} uses the key you pinned for ${other}. It is not trusted: check with them another way.`);
    }
    // the server's word is not enough: the key directory must vouch for this key under this handle
    try {
      await run.directories.vouch(record);
    } catch (e) {
      if (e instanceof DirectoryError) {
        if (lasting(e)) await this.warnDirectory(e.message);
        throw new Error(`${handle.fqhn} was not added: ${e.message}`);
      }
      throw e;
    }
    const conv = run.history.fresh(record.primary, record.fqhn, new Date().toISOString());
    await run.history.commit(
      merge(change([run.contacts.pinRecord(record.fqhn, record.primary)], () => run.contacts.apply(record.fqhn, record.primary)), run.history.put(conv)),
    );
    return record.primary;
  }

  /**
   * After a key-changed warning, trust the contact's new key (the person
   * checked it another way). Returns the conversation's new key.
   */
  async trustNewKey(old: string): Promise<string | null> {
    const run = this.run;
    const next = this.convs[old]?.newKey ?? null;
    if (!run || next === null) return null;
    await run.history.commit(trustNewKey(run.history, run.contacts, old));
    return next;
  }

  /**
   * Show a conversation (null: none). While the page is visible its
   * messages are read: here, on the account's other devices (through the
   * server's copy of the read receipt), and for the sender unless read
   * receipts are off.
   */
  open(primary: string | null): void {
    this.active = primary;
    const run = this.run;
    if (!primary || !run || document.hidden) return;
    const { change, sigs } = readHere(run.history, primary, run.inbox.sigOf);
    void run.history
      .commit(change)
      .then(() => run.receipts.add(this.prefs.readReceipts ? primary : SELF, 'read', sigs))
      .catch((e) => (this.saveError = String(e)));
  }

  // ---- sending --------------------------------------------------------------

  async sendText(peer: string, text: string): Promise<void> {
    await this.run?.outbox.sendText(peer, text);
  }

  /** Throws with a friendly sentence for files over 10 MiB. */
  async sendFile(peer: string, file: File): Promise<void> {
    await this.run?.outbox.sendFile(peer, file);
  }

  async retry(peer: string, msgId: string): Promise<void> {
    await this.run?.outbox.retry(peer, msgId);
  }
}

export const session = new Session();
