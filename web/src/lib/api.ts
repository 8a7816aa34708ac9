/**
 * The chat-server's public HTTP API (same origin as the app) and the
 * sig-server's (CORS open). Every failure is an ApiError with a stable
 * code and a sentence a person can act on.
 */
import { deleteAuth, sendAuth, inboxAuth, streamAuth } from './crypto/auth';
import type { ChainEvent } from './crypto/sigchain';
import type { Envelope } from './crypto/envelope';
import type { Registration } from './crypto/registration';
import type { Signer } from './signer';

export interface HandleRecord {
  handle: string;
  fqhn: string;
  primary: string;
  /** absent when the home server names no sig-server */
  sigchain_url?: string;
  registered_at: string;
  /** where its registration is in the key directory */
  log_index?: number;
}

export interface InboxItem {
  seq: number;
  from: string;
  from_primary: string;
  envelope: unknown;
  created_at: string;
  /** `out`: the server's copy of a message this account sent (from any device) */
  direction?: 'in' | 'out';
  /** an `out` item's recipient, and their key */
  to?: string;
  to_primary?: string;
  /** on an `out` item: another server never took this message (SPEC §11.5; the server's notice repeats the item) */
  undeliverable?: boolean;
}

export class ApiError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly status = 0,
  ) {
    super(message);
  }
}

async function call(url: string, init: RequestInit = {}): Promise<Response> {
  try {
    return await fetch(url, { cache: 'no-store', ...init });
  } catch {
    throw new ApiError('unreachable', 'The server cannot be reached. Check your connection and try again.');
  }
}

async function json<T>(response: Response): Promise<T> {
  let body: unknown = null;
  try {
    body = await response.json();
  } catch {
    throw new ApiError('bad_response', `The server answered ${response.status} without JSON.`, response.status);
  }
  if (!response.ok) {
    const err = (body as { error?: { code?: string; message?: string } })?.error;
    throw new ApiError(err?.code ?? 'error', err?.message ?? `The server answered ${response.status}.`, response.status);
  }
  return body as T;
}

/** `nats_ws`: where the browser reaches NATS over WebSocket, when the server has it. */
export async function healthz(): Promise<{ server: string; version: string; nats?: string; nats_ws?: string }> {
  return json(await call('/v1/healthz'));
}

/** The record of a handle, or null when nobody has it. */
export async function lookup(handle: string): Promise<HandleRecord | null> {
  const response = await call(`/v1/u/${encodeURIComponent(handle)}`);
  if (response.status === 404) return null;
  return json(response);
}

export type RegisterCheck =
  | { available: true; handle: string; fqhn: string }
  | { available: false; error: { code: string; message: string; retry_after?: number } };

/**
 * Whether registering `handle` would be accepted, asked before a key is
 * made (nothing is registered; always 200 with an answer).
 */
export async function checkRegister(handle: string): Promise<RegisterCheck> {
  return json(await call(`/v1/register/check?handle=${encodeURIComponent(handle)}`));
}

/** `server`: another domain that binds the key (federation: our server asks it and attaches its proof). */
export async function byPrimary(primary: string, server?: string): Promise<HandleRecord | null> {
  const query = server ? `?server=${encodeURIComponent(server)}` : '';
  const response = await call(`/v1/by-primary/${encodeURIComponent(primary)}${query}`);
  if (response.status === 404) return null;
  return json(response);
}

export async function register(body: Registration): Promise<HandleRecord> {
  return json(
    await call('/v1/register', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    }),
  );
}

export async function send(
  signer: Signer,
  sender: string,
  to: string,
  envelope: Envelope,
  idempotencyKey: string,
): Promise<{ seq: number; created_at: string }> {
  const body = JSON.stringify({ to, envelope, idempotency_key: idempotencyKey });
  return json(
    await call('/v1/messages', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-kez-sender': sender, 'x-kez-auth': sendAuth(signer.key, body, signer.signedFor) },
      body,
    }),
  );
}

export async function inbox(
  signer: Signer,
  local: string,
  since: number,
  limit = 200,
): Promise<{ messages: InboxItem[]; next: number; last?: number }> {
  return json(
    await call(`/v1/inbox/${local}?since=${since}&limit=${limit}`, {
      headers: { 'x-kez-auth': inboxAuth(signer.key, local, since, signer.signedFor) },
    }),
  );
}

/** Delete the recipient's stored messages up to `upto` (an explicit user action only). */
export async function acknowledge(signer: Signer, local: string, upto: number): Promise<{ deleted: number }> {
  return json(
    await call(`/v1/inbox/${local}?upto=${upto}`, {
      method: 'DELETE',
      headers: { 'x-kez-auth': deleteAuth(signer.key, local, upto, signer.signedFor) },
    }),
  );
}

/**
 * A freshly signed stream URL: good for 60 s, or until `exp` (unix
 * seconds) when given — long enough for the browser's own reconnects.
 */
export function streamUrl(signer: Signer, local: string, since: number, exp?: number): string {
  const auth = encodeURIComponent(streamAuth(signer.key, local, signer.signedFor, undefined, exp));
  return `/v1/inbox/${local}/stream?auth=${auth}${exp === undefined ? '' : `&exp=${exp}`}&since=${since}`;
}

export async function chain(url: string): Promise<ChainEvent[]> {
  const response = await call(url, { headers: { accept: 'application/json' } });
  if (response.status === 404) return [];
  return (await json<{ events: ChainEvent[] }>(response)).events;
}

export async function appendEvent(url: string, event: ChainEvent): Promise<void> {
  await json(
    await call(`${url}/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(event),
    }),
  );
}

/** The owner's shared-files manifest blob as text, or null. */
export async function manifest(local: string): Promise<string | null> {
  const response = await call(`/v1/manifests/${local}`);
  if (response.status === 404) return null;
  if (!response.ok) await json(response);
  return response.text();
}

/** The key directory's routes, answers as parsed JSON: keydir.ts checks every byte of them. */
export const log = {
  async head(): Promise<unknown> {
    return json(await call('/v1/log/head'));
  },
  async inclusion(fqhn: string, size: number): Promise<unknown> {
    return json(await call(`/v1/log/inclusion?handle=${encodeURIComponent(fqhn)}&size=${size}`));
  },
  /** `server`: another domain's log (federation: our server asks it). */
  async consistency(first: number, second: number, server?: string): Promise<unknown> {
    const query = server ? `&server=${encodeURIComponent(server)}` : '';
    return json(await call(`/v1/log/consistency?from=${first}&to=${second}${query}`));
  },
};
