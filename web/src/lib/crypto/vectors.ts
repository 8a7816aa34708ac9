/**
 * Interop vectors computed by the TypeScript implementation, in the format
 * of interop/README.md and from the same fixed inputs as the Python
 * generator (kezchat.e2e.vectors): keys from fixed seeds, envelopes from
 * fixed salts and times, sealed boxes from fixed ephemeral keys. Both are
 * deterministic, so the two files differ only in their `generator` line.
 * `npm run vectors` writes interop/web-vectors.json; the Python tests check
 * every entry of it, and vitest checks python-vectors.json the same way.
 */
import { bodyDigest, signRequest, signedText } from './auth';
import { toB64url, toHex, utf8 } from './bytes';
import { checkShape, seal, sealBytes, type Envelope } from './envelope';
import { jcs, jcsText } from './jcs';
import { KeyPair } from './keys';
import { MerkleTree, leafHash, signHead } from './merkle';
import { type Manifest } from './manifest';
import { manifestBlake3 } from './manifest';
import { seedToMnemonic } from './mnemonic';
import { primaryToUserNkey } from './nkeys';
import { chunkedHeader, fileChunk, fileShare, inlineFile, textMessage } from './plaintext';
import { registration } from './registration';
import { sealWithEphemeral } from './sealedbox';
import { eventHash, nextEvent, type ChainEvent } from './sigchain';
import { x25519 } from '@noble/curves/ed25519.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { INFO } from './envelope';

export const FORMAT_VERSION = 1;
export const TS = '2026-05-25T03:00:00Z';
export const UNIX_TS = 1779678000;
/** a plaintext two readers could disagree about: every client refuses it */
export const DUPLICATE_KEY_PLAINTEXT = '{"type":"text","text":"pay alice","text":"pay mallory"}';

const fill = (n: number, byte: number) => new Uint8Array(n).fill(byte);

export const SEEDS: Record<string, Uint8Array> = {
  alice: Uint8Array.from({ length: 32 }, (_, i) => i),
  bob: Uint8Array.from({ length: 32 }, (_, i) => 32 + i),
  carol: fill(32, 0x42),
};

export const JCS_INPUTS = [
  String.raw`{"b": 2, "a": 1}`,
  String.raw`{"text": "héllo \u00e9 \ud83d\ude00 \u000f", "n": 1E15, "f": 0.1, "neg": -0.0}`,
  String.raw`[1e21, 1e-7, 1.2345678901234568e20, 4.5, true, null, "\u2028"]`,
  String.raw`{"nested": {"z": [], "y": {}, "\u00e9": "é", "e": "E"}}`,
];

function keys(): Record<string, KeyPair> {
  return Object.fromEntries(Object.entries(SEEDS).map(([name, seed]) => [name, new KeyPair(seed)]));
}

function keyVectors() {
  return Object.entries(keys()).map(([name, key]) => ({
    name,
    seed_hex: toHex(key.seed),
    mnemonic: seedToMnemonic(key.seed),
    primary: key.primary,
    nkey: primaryToUserNkey(key.primary),
    x25519_public_hex: toHex(key.x25519Public()),
    x25519_private_hex: toHex(key.x25519Private()),
  }));
}

function jcsVectors() {
  return JCS_INPUTS.map((text) => ({ input_json: text, jcs: jcsText(JSON.parse(text)) }));
}

function registrationVectors() {
  const k = keys();
  return [
    ['alice', 'alice'],
    ['bob', 'bob_2'],
  ].map(([name, handle]) => {
    const body = registration(k[name], handle, 'kez.lat', TS);
    return { key: name, payload: body.payload, payload_jcs: jcsText(body.payload), body };
  });
}

/** the server the named-form request signatures name */
export const AUTH_SERVER = 'kez.lat';

/** `X-KEZ-Auth` for one request of each kind, signed for `server` (or in the older unnamed form). */
function authVectors(server: string | null = null) {
  const k = keys();
  const body = jcsText({ to: 'bob', envelope: { v: 1 } });
  const cases: [string, string, string, string[] | null, string | null][] = [
    ['alice', 'GET', '/v1/inbox/alice', ['since=0'], null],
    ['alice', 'GET', '/v1/inbox/alice', ['since=42'], null],
    ['alice', 'GET', '/v1/inbox/alice/stream', [], null],
    ['alice', 'DELETE', '/v1/inbox/alice', ['upto=7'], null],
    ['alice', 'POST', '/v1/messages', null, body],
    ['bob', 'PUT', '/v1/manifests/bob', null, body],
  ];
  // a long-lived stream URL: exp is signed as one more field
  if (server !== null) cases.push(['alice', 'GET', '/v1/inbox/alice/stream', [`exp=${UNIX_TS + 86400}`], null]);
  return cases.map(([name, method, path, fields, data]) => {
    const digest = data === null ? null : bodyDigest(data);
    const fieldList = digest !== null ? [digest] : [...(fields ?? [])];
    return {
      key: name,
      method,
      path,
      fields: fieldList,
      body: data,
      body_sha256: digest,
      ts: UNIX_TS,
      ...(server === null ? {} : { server }),
      signed_text: signedText(method, path, fieldList, UNIX_TS, server),
      header: signRequest(k[name], method, path, fieldList, UNIX_TS, server),
    };
  });
}

