/**
 * Byte helpers shared by the crypto modules: hex, base64, base64url, UTF-8.
 *
 * base64url on the wire is written without padding; readers accept either.
 */
import { base64, base64urlnopad, hex } from '@scure/base';

export function toHex(bytes: Uint8Array): string {
  return hex.encode(bytes);
}

export function fromHex(text: string): Uint8Array {
  if (!/^([0-9a-f]{2})*$/.test(text)) throw new Error('not lowercase hex');
  return hex.decode(text);
}

export function toB64(bytes: Uint8Array): string {
  return base64.encode(bytes);
}

export function fromB64(text: string): Uint8Array {
  return base64.decode(text);
}

export function toB64url(bytes: Uint8Array): string {
  return base64urlnopad.encode(bytes);
}

export function fromB64url(text: string): Uint8Array {
  return base64urlnopad.decode(text.replace(/=+$/, ''));
}

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

export function utf8(text: string): Uint8Array {
  return encoder.encode(text);
}

export function fromUtf8(bytes: Uint8Array): string {
  return decoder.decode(bytes);
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

export function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  crypto.getRandomValues(out);
  return out;
}

export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}
