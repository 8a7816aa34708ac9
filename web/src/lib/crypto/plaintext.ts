/**
 * The plaintexts inside envelopes. Binary `data` is unpadded base64url.
 */
import { blake3 } from '@noble/hashes/blake3.js';
import { toB64url, toHex } from './bytes';

export const INLINE_MAX = 80 * 1024;
export const CHUNK_SIZE = 80 * 1024;
export const FILE_MAX = 10 * 1024 * 1024;

export function textMessage(text: string) {
  return { type: 'text', text };
}

export function inlineFile(name: string, mime: string, data: Uint8Array) {
  if (data.length > INLINE_MAX) throw new Error('an inline file is at most 80 KiB');
  return { type: 'file', mode: 'inline', name, mime, size: data.length, data: toB64url(data) };
}

export function chunkCount(size: number): number {
  return Math.max(1, Math.ceil(size / CHUNK_SIZE));
}

export function fileChunk(fileId: string, data: Uint8Array, i: number) {
  return { type: 'file_chunk', file_id: fileId, i, data: toB64url(data.subarray(i * CHUNK_SIZE, (i + 1) * CHUNK_SIZE)) };
}

/** The announcement of a file sent in `n` chunks (the chunks come from fileChunk). */
export function chunkedHeader(name: string, mime: string, data: Uint8Array, fileId: string) {
  if (data.length > FILE_MAX) throw new Error('a chunked file is at most 10 MiB');
  return {
    type: 'file',
    mode: 'chunked',
    file_id: fileId,
    name,
    mime,
    size: data.length,
    n: chunkCount(data.length),
    blake3: toHex(blake3(data)),
  };
}

export function fileShare(name: string, size: number, blake3Hex: string, ticket: string, key: string) {
  return { type: 'file_share', name, size, blake3: blake3Hex, ticket, key };
}