function plaintexts(): object[] {
  const data = utf8('0123456789'.repeat(9000));
  const fileId = '00112233445566778899aabbccddeeff';
  const pixel = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, ...Array.from({ length: 64 }, (_, i) => i)]);
  return [
    textMessage('hello bob'),
    textMessage('ünïcödé ✓ 😀\nsecond line'),
    inlineFile('pixel.png', 'image/png', pixel),
    chunkedHeader('notes.txt', 'text/plain', data, fileId),
    fileChunk(fileId, data, 1),
    fileShare('big.iso', 67108864, 'ab'.repeat(32), 'ticket-text', 'sealed-key-text'),
    // a delivered receipt (the server cannot tell it from any message)
    { type: 'receipt', status: 'delivered', sigs: ['0f'.repeat(64), 'a1'.repeat(64)] },
    // every plaintext a client sends carries its newest verified key directory head
    { ...textMessage('with a head'), head: { size: 7, root: 'cd'.repeat(32) } },
  ];
}

function envelopeVectors() {
  const k = keys();
  const pairs = [
    ['alice', 'bob'],
    ['bob', 'alice'],
    ['carol', 'alice'],
  ];
  return plaintexts().map((plaintext, index) => {
    const [sender, recipient] = pairs[index % pairs.length];
    const salt = fill(16, index);
    const envelope = seal(k[sender], k[recipient].primary, plaintext, { ts: TS, salt });
    const shared = x25519.getSharedSecret(k[sender].x25519Private(), k[recipient].x25519Public());
    const okm = hkdf(sha256, shared, salt, utf8(INFO), 44);
    return {
      sender,
      recipient,
      ts: TS,
      salt: toB64url(salt),
      plaintext,
      plaintext_jcs: jcsText(plaintext),
      aad_jcs: jcsText({ v: envelope.v, from: envelope.from, to: envelope.to, ts: envelope.ts }),
      shared_hex: toHex(shared),
      key_hex: toHex(okm.slice(0, 32)),
      nonce_hex: toHex(okm.slice(32, 44)),
      envelope,
    };
  });
}

function without<T extends object>(value: T, name: string): Record<string, unknown> {
  return Object.fromEntries(Object.entries(value).filter(([k]) => k !== name));
}

function badEnvelopeVectors() {
  const k = keys();
  const good: Envelope = seal(k.alice, k.bob.primary, textMessage('hi'), { ts: TS, salt: fill(16, 7) });
  const changed = (fields: Record<string, unknown>) => ({ ...good, ...fields });
  const ct = good.ct;
  const flippedCt = ct.slice(0, -2) + (ct.at(-2) !== 'A' ? 'A' : 'B') + ct.at(-1);
  const forged: Record<string, unknown> = { ...without(good, 'sig'), from: k.carol.primary };
  forged.sig = k.carol.signJcs(forged);
  return [
    { name: 'signature by another key', recipient: 'bob', error: 'bad_signature', envelope: changed({ sig: k.carol.signJcs(without(good, 'sig')) }) },
    { name: 'ciphertext changed', recipient: 'bob', error: 'bad_signature', envelope: changed({ ct: flippedCt }) },
    { name: 'time changed', recipient: 'bob', error: 'bad_signature', envelope: changed({ ts: '2026-05-25T03:00:01Z' }) },
    { name: 're-signed by a third party', recipient: 'bob', error: 'decrypt_failed', envelope: forged },
    { name: 'addressed to someone else', recipient: 'carol', error: 'not_for_us', envelope: good },
    { name: 'missing field', recipient: 'bob', error: 'malformed', envelope: without(good, 'salt') },
    { name: 'unknown version', recipient: 'bob', error: 'malformed', envelope: changed({ v: 2 }) },
    {
      name: 'plaintext with a repeated key',
      recipient: 'bob',
      error: 'bad_plaintext',
      envelope: sealBytes(k.alice, k.bob.primary, utf8(DUPLICATE_KEY_PLAINTEXT), { ts: TS, salt: fill(16, 9) }),
    },
  ];
}

