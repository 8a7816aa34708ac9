/**
 * The trust rule for one inbox item, before anything is stored or shown.
 *
 * The server is the adversary the envelope exists for, so nothing in the
 * item but the envelope is believed: the signature is checked first (by
 * the key the envelope names), the key must be the one the server says
 * sent it, the server's label (`from`) must be a handle at all, an
 * envelope already seen is a replay, and the pins are checked both ways.
 * The handle a message is shown under comes from the pin, never from the
 * item. Pure: the caller stores what the verdict says.
 */
import { EnvelopeError, checkShape, openBytes, openOwnBytes } from './crypto/envelope';
import { LOCAL_RE } from './crypto/handles';
import type { KeyPair } from './crypto/keys';
import { StrictJsonError, strictParse } from './crypto/strictjson';
import type { Contacts } from './contacts';
import { quote as quoted } from './visible';

/** A qualified handle, the whole string: no spaces, no invisible characters. */
const FQHN_RE = new RegExp(
  '^' + LOCAL_RE.source.slice(1, -1) + '@[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*(:[0-9]{1,5})?$',
);

export function isFqhn(text: unknown): text is string {
  return typeof text === 'string' && FQHN_RE.test(text);
}

export type Verdict =
  | {
      ok: true;
      /** the verified signing key: the conversation */
      sender: string;
      /** the pinned handle (or the one to pin, when `pinNew`) */
      handle: string;
      pinNew: boolean;
      plain: Record<string, unknown>;
      /** where it sorts: the envelope's time, never later than the server's or now */
      at: string;
      sig: string;
      /** the server's copy of a message this account sent: `sender` is then its recipient */
      out?: boolean;
    }
  | {
      ok: false;
      /** a sentence saying why it is not shown */
      reason: string;
      /** the pinned conversation to show the warning in, or null (the refused list) */
      peer: string | null;
      /** set when the signature verified: a replay of it is recognised too */
      sig?: string;
      /** set for a pinned handle that arrived with another key */
      keyChanged?: string;
      /** and that key */
      newKey?: string;
      at: string;
    };

export interface ItemLike {
  seq?: unknown;
  from?: unknown;
  from_primary?: unknown;
  envelope?: unknown;
  created_at?: unknown;
  direction?: unknown;
  to?: unknown;
  to_primary?: unknown;
}

/** Not UTF-8 is refused, as the Python client does, rather than repaired. */
const utf8Strict = new TextDecoder('utf-8', { fatal: true });

function short(primary: string): string {
  return primary.slice(8, 20) + '…';
}

/** Milliseconds of an RFC 3339 time, or NaN. */
function millis(text: unknown): number {
  return typeof text === 'string' ? Date.parse(text) : NaN;
}

/** The sort time: the envelope's ts, clamped to the server's created_at and to now. */
export function sortTime(envelopeTs: unknown, createdAt: unknown, now: number): string {
  let t = now;
  for (const candidate of [millis(createdAt), millis(envelopeTs)]) {
    if (Number.isFinite(candidate) && candidate < t) t = candidate;
  }
  return new Date(t).toISOString();
}


export function judge(me: KeyPair, item: ItemLike, contacts: Contacts, seen: (sig: string) => boolean, now = Date.now()): Verdict {
  const claimed = item.from;
  let envelope;
  try {
    envelope = checkShape(item.envelope);
  } catch (e) {
    const at = sortTime(undefined, item.created_at, now);
    return { ok: false, reason: `A message labelled ${quoted(claimed)} is not a valid envelope (${(e as Error).message}). It is not shown.`, peer: null, at };
  }
  const at = sortTime(envelope.ts, item.created_at, now);
  let bytes: Uint8Array;
  try {
    bytes = openBytes(me, envelope);
  } catch (e) {
    const why = e instanceof EnvelopeError ? e.message : 'it cannot be opened';
    const verified = e instanceof EnvelopeError && e.code === 'decrypt_failed';
    return {
      ok: false,
      reason: `A message labelled ${quoted(claimed)} could not be verified: ${why}. It is not shown.`,
      peer: null,
      sig: verified ? envelope.sig : undefined,
      at,
    };
  }
  const sender = envelope.from;
  const sig = envelope.sig;
  const pinnedAs = contacts.handleOf(sender);
  const refuse = (reason: string, extra: { keyChanged?: string; peer?: string | null } = {}): Verdict => ({
    ok: false,
    reason,
    peer: extra.peer !== undefined ? extra.peer : (pinnedAs === undefined ? null : sender),
    sig,
    keyChanged: extra.keyChanged,
    newKey: extra.keyChanged === undefined ? undefined : sender,
    at,
  });
  const who = pinnedAs ?? `the key ${short(sender)}`;
  if (seen(sig)) return refuse(`A message from ${who} arrived again (a replay of one already received). It is shown only once.`);
  if (!isFqhn(claimed)) return refuse(`The server labelled a message from ${who} with ${quoted(claimed)}, which is not a handle. It is not shown.`);
  if (item.from_primary !== sender) {
    return refuse(`The server said a message labelled ${quoted(claimed)} came from the key ${quoted(item.from_primary)}, but it is signed by ${who}. It is not shown.`);
  }
  const pin = contacts.check(claimed, sender);
  if (pin.kind === 'relabelled') {
    return refuse(`The server labelled a message from ${pin.handle} as ${quoted(pin.claimed)}. It is not shown as a normal message.`);
  }
  if (pin.kind === 'key_changed') {
    const keyChanged = `${pin.handle} now uses a different key (${short(sender)}) than the one you pinned (${short(pin.pinned)}). It may be a new device, or someone else. Check with them another way before trusting it.`;
    return refuse(`A message for ${pin.handle} is signed by a key that is not the one pinned for ${pin.handle}. It is not shown.`, { keyChanged, peer: pin.pinned });
  }
  let plain: unknown;
  try {
    plain = strictParse(utf8Strict.decode(bytes));
  } catch (e) {
    const why = e instanceof StrictJsonError ? `its content is ambiguous (${e.message})` : 'its content is not JSON';
    return refuse(`A message from ${pin.handle} was refused: ${why}.`, { peer: pin.kind === 'pinned' ? sender : null });
  }
  if (typeof plain !== 'object' || plain === null || Array.isArray(plain)) {
    return refuse(`A message from ${pin.handle} was refused: its content is not a JSON object.`, { peer: pin.kind === 'pinned' ? sender : null });
  }
  return { ok: true, sender, handle: pin.handle, pinNew: pin.kind === 'new', plain: plain as Record<string, unknown>, at, sig };
}

