/**
 * RFC 8785 canonical JSON: the only byte form KEZ ever signs.
 */
import canonicalize from 'canonicalize';
import { utf8 } from './bytes';

export function jcsText(value: unknown): string {
  const text = canonicalize(value);
  if (text === undefined) throw new Error('value cannot be canonicalised');
  return text;
}

export function jcs(value: unknown): Uint8Array {
  return utf8(jcsText(value));
}
