/**
 * Attachments: inline up to 80 KiB, chunked (~80 KiB a chunk) up to
 * 10 MiB; the finished bytes live in IndexedDB as a Blob. What a sender
 * names and labels is not trusted: the type kept is a previewable raster
 * image only when the bytes are one, anything else is an opaque download
 * (an HTML or SVG blob opened as a page would run in the app's origin),
 * and names show the invisible characters that could disguise them.
 */
import { blake3 } from '@noble/hashes/blake3.js';
import { toHex } from './crypto/bytes';
import { visible } from './visible';

import { FILE_MAX } from './crypto/plaintext';

export { CHUNK_SIZE, FILE_MAX, INLINE_MAX, chunkCount } from './crypto/plaintext';

export const OPAQUE = 'application/octet-stream';

export function blake3Hex(bytes: Uint8Array): string {
  return toHex(blake3(bytes));
}

export function humanSize(size: number): string {
  if (size < 1024) return `${size} B`;
  if (size < 1024 * 1024) return `${(size / 1024).toFixed(1)} KiB`;
  return `${(size / 1024 / 1024).toFixed(1)} MiB`;
}

export function tooBig(size: number): string | null {
  if (size <= FILE_MAX) return null;
  return `That file is ${humanSize(size)}, over the 10 MiB a chat message can carry. Share bigger files with the desktop client.`;
}

/** The types shown inline as pictures. */
export function isImage(mime: string): boolean {
  return /^image\/(png|jpeg|gif|webp)$/.test(mime);
}

function starts(bytes: Uint8Array, prefix: number[], at = 0): boolean {
  return prefix.every((b, i) => bytes[at + i] === b);
}

/** What the bytes are, judged by their first bytes, if a previewable image. */
export function sniffImage(bytes: Uint8Array): string | null {
  if (starts(bytes, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])) return 'image/png';
  if (starts(bytes, [0xff, 0xd8, 0xff])) return 'image/jpeg';
  if (starts(bytes, [0x47, 0x49, 0x46, 0x38])) return 'image/gif';
  if (starts(bytes, [0x52, 0x49, 0x46, 0x46]) && starts(bytes, [0x57, 0x45, 0x42, 0x50], 8)) return 'image/webp';
  return null;
}

/** The type a file is stored and offered with: the image type the bytes really are, or opaque. */
export function safeMime(declared: unknown, bytes: Uint8Array): string {
  const real = sniffImage(bytes);
  return real !== null && declared === real ? real : OPAQUE;
}

/** A name with every invisible or reordering character shown as `⟨U+XXXX⟩`, at most 200 characters. */
export function visibleName(name: unknown): string {
  const text = typeof name === 'string' && name.length > 0 ? name : 'file';
  const shown = visible(text);
  return shown.length > 200 ? shown.slice(0, 199) + '…' : shown;
}

/** A name for saving to disk: the visible name with path and odd characters made plain. */
export function saveName(name: string): string {
  return name.replace(/[⟨⟩/\\:*?"<>|]/g, '_');
}