function sigchainVectors() {
  const alice = keys().alice;
  const chain: ChainEvent[] = [];
  const steps: [string, Record<string, unknown>][] = [
    ['add_endpoint', { id: 'nats-1', protocol: 'nats', url: 'wss://kez.lat/nats', inbox: 'kez.inbox.' + alice.publicHex }],
    ['add_endpoint', { id: 'iroh-1', protocol: 'iroh', node_id: alice.publicHex }],
    ['add_claim', { claim: 'github:alice', proof_url: 'https://gist.github.com/alice/1' }],
    ['remove_endpoint', { id: 'nats-1' }],
  ];
  for (const [type, body] of steps) chain.push(nextEvent(alice, chain, type, body, TS));
  return [{ key: 'alice', events: chain, event_jcs: chain.map((e) => jcsText(e)), hashes: chain.map(eventHash) }];
}

function sealedKeyVectors() {
  const k = keys();
  return ['bob', 'carol'].map((recipient, index) => {
    const contentKey = fill(32, 0xa0 + index);
    const ephemeral = fill(32, 0x10 + index);
    return {
      recipient,
      content_key_hex: toHex(contentKey),
      ephemeral_secret_hex: toHex(ephemeral),
      sealed: toB64url(sealWithEphemeral(contentKey, k[recipient].primary, ephemeral)),
    };
  });
}

function manifestVectors() {
  const alice = keys().alice;
  const entry = {
    id: 'f1',
    name: 'readme.txt',
    size: 12,
    mime: 'text/plain',
    blake3: 'cd'.repeat(32),
    added_at: TS,
    visibility: 'public',
    wrapped: {},
  };
  const unsigned = { type: 'kez.chat.shared_files', version: 1, owner: alice.primary, created_at: TS, entries: [entry] };
  const manifest = { ...unsigned, sig: alice.signJcs(unsigned) } as Manifest;
  const blob = jcs(manifest);
  return [{ owner: 'alice', manifest, blob: jcsText(manifest), blake3: manifestBlake3(blob) }];
}

const KEYLOG_HANDLES = ['ana', 'ben', 'cai', 'dee', 'eli', 'fay', 'gus'];
const LOG_SEED = Uint8Array.from({ length: 32 }, (_, i) => 64 + i);

/** A fixed key directory of seven registrations with every head and proof (kezchat/keylog/vectors.py). */
function keylogVectors() {
  const server = 'kez.lat';
  const regs = KEYLOG_HANDLES.map((handle, i) => {
    const key = new KeyPair(new Uint8Array(32).fill(0x10 + i));
    return { handle, key, leaf: jcs(registration(key, handle, server, TS)) };
  });
  const tree = new MerkleTree();
  for (const r of regs) tree.append(r.leaf);
  const n = regs.length;
  const sizes = (from: number) => Array.from({ length: n - from + 1 }, (_, i) => from + i);
  return {
    server,
    ts: TS,
    log_seed_hex: toHex(LOG_SEED),
    leaves: regs.map((r) => ({ handle: r.handle, seed_hex: toHex(r.key.seed), leaf: toB64url(r.leaf), leaf_hash: toHex(leafHash(r.leaf)) })),
    heads: sizes(0).map((size) => signHead(LOG_SEED, size, tree.root(size), TS)),
    inclusion: sizes(1).flatMap((size) =>
      Array.from({ length: size }, (_, index) => ({ handle: regs[index].handle, index, size, path: tree.inclusion(index, size).map(toHex) })),
    ),
    consistency: sizes(1).flatMap((second) =>
      Array.from({ length: second }, (_, i) => ({ from: i + 1, to: second, path: tree.consistency(i + 1, second).map(toHex) })),
    ),
  };
}

export function buildVectors() {
  return {
    format: FORMAT_VERSION,
    generator: 'web/src/lib/crypto/vectors.ts (npm run vectors)',
    keys: keyVectors(),
    jcs: jcsVectors(),
    registrations: registrationVectors(),
    auth: authVectors(),
    auth_server: authVectors(AUTH_SERVER),
    envelopes: envelopeVectors(),
    bad_envelopes: badEnvelopeVectors(),
    sigchains: sigchainVectors(),
    sealed_keys: sealedKeyVectors(),
    manifests: manifestVectors(),
    keylog: keylogVectors(),
  };
}

function sortDeep(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortDeep);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(
      Object.keys(value)
        .sort()
        .map((k) => [k, sortDeep((value as Record<string, unknown>)[k])]),
    );
  }
  return value;
}

/** The file's text, laid out like the Python generator's (sorted keys, two-space indent). */
export function render(vectors: unknown): string {
  return JSON.stringify(sortDeep(vectors), null, 2) + '\n';
}

// re-exported for the tests
export { checkShape, sealBytes };
