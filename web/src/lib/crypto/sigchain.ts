/**
 * Sigchain events: an append-only list signed by the primary.
 *
 *   {"seq", "prev", "type", "body", "created_at", "signer", "sig"}
 *
 * `sig` is over JCS(event without sig); the next `prev` is SHA-256 hex of
 * JCS(this event with its sig).
 */
import { sha256 } from '@noble/hashes/sha2.js';
import { toHex } from './bytes';
import { jcs } from './jcs';
import { verifyJcs, type KeyPair } from './keys';

export interface ChainEvent {
  seq: number;
  prev: string | null;
  type: string;
  body: Record<string, unknown>;
  created_at: string;
  signer: string;
  sig: string;
}

export function eventHash(event: ChainEvent): string {
  return toHex(sha256(jcs(event)));
}

export function signEvent(
  key: KeyPair,
  fields: { seq: number; prev: string | null; type: string; body: Record<string, unknown>; created_at: string },
): ChainEvent {
  const unsigned = {
    seq: fields.seq,
    prev: fields.prev,
    type: fields.type,
    body: structuredClone(fields.body),
    created_at: fields.created_at,
    signer: key.primary,
  };
  return { ...unsigned, sig: key.signJcs(unsigned) };
}

/** The event that extends `chain`. */
export function nextEvent(
  key: KeyPair,
  chain: ChainEvent[],
  type: string,
  body: Record<string, unknown>,
  createdAt: string,
): ChainEvent {
  const last = chain[chain.length - 1];
  return signEvent(key, {
    seq: last ? last.seq + 1 : 1,
    prev: last ? eventHash(last) : null,
    type,
    body,
    created_at: createdAt,
  });
}

export interface ChainCheck {
  ok: boolean;
  /** why the chain is not trusted (empty when ok) */
  problems: string[];
}

/** Check signatures, signer, numbering and links of a whole chain. */
export function verifyChain(primary: string, events: ChainEvent[]): ChainCheck {
  const problems: string[] = [];
  let prev: ChainEvent | undefined;
  events.forEach((event, index) => {
    const { sig, ...unsigned } = event;
    if (event.signer !== primary) problems.push(`event ${event.seq} is signed by another key`);
    else if (!verifyJcs(primary, unsigned, sig)) problems.push(`event ${event.seq} has a bad signature`);
    if (event.seq !== index + 1) problems.push(`event ${event.seq} is out of order`);
    const expected = prev ? eventHash(prev) : null;
    if (event.prev !== expected) problems.push(`event ${event.seq} does not link to the one before`);
    prev = event;
  });
  return { ok: problems.length === 0, problems };
}
