/**
 * The primary key as a NATS user nkey (`U…`): base32 of the prefix byte,
 * the 32 key bytes and a CRC-16/XMODEM, little-endian.
 */
import { base32nopad } from '@scure/base';
import { parsePrimary } from './keys';

const PREFIX_USER = 20 << 3;

function crc16(bytes: Uint8Array): number {
  let crc = 0;
  for (const b of bytes) {
    crc ^= b << 8;
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc;
}

export function primaryToUserNkey(primary: string): string {
  const raw = new Uint8Array(35);
  raw[0] = PREFIX_USER;
  raw.set(parsePrimary(primary), 1);
  const crc = crc16(raw.subarray(0, 33));
  raw[33] = crc & 0xff;
  raw[34] = crc >> 8;
  return base32nopad.encode(raw);
}
