/**
 * The live link's small decisions: which transport, when to sign a stream
 * URL again, this browser's device name, the KEZ key as a NATS nkey.
 */
import { describe, expect, it } from 'vitest';
import { fromPublic } from '@nats-io/nkeys';
import { KeyPair, verifyBytes } from './crypto/keys';
import { fromB64url, toHex, utf8 } from './crypto/bytes';
import { nkeyAuthenticator, userNkey } from './nkey';
import { startingEndpoints } from './endpoints';
import { arrivalOf } from './natslive';
import { NATS_RETRY_MS, RESIGN_MARGIN_S, STREAM_WINDOW_S, chooseTransport, deviceName, resignDelay, streamExpiry } from './transport';

describe('transport choice', () => {
  it('takes NATS only when a ws(s) URL is advertised and it has not just failed', () => {
    expect(chooseTransport('ws://127.0.0.1:8080', 0, 1000)).toBe('nats');
    expect(chooseTransport('wss://kez.lat/nats', 0, 1000)).toBe('nats');
    expect(chooseTransport(null, 0, 1000)).toBe('sse');
    expect(chooseTransport(undefined, 0, 1000)).toBe('sse');
    expect(chooseTransport('', 0, 1000)).toBe('sse');
    expect(chooseTransport('nats://127.0.0.1:4222', 0, 1000)).toBe('sse');
    expect(chooseTransport('ws://x', 1000 + NATS_RETRY_MS, 1000)).toBe('sse');
    expect(chooseTransport('ws://x', 1000 + NATS_RETRY_MS, 1000 + NATS_RETRY_MS)).toBe('nats');
  });
});

describe('stream URL timing', () => {
  it('signs for 12 h, within the 24 h the server allows', () => {
    expect(streamExpiry(1_000_000)).toBe(1_000_000 + 12 * 3600);
    expect(STREAM_WINDOW_S).toBeLessThanOrEqual(24 * 3600);
  });

  it('signs again an hour before exp, at once when that is past', () => {
    const signed = 1_000_000;
    const exp = streamExpiry(signed);
    expect(resignDelay(exp, signed * 1000)).toBe((STREAM_WINDOW_S - RESIGN_MARGIN_S) * 1000);
    expect(resignDelay(exp, (exp - RESIGN_MARGIN_S) * 1000 - 1)).toBe(1);
    expect(resignDelay(exp, exp * 1000)).toBe(0);
    expect(resignDelay(exp, (exp + 5) * 1000)).toBe(0);
  });
});

describe('device name', () => {
  function memory(): Pick<Storage, 'getItem' | 'setItem'> & { data: Map<string, string> } {
    const data = new Map<string, string>();
    return { data, getItem: (k) => data.get(k) ?? null, setItem: (k, v) => void data.set(k, v) };
  }

  it('is made once, fits [a-z0-9]{1,16}, and is kept', () => {
    const store = memory();
    const first = deviceName(store);
    expect(first).toMatch(/^[a-z0-9]{1,16}$/);
    expect(deviceName(store, () => new Uint8Array(10).fill(7))).toBe(first);
  });

  it('replaces a kept name that is not a device name', () => {
    const store = memory();
    store.data.set('kez-device', 'Bad Name!');
    expect(deviceName(store, () => new Uint8Array(10))).toBe('webaaaaaaaaaa');
  });

  it('works without storage', () => {
    expect(deviceName(null)).toMatch(/^web[a-z0-9]{10}$/);
  });
});

describe('the KEZ key as a NATS nkey', () => {
  const key = new KeyPair(Uint8Array.from({ length: 32 }, (_, i) => i));

  it('matches the Python callout side and the nkeys library', () => {
    // from kezchat.natsbridge.keys.NKey(USER, bytes(range(32))).public
    expect(userNkey(key.publicKey)).toBe('UAB2CB576PHBBPQ5ODORRZ2LYCMWPZGWGCN2KDK7DXOIMZASKUY3RLKK');
    // fromPublic checks the role byte and the CRC
    expect(fromPublic(userNkey(key.publicKey)).getPublicKey()).toBe(userNkey(key.publicKey));
  });

  it('signs the nonce with the KEZ key', () => {
    const auth = nkeyAuthenticator(key)('a-server-nonce');
    const sig = fromB64url(auth.sig);
    expect(verifyBytes(key.primary, utf8('a-server-nonce'), toHex(sig))).toBe(true);
    expect(fromPublic(auth.nkey).verify(utf8('a-server-nonce'), sig)).toBe(true);
    expect(nkeyAuthenticator(key)().sig).toBe('');
  });
});

describe('consumer arrivals', () => {
  it('take the envelope signature and a numeric Kez-Stored seq only', () => {
    const data = utf8(JSON.stringify({ sig: 'ab'.repeat(64), v: 1 }));
    expect(arrivalOf(data, '17')).toEqual({ sig: 'ab'.repeat(64), storedSeq: 17 });
    expect(arrivalOf(data, undefined)).toEqual({ sig: 'ab'.repeat(64), storedSeq: null });
    expect(arrivalOf(utf8('not json'), '-1')).toEqual({ sig: null, storedSeq: null });
    expect(arrivalOf(utf8('{"sig":5}'), '1e9')).toEqual({ sig: null, storedSeq: null });
  });
});

describe('the sigchain start', () => {
  it('puts the NATS endpoint first when the server has one', () => {
    const hex = 'ab'.repeat(32);
    expect(startingEndpoints(hex, 'https://kez.lat', 'alice@kez.lat', 'wss://kez.lat/nats')).toEqual([
      { id: 'nats', protocol: 'nats', url: 'wss://kez.lat/nats', inbox: `kez.inbox.${hex}` },
      { id: 'chat-https', protocol: 'https', url: 'https://kez.lat', inbox: 'alice@kez.lat' },
    ]);
    expect(startingEndpoints(hex, 'https://kez.lat', 'alice@kez.lat', null)).toEqual([
      { id: 'chat-https', protocol: 'https', url: 'https://kez.lat', inbox: 'alice@kez.lat' },
    ]);
  });
});
