/**
 * Deterministic interop vectors computed by this TypeScript code: keys
 * from fixed seeds, mnemonics, JCS bytes, registration signatures,
 * X-KEZ-Auth values, envelopes with fixed salts and timestamps, sigchain
 * events. `npm run vectors` writes them to interop/web-vectors.json; the
 * Python tests check every one, and vitest checks Python's file the same way.
 */
import { fromHex, toHex, utf8 } from './bytes';
import { inboxAuth, manifestAuth, sendAuth, signedText, streamAuth, deleteAuth } from './auth';
import { sealBytes } from './envelope';
import { jcs, jcsText } from './jcs';
import { KeyPair } from './keys';
import { seedToMnemonic } from './mnemonic';
import { registration } from './registration';
import { nextEvent, eventHash, type ChainEvent } from './sigchain';

export const SEEDS = [
  '0000000000000000000000000000000000000000000000000000000000000000',
  '000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f',
  '9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60',
  'ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff',
];

export const JCS_INPUTS: unknown[] = [
  { b: 2, a: 1, c: { z: [3, 'x', null, true], y: 'é\u2028"\\' } },
  { type: 'text', text: 'héllo 👋\n<tag>' },
  { n: [0, -1, 1.5, 1e21, 1e-7, 9007199254740991], s: '\u0000\u001f\u007f' },
  { '\u20ac': 1, '\r': 2, '1': 3, ä: 4, a: 5 },
];

export function buildVectors() {
  const keys = SEEDS.map((s) => new KeyPair(fromHex(s)));
  const [alice, bob] = [keys[1], keys[2]];
  const ts = 1780000000;
  const created = '2026-05-28T20:26:40Z';
  const sendBody = JSON.stringify({ to: 'bob', envelope: { v: 1 } });
  const plaintexts: object[] = [
    { type: 'text', text: 'hello bob' },
    { type: 'text', text: 'ünïcödé 🔐 and\nnewlines' },
    { type: 'file', mode: 'inline', name: 'a.txt', mime: 'text/plain', size: 5, data: 'aGVsbG8=' },
  ];
  const chain: ChainEvent[] = [];
  chain.push(nextEvent(alice, chain, 'add_endpoint', { id: 'web-1', protocol: 'https', url: 'https://kez.lat', inbox: 'alice@kez.lat' }, created));
  chain.push(nextEvent(alice, chain, 'add_claim', { claim: 'github:alice', proof_url: 'https://gist.github.com/alice/1' }, created));
  chain.push(nextEvent(alice, chain, 'remove_endpoint', { id: 'web-1' }, created));
  return {
    version: 1,
    generator: 'web/src/lib/crypto (TypeScript)',
    keys: keys.map((k) => ({
      seed: toHex(k.seed),
      primary: k.primary,
      x25519_private: toHex(k.x25519Private()),
      x25519_public: toHex(k.x25519Public()),
      mnemonic: seedToMnemonic(k.seed),
    })),
    jcs: JCS_INPUTS.map((input) => ({ input, jcs_hex: toHex(jcs(input)), jcs: jcsText(input) })),
    signatures: keys.map((k) => ({
      seed: toHex(k.seed),
      message_hex: toHex(utf8('kez interop')),
      sig: k.sign(utf8('kez interop')),
    })),
    registrations: [alice, bob].map((k, i) => ({
      seed: toHex(k.seed),
      body: registration(k, ['alice', 'bob'][i], 'kez.lat', created),
    })),
    auth: [
      { seed: toHex(alice.seed), kind: 'inbox', text: signedText('GET', '/v1/inbox/alice', ['since=0'], ts), value: inboxAuth(alice, 'alice', 0, ts) },
      { seed: toHex(alice.seed), kind: 'inbox', text: signedText('GET', '/v1/inbox/alice', ['since=42'], ts), value: inboxAuth(alice, 'alice', 42, ts) },
      { seed: toHex(alice.seed), kind: 'stream', text: signedText('GET', '/v1/inbox/alice/stream', [], ts), value: streamAuth(alice, 'alice', ts) },
      { seed: toHex(alice.seed), kind: 'delete', text: signedText('DELETE', '/v1/inbox/alice', ['upto=7'], ts), value: deleteAuth(alice, 'alice', 7, ts) },
      { seed: toHex(alice.seed), kind: 'send', body: sendBody, value: sendAuth(alice, sendBody, ts) },
      { seed: toHex(alice.seed), kind: 'manifest', body: sendBody, value: manifestAuth(alice, 'alice', sendBody, ts) },
    ],
    envelopes: plaintexts.map((p, i) => {
      const salt = new Uint8Array(16).fill(i + 1);
      const plaintext = jcs(p);
      return {
        sender_seed: toHex(alice.seed),
        recipient_seed: toHex(bob.seed),
        salt_hex: toHex(salt),
        ts: created,
        plaintext_hex: toHex(plaintext),
        envelope: sealBytes(alice, bob.primary, plaintext, { salt, ts: created }),
      };
    }),
    sigchain: { seed: toHex(alice.seed), events: chain, hashes: chain.map(eventHash) },
  };
}
