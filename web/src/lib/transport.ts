/**
 * Small decisions of the live link, kept pure so they can be tested
 * without a server: which transport to try, when a long-lived stream URL
 * must be signed again, and this browser's device name.
 */

export type Transport = 'nats' | 'sse';

/** A stream URL is signed for this long (SPEC §11.4 allows up to 24 h). */
export const STREAM_WINDOW_S = 12 * 3600;
/** and signed again this long before it runs out, so a reconnect never meets an expired URL */
export const RESIGN_MARGIN_S = 3600;
/** after NATS could not be reached, SSE carries the messages and NATS is tried again this much later */
export const NATS_RETRY_MS = 60_000;

/** The `exp` for a stream URL signed at `nowS` (unix seconds). */
export function streamExpiry(nowS: number): number {
  return nowS + STREAM_WINDOW_S;
}

/**
 * Milliseconds until a stream URL expiring at `expS` must be replaced by a
 * freshly signed one (0: now).
 */
export function resignDelay(expS: number, nowMs: number): number {
  return Math.max(0, (expS - RESIGN_MARGIN_S) * 1000 - nowMs);
}

/**
 * NATS when the server advertises a WebSocket URL for it and it has not
 * failed too recently; SSE otherwise.
 */
export function chooseTransport(natsUrl: string | null | undefined, natsRetryAt: number, nowMs: number): Transport {
  return natsUrl && /^wss?:\/\//.test(natsUrl) && nowMs >= natsRetryAt ? 'nats' : 'sse';
}

const DEVICE_KEY = 'kez-device';
const DEVICE_RE = /^[a-z0-9]{1,16}$/;

/**
 * This browser profile's device name (`[a-z0-9]{1,16}`, SPEC §11.3): made
 * once and kept, so its NATS consumer is the same one after a reload or
 * another log-in. Kept outside the account's store, which log-out wipes.
 */
export function deviceName(store: Pick<Storage, 'getItem' | 'setItem'> | null, random: () => Uint8Array = () => crypto.getRandomValues(new Uint8Array(10))): string {
  const kept = store?.getItem(DEVICE_KEY) ?? null;
  if (kept !== null && DEVICE_RE.test(kept)) return kept;
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  const name = 'web' + Array.from(random(), (b) => alphabet[b % alphabet.length]).join('').slice(0, 10);
  try {
    store?.setItem(DEVICE_KEY, name);
  } catch {
    // storage full or refused: this page still works, with a new name next time
  }
  return name;
}
