/**
 * The shared-files manifest blob: JCS of a signed document listing files.
 * A reader trusts it only when its BLAKE3 is the one the owner's sigchain
 * names and the owner's signature covers it.
 */
import { blake3 } from '@noble/hashes/blake3.js';
import { fromUtf8, toHex } from './bytes';
import { jcsText } from './jcs';
import { verifyJcs } from './keys';

export interface ManifestEntry {
  id: string;
  name: string;
  size: number;
  mime: string;
  blake3: string;
  added_at: string;
  visibility: 'public' | 'private';
  wrapped: Record<string, string>;
}

export interface Manifest {
  type: 'kez.chat.shared_files';
  version: 1;
  owner: string;
  created_at: string;
  entries: ManifestEntry[];
  sig: string;
}

export function manifestBlake3(blob: Uint8Array): string {
  return toHex(blake3(blob));
}

/** Parse and check a blob; throws with the reason it is not trusted. */
export function verifyManifest(blob: Uint8Array, owner: string, expectedBlake3: string): Manifest {
  if (manifestBlake3(blob) !== expectedBlake3) throw new Error('not the manifest the sigchain names');
  const text = fromUtf8(blob);
  const value = JSON.parse(text) as Manifest;
  if (jcsText(value) !== text) throw new Error('the manifest is not in canonical form');
  if (value.type !== 'kez.chat.shared_files' || value.version !== 1) throw new Error('not a shared-files manifest');
  if (value.owner !== owner) throw new Error('the manifest belongs to another key');
  const { sig, ...unsigned } = value;
  if (!verifyJcs(owner, unsigned, sig)) throw new Error('the manifest is not signed by its owner');
  if (!Array.isArray(value.entries)) throw new Error('the manifest has no entry list');
  return value;
}

/** The entries `reader` (a primary) may see: public ones and those wrapped for it. */
export function visibleEntries(manifest: Manifest, reader: string): ManifestEntry[] {
  const me = reader.slice('ed25519:'.length);
  return manifest.entries.filter(
    (e) => e.visibility === 'public' || (e.wrapped !== null && typeof e.wrapped === 'object' && me in e.wrapped),
  );
}
