import { describe, expect, it } from 'vitest';
import {
  EnvelopeError,
  KeyPair,
  fromB64url,
  fromHex,
  jcsText,
  mnemonicToSeed,
  open,
  openBytes,
  parseHandle,
  seal,
  seedToMnemonic,
  toB64url,
  toHex,
  utf8,
  verifyBytes,
  verifyChain,
  verifyJcs,
  nextEvent,
  sealSeed,
  openSeed,
  WrongPassphrase,
  type ChainEvent,
} from './index';

const seed = (n: number) => new Uint8Array(32).fill(n);

describe('keys', () => {
  it('RFC 8032 test 1', () => {
    const k = new KeyPair(fromHex('9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60'));
    expect(k.primary).toBe('ed25519:d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a');
    expect(k.sign(new Uint8Array())).toBe(
      'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b',
    );
  });
  it('verifies only the exact message and key', () => {
    const k = new KeyPair(seed(7));
    const sig = k.sign(utf8('abc'));
    expect(verifyBytes(k.primary, utf8('abc'), sig)).toBe(true);
    expect(verifyBytes(k.primary, utf8('abd'), sig)).toBe(false);
    expect(verifyBytes(new KeyPair(seed(8)).primary, utf8('abc'), sig)).toBe(false);
    expect(verifyBytes(k.primary, utf8('abc'), sig.toUpperCase())).toBe(false);
    expect(verifyBytes(k.primary, utf8('abc'), 'zz')).toBe(false);
  });
});

describe('mnemonic', () => {
  it('round trips 24 words and rejects bad ones', () => {
    const s = crypto.getRandomValues(new Uint8Array(32));
    const words = seedToMnemonic(s);
    expect(words.split(' ')).toHaveLength(24);
    expect(toHex(mnemonicToSeed('  ' + words.toUpperCase().replace(/ /g, '\n ')))).toBe(toHex(s));
    const swapped = words.split(' ');
    [swapped[0], swapped[1]] = [swapped[1], swapped[0]];
    if (swapped[0] !== swapped[1]) expect(() => mnemonicToSeed(swapped.join(' '))).toThrow();
    expect(() => mnemonicToSeed('abandon '.repeat(12))).toThrow(/24 words/);
  });
  it('the all-zero seed is 23 × abandon + art', () => {
    expect(seedToMnemonic(seed(0))).toBe('abandon '.repeat(23) + 'art');
  });
});

describe('jcs', () => {
  it('sorts keys by UTF-16 units and writes numbers like ECMAScript', () => {
    expect(jcsText({ b: 1, a: [1e21, 1.5, -0, 'é'] })).toBe('{"a":[1e+21,1.5,0,"é"],"b":1}');
    expect(jcsText({ '\u20ac': 1, '\r': 2, '1': 3 })).toBe('{"\\r":2,"1":3,"€":1}');
  });
});

describe('envelope', () => {
  const alice = new KeyPair(seed(1));
  const bob = new KeyPair(seed(2));
  const eve = new KeyPair(seed(3));

  it('bob opens what alice sealed; fixed salt and ts are deterministic', () => {
    const env = seal(alice, bob.primary, { type: 'text', text: 'hi' }, { salt: seed(9).slice(0, 16), ts: '2026-01-01T00:00:00Z' });
    const again = seal(alice, bob.primary, { type: 'text', text: 'hi' }, { salt: seed(9).slice(0, 16), ts: '2026-01-01T00:00:00Z' });
    expect(again).toEqual(env);
    expect(open(bob, env, alice.primary)).toEqual({ type: 'text', text: 'hi' });
    // alice can open her own sent envelope too (X25519 is symmetric)
    expect(() => open(eve, env)).toThrow(EnvelopeError);
  });

  it('any tampering is caught, with a reason', () => {
    const env = seal(alice, bob.primary, { type: 'text', text: 'hi' });
    const code = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return (e as EnvelopeError).code;
      }
      return 'ok';
    };
    expect(code(() => open(bob, { ...env, ts: '2020-01-01T00:00:00Z' }))).toBe('bad_signature');
    expect(code(() => open(bob, { ...env, sig: '0'.repeat(128) }))).toBe('bad_signature');
    expect(code(() => open(bob, env, eve.primary))).toBe('sender_mismatch');
    expect(code(() => open(eve, env))).toBe('not_for_us');
    expect(code(() => open(bob, { ...env, extra: 1 }))).toBe('malformed');
    expect(code(() => open(bob, 'nope'))).toBe('malformed');
    // re-signed by eve with alice's from: signature fails
    const { sig: _sig, ...unsigned } = env;
    expect(code(() => open(bob, { ...unsigned, sig: eve.signJcs(unsigned) }))).toBe('bad_signature');
    // a validly signed envelope whose ciphertext was flipped: undecryptable
    const ct = fromB64url(env.ct);
    ct[0] ^= 1;
    const flipped = { ...unsigned, ct: toB64url(ct) };
    expect(code(() => openBytes(bob, { ...flipped, sig: alice.signJcs(flipped) }))).toBe('decrypt_failed');
  });
});

describe('sigchain', () => {
  it('links and verifies, and notices a broken link', () => {
    const k = new KeyPair(seed(5));
    const chain: ChainEvent[] = [];
    chain.push(nextEvent(k, chain, 'add_endpoint', { id: 'a', protocol: 'https', url: 'https://x' }, '2026-01-01T00:00:00Z'));
    chain.push(nextEvent(k, chain, 'add_claim', { claim: 'github:k' }, '2026-01-01T00:00:01Z'));
    expect(chain[0].prev).toBeNull();
    expect(verifyChain(k.primary, chain).ok).toBe(true);
    const { sig, ...unsigned } = chain[1];
    expect(verifyJcs(k.primary, unsigned, sig)).toBe(true);
    expect(verifyJcs(k.primary, { ...unsigned, body: { claim: 'github:eve' } }, sig)).toBe(false);
    const broken = [chain[0], { ...chain[1], prev: '0'.repeat(64) }];
    expect(verifyChain(k.primary, broken).ok).toBe(false);
  });
});

describe('handles', () => {
  it('accepts bare and qualified, any case; refuses junk', () => {
    expect(parseHandle('Alice', 'kez.lat').fqhn).toBe('alice@kez.lat');
    expect(parseHandle(' alice@Other.example ', 'kez.lat').fqhn).toBe('alice@other.example');
    expect(parseHandle('@bob', 'kez.lat').fqhn).toBe('bob@kez.lat');
    for (const bad of ['al', '-alice', 'a b c', 'alice@', 'alice@bad host', '\u212aelvin']) {
      expect(() => parseHandle(bad, 'kez.lat')).toThrow();
    }
  });
});

describe('vault', () => {
  it('opens with the passphrase only', async () => {
    const s = seed(4);
    const sealed = await sealSeed(s, 'correct horse', 1000);
    expect(toHex(await openSeed(sealed, 'correct horse'))).toBe(toHex(s));
    await expect(openSeed(sealed, 'wrong')).rejects.toBeInstanceOf(WrongPassphrase);
  });
  it('uses at least 600k PBKDF2 iterations by default', async () => {
    const sealed = await sealSeed(seed(4), 'p');
    expect(sealed.iterations).toBeGreaterThanOrEqual(600_000);
  }, 20_000);
});
