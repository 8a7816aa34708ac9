/**
 * Attachments: inline up to 80 KiB, chunked (~80 KiB a chunk) up to
 * 10 MiB; the finished bytes live in IndexedDB as a Blob.
 */
import { blake3 } from '@noble/hashes/blake3.js';
import { toHex } from './crypto/bytes';

import { FILE_MAX } from './crypto/plaintext';

export { CHUNK_SIZE, FILE_MAX, INLINE_MAX, chunkCount } from './crypto/plaintext';

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

export function isImage(mime: string): boolean {
  return /^image\/(png|jpeg|gif|webp|bmp|avif)$/.test(mime);
}
