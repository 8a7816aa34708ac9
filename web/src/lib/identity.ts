/**
 * What the identity view shows about a contact: their handle record, their
 * sigchain (checked), the claims and endpoints it holds, and the entries of
 * their shared-files manifest that this reader may see.
 */
import * as api from './api';
import { utf8 } from './crypto/bytes';
import { verifyManifest, visibleEntries } from './crypto/manifest';
import { verifyChain, type ChainEvent } from './crypto/sigchain';

export interface SharedEntry {
  id: string;
  name: string;
  size: number;
  mime: string;
  visibility: string;
}

export interface Identity {
  record: api.HandleRecord | null;
  events: ChainEvent[];
  problems: string[];
  /** their home server runs without a sig-server: there is no chain to show */
  noSigchain: boolean;
  claims: { claim: string; proof_url?: string; seq: number }[];
  endpoints: Record<string, unknown>[];
  shared: SharedEntry[] | null;
  sharedProblem: string | null;
}

function live(events: ChainEvent[]): ChainEvent[] {
  const revoked = new Set(events.filter((e) => e.type === 'revoke').map((e) => Number(e.body.seq)));
  return events.filter((e) => !revoked.has(e.seq));
}

/** `server`: the contact's domain when it is not ours (federation: our server asks that domain). */
export async function loadIdentity(primary: string, reader: string, server?: string): Promise<Identity> {
  const record = await api.byPrimary(primary, server);
  const out: Identity = { record, events: [], problems: [], noSigchain: false, claims: [], endpoints: [], shared: null, sharedProblem: null };
  if (!record) return out;
  if (!record.sigchain_url) {
    out.noSigchain = true;
    return out;
  }
  out.events = await api.chain(record.sigchain_url);
  out.problems = verifyChain(primary, out.events).problems;
  const kept = live(out.events);
  for (const e of kept) {
    if (e.type === 'add_claim') out.claims.push({ ...(e.body as { claim: string; proof_url?: string }), seq: e.seq });
  }
  const removed = new Set(kept.filter((e) => e.type === 'remove_endpoint').map((e) => String(e.body.id)));
  out.endpoints = kept.filter((e) => e.type === 'add_endpoint' && !removed.has(String(e.body.id))).map((e) => e.body);
  const pointer = [...kept].reverse().find((e) => e.type === 'set_shared_files');
  // only a manifest the sigchain vouches for is worth fetching
  if (!pointer) return out;
  if (server) {
    out.sharedProblem = 'shared-files lists of people on other servers are not fetched here yet';
    return out;
  }
  const text = await api.manifest(record.handle);
  if (text === null) {
    out.sharedProblem = 'the sigchain names a shared-files list, but the server does not have it';
    return out;
  }
  try {
    const manifest = verifyManifest(utf8(text), primary, String(pointer.body.manifest_blake3));
    out.shared = visibleEntries(manifest, reader).map((e) => ({
      id: String(e.id),
      name: String(e.name),
      size: Number(e.size),
      mime: String(e.mime ?? ''),
      visibility: String(e.visibility),
    }));
  } catch (e) {
    out.sharedProblem = e instanceof Error ? e.message : 'the manifest cannot be read';
  }
  return out;
}
