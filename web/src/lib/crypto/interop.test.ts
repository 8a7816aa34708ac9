/**
 * The interop vectors: every entry of interop/python-vectors.json (written
 * by the Python package) recomputed and checked here, byte for byte; and
 * the committed interop/web-vectors.json is what this code writes.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { fromB64url, fromHex, toB64url, toHex, utf8 } from './bytes';
import { EnvelopeError, open, seal } from './envelope';
import { jcsText } from './jcs';
import { KeyPair } from './keys';
import { manifestBlake3, verifyManifest } from './manifest';
import { mnemonicToSeed, seedToMnemonic } from './mnemonic';
import { primaryToUserNkey } from './nkeys';
import { bodyDigest, signRequest, signedText } from './auth';
import { openSealed, sealWithEphemeral } from './sealedbox';
import { eventHash, verifyChain } from './sigchain';
import { buildVectors, render } from './vectors';

const interop = resolve(__dirname, '../../../../interop');
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Any = any;
const load = (name: string): Any => JSON.parse(readFileSync(resolve(interop, name), 'utf-8'));

function checks(file: string) {
  const vectors = load(file);
  const key = (name: string) => new KeyPair(fromHex(vectors.keys.find((k: Any) => k.name === name).seed_hex));

  describe(file, () => {
    it('keys: primary, mnemonic both ways, nkey, X25519', () => {
      for (const entry of vectors.keys) {
        const k = new KeyPair(fromHex(entry.seed_hex));
        expect(k.primary).toBe(entry.primary);
        expect(seedToMnemonic(k.seed)).toBe(entry.mnemonic);
        expect(toHex(mnemonicToSeed(entry.mnemonic))).toBe(entry.seed_hex);
        expect(primaryToUserNkey(k.primary)).toBe(entry.nkey);
        expect(toHex(k.x25519Public())).toBe(entry.x25519_public_hex);
        expect(toHex(k.x25519Private())).toBe(entry.x25519_private_hex);
      }
    });

    it('jcs', () => {
      for (const entry of vectors.jcs) expect(jcsText(JSON.parse(entry.input_json))).toBe(entry.jcs);
    });

    it('registrations', () => {
      for (const entry of vectors.registrations) {
        expect(jcsText(entry.payload)).toBe(entry.payload_jcs);
        expect(entry.body.payload).toEqual(entry.payload);
        expect(key(entry.key).signJcs(entry.payload)).toBe(entry.body.signature.sig);
      }
    });

    it('X-KEZ-Auth', () => {
      // "auth": the older form; "auth_server": the form naming the server
      for (const entry of [...vectors.auth, ...(vectors.auth_server ?? [])]) {
        const server = entry.server ?? null;
        if (entry.body !== null) expect(bodyDigest(entry.body)).toBe(entry.body_sha256);
        expect(signedText(entry.method, entry.path, entry.fields, entry.ts, server)).toBe(entry.signed_text);
        expect(signRequest(key(entry.key), entry.method, entry.path, entry.fields, entry.ts, server)).toBe(entry.header);
      }
    });

    it('envelopes: sealed identically, and open', () => {
      for (const entry of vectors.envelopes) {
        const sender = key(entry.sender);
        const recipient = key(entry.recipient);
        expect(jcsText(entry.plaintext)).toBe(entry.plaintext_jcs);
        const sealed = seal(sender, recipient.primary, entry.plaintext, { ts: entry.ts, salt: fromB64url(entry.salt) });
        expect(sealed).toEqual(entry.envelope);
        expect(open(recipient, entry.envelope, sender.primary)).toEqual(entry.plaintext);
      }
    });

    it('bad envelopes are refused, for the same reason', () => {
      for (const entry of vectors.bad_envelopes) {
        let code = 'opened';
        try {
          open(key(entry.recipient), entry.envelope);
        } catch (e) {
          code = (e as EnvelopeError).code;
        }
        expect([entry.name, code]).toEqual([entry.name, entry.error]);
      }
    });

    it('sigchains', () => {
      for (const entry of vectors.sigchains) {
        const k = key(entry.key);
        expect(verifyChain(k.primary, entry.events)).toEqual({ ok: true, problems: [] });
        entry.events.forEach((event: Any, i: number) => {
          const { sig, ...unsigned } = event;
          expect(k.signJcs(unsigned)).toBe(sig);
          expect(jcsText(event)).toBe(entry.event_jcs[i]);
          expect(eventHash(event)).toBe(entry.hashes[i]);
        });
      }
    });

    it('sealed content keys', () => {
      for (const entry of vectors.sealed_keys) {
        const recipient = key(entry.recipient);
        expect(toHex(openSealed(fromB64url(entry.sealed), recipient))).toBe(entry.content_key_hex);
        const again = sealWithEphemeral(fromHex(entry.content_key_hex), recipient.primary, fromHex(entry.ephemeral_secret_hex));
        expect(toB64url(again)).toBe(entry.sealed);
      }
    });

    it('manifests', () => {
      for (const entry of vectors.manifests) {
        const owner = key(entry.owner);
        expect(jcsText(entry.manifest)).toBe(entry.blob);
        expect(manifestBlake3(utf8(entry.blob))).toBe(entry.blake3);
        expect(verifyManifest(utf8(entry.blob), owner.primary, entry.blake3)).toEqual(entry.manifest);
        expect(() => verifyManifest(utf8(entry.blob.replace('readme', 'README')), owner.primary, entry.blake3)).toThrow();
      }
    });
  });
}

checks('python-vectors.json');
checks('web-vectors.json');

describe('generators agree', () => {
  it('this code writes the committed web-vectors.json (npm run vectors)', () => {
    expect(readFileSync(resolve(interop, 'web-vectors.json'), 'utf-8')).toBe(render(buildVectors()));
  });
  it('and the same vectors as Python, but for the generator line', () => {
    const python = load('python-vectors.json');
    const web = buildVectors() as Any;
    expect({ ...web, generator: null }).toEqual({ ...python, generator: null });
  });
});