/** The plaintext of verified bytes, or why it is refused. */
function plaintextOf(bytes: Uint8Array): Record<string, unknown> | string {
  let plain: unknown;
  try {
    plain = strictParse(utf8Strict.decode(bytes));
  } catch (e) {
    return e instanceof StrictJsonError ? `its content is ambiguous (${e.message})` : 'its content is not JSON';
  }
  if (typeof plain !== 'object' || plain === null || Array.isArray(plain)) return 'its content is not a JSON object';
  return plain as Record<string, unknown>;
}

/**
 * The trust rule for the server's copy of a message this account sent
 * (`direction: "out"`), from this device or another: the envelope must be
 * sealed and signed by our own key (opened as its sender), the server's
 * `from_primary` must be us and its `to_primary` the key the envelope is
 * addressed to, its `to` a handle, and the pins must agree both ways. The
 * conversation is the recipient's key, shown under its pinned handle.
 */
export function judgeOwn(me: KeyPair, item: ItemLike, contacts: Contacts, seen: (sig: string) => boolean, now = Date.now()): Verdict {
  const claimed = item.to;
  let envelope;
  try {
    envelope = checkShape(item.envelope);
  } catch (e) {
    const at = sortTime(undefined, item.created_at, now);
    return { ok: false, reason: `A message shown as sent by you to ${quoted(claimed)} is not a valid envelope (${(e as Error).message}). It is not shown.`, peer: null, at };
  }
  const at = sortTime(envelope.ts, item.created_at, now);
  let bytes: Uint8Array;
  try {
    bytes = openOwnBytes(me, envelope);
  } catch (e) {
    const why = e instanceof EnvelopeError ? e.message : 'it cannot be opened';
    return { ok: false, reason: `A message shown as sent by you to ${quoted(claimed)} could not be verified: ${why}. It is not shown.`, peer: null, at };
  }
  const peer = envelope.to;
  const sig = envelope.sig;
  const pinnedAs = contacts.handleOf(peer);
  const refuse = (reason: string, to: string | null = pinnedAs === undefined ? null : peer): Verdict => ({ ok: false, reason, peer: to, sig, at });
  const who = pinnedAs ?? `the key ${short(peer)}`;
  if (seen(sig)) return refuse(`Your message to ${who} arrived again (a replay of one already received). It is shown only once.`);
  if (item.from_primary !== me.primary) {
    return refuse(`The server said your message to ${who} came from the key ${quoted(item.from_primary)}. It is not shown.`);
  }
  if (!isFqhn(claimed)) return refuse(`The server labelled your message to ${who} as sent to ${quoted(claimed)}, which is not a handle. It is not shown.`);
  if (item.to_primary !== peer) {
    return refuse(`The server said your message labelled as sent to ${quoted(claimed)} went to the key ${quoted(item.to_primary)}, but it is addressed to ${who}. It is not shown.`);
  }
  const pin = contacts.check(claimed, peer);
  if (pin.kind === 'relabelled') {
    return refuse(`The server labelled your message to ${pin.handle} as sent to ${quoted(pin.claimed)}. It is not shown as a normal message.`);
  }
  if (pin.kind === 'key_changed') {
    return refuse(`Your message labelled as sent to ${pin.handle} is addressed to a key that is not the one pinned for ${pin.handle}. It is not shown.`, pin.pinned);
  }
  const plain = plaintextOf(bytes);
  if (typeof plain === 'string') {
    return refuse(`Your message to ${pin.handle} was refused: ${plain}.`, pin.kind === 'pinned' ? peer : null);
  }
  return { ok: true, sender: peer, handle: pin.handle, pinNew: pin.kind === 'new', plain, at, sig, out: true };
}
