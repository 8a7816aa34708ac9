/**
 * Attachments: inline up to 80 KiB, chunked (~80 KiB a chunk) up to
 * 10 MiB; the finished bytes live in IndexedDB as a Blob.
 */
import { blake3 } from '@noble/hashes/blake3.js';
import { toHex } from './crypto/bytes';

export const INLINE_MAX = 80 * 1024;
export const CHUNK_SIZE = 80 * 1024;
export const FILE_MAX = 10 * 1024 * 1024;

export function blake3Hex(bytes: Uint8Array): string {
  return toHex(blake3(bytes));
}

export function chunkCount(size: number): number {
  return Math.max(1, Math.ceil(size / CHUNK_SIZE));
}

export function humanSize(size: number): string {
  if (size < 1024) return `${size} B`;
  if (size < 1024 * 1024) return `${(size / 1024).toFixed(1)} KiB`;
  return `${(size / 1024 / 1024).toFixed(1)} MiB`;
}

export function tooBig(size: number): string | null {
  if (size <= FILE_MAX) return null;
  return `That file is ${humanSize(size)}. Files up to 10 MiB can be sent in chat; use the desktop client to share bigger ones.`;
}

export function isImage(mime: string): boolean {
  return /^image\/(png|jpeg|gif|webp|bmp|avif)$/.test(mime);
}
