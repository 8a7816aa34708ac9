"""
Interop test vectors: fixed inputs and the exact bytes KEZ clients must
produce from them.

C{python -m kezchat.e2e.vectors > interop/python-vectors.json} writes the
file the web app's unit tests check; the Python tests check that this
module still writes exactly the committed file, and verify the file the
web app writes (C{interop/web-vectors.json}, same format).  Everything is
deterministic: keys come from fixed seeds, envelopes from fixed salts and
times, and sealed boxes from fixed ephemeral keys (L{seal_with_ephemeral}
builds exactly what libsodium's C{crypto_box_seal} would with that key).
"""

from __future__ import annotations

import hashlib
import json
import sys
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from nacl.bindings import crypto_box, crypto_scalarmult_base

from kezchat.e2e.envelope import derive, header_of, seal_envelope
from kezchat.e2e.plaintext import chunked_file, file_share, inline_file, receipt, text_message
from kezchat.identity.jcs import canonical_json
from kezchat.identity.keys import KeyPair, x25519_public_from_primary
from kezchat.identity.mnemonic import seed_to_mnemonic
from kezchat.identity.nkeys import primary_to_user_nkey
from kezchat.keylog.vectors import keylog_vectors
from kezchat.manifests.blob import build_manifest, manifest_blake3, manifest_bytes
from kezchat.manifests.entries import public_entry
from kezchat.manifests.sealing import b64url_encode
from kezchat.protocol.auth import body_digest, sign_request, signed_text
from kezchat.protocol.registration import registration_payload, sign_registration
from kezchat.sigchain import bodies
from kezchat.sigchain.events import event_hash, next_event

FORMAT_VERSION = 1

SEEDS = {
    "alice": bytes(range(32)),
    "bob": bytes(range(32, 64)),
    "carol": bytes([0x42] * 32),
}

TS = "2026-05-25T03:00:00Z"
UNIX_TS = 1779678000  # 2026-05-25T03:00:00Z


def seal_with_ephemeral(message: bytes, recipient_primary: str, ephemeral_secret: bytes) -> bytes:
    """
    libsodium's C{crypto_box_seal} with a given ephemeral secret key: the
    ephemeral public key, then C{crypto_box} under the nonce
    BLAKE2b-24(ephemeral public || recipient public).
    """
    recipient = x25519_public_from_primary(recipient_primary)
    ephemeral_public = crypto_scalarmult_base(ephemeral_secret)
    nonce = hashlib.blake2b(ephemeral_public + recipient, digest_size=24).digest()
    return ephemeral_public + crypto_box(message, nonce, recipient, ephemeral_secret)


def _keys() -> dict[str, KeyPair]:
    return {name: KeyPair(seed) for name, seed in SEEDS.items()}


def key_vectors() -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "seed_hex": key.seed.hex(),
            "mnemonic": seed_to_mnemonic(key.seed),
            "primary": key.primary,
            "nkey": primary_to_user_nkey(key.primary),
            "x25519_public_hex": key.x25519_public().hex(),
            "x25519_private_hex": key.x25519_private().hex(),
        }
        for name, key in _keys().items()
    ]


JCS_INPUTS = [
    '{"b": 2, "a": 1}',
    '{"text": "héllo \\u00e9 \\ud83d\\ude00 \\u000f", "n": 1E15, "f": 0.1, "neg": -0.0}',
    '[1e21, 1e-7, 1.2345678901234568e20, 4.5, true, null, "\\u2028"]',
    '{"nested": {"z": [], "y": {}, "\\u00e9": "é", "e": "E"}}',
]


def jcs_vectors() -> list[dict[str, Any]]:
    return [
        {"input_json": text, "jcs": canonical_json(json.loads(text)).decode("utf-8")}
        for text in JCS_INPUTS
    ]


def registration_vectors() -> list[dict[str, Any]]:
    keys = _keys()
    out = []
    for name, handle in (("alice", "alice"), ("bob", "bob_2")):
        payload = registration_payload(keys[name], handle, "kez.lat", TS)
        out.append(
            {
                "key": name,
                "payload": payload,
                "payload_jcs": canonical_json(payload).decode("utf-8"),
                "body": sign_registration(keys[name], payload),
            }
        )
    return out


#: the server the new-form request signatures name
AUTH_SERVER = "kez.lat"


def auth_vectors(server: str | None = None) -> list[dict[str, Any]]:
    """
    C{X-KEZ-Auth} values for one request of each kind, signed for
    C{server} (the new form, with its C{@server} line), or in the older
    form that names no server when C{server} is C{None}.
    """
    keys = _keys()
    body = canonical_json({"to": "bob", "envelope": {"v": 1}})
    cases = [
        ("alice", "GET", "/v1/inbox/alice", ["since=0"], None),
        ("alice", "GET", "/v1/inbox/alice", ["since=42"], None),
        ("alice", "GET", "/v1/inbox/alice/stream", [], None),
        ("alice", "DELETE", "/v1/inbox/alice", ["upto=7"], None),
        ("alice", "POST", "/v1/messages", None, body),
        ("bob", "PUT", "/v1/manifests/bob", None, body),
    ]
    if server is not None:
        # a long-lived stream URL: exp is signed as one more field
        cases.append(("alice", "GET", "/v1/inbox/alice/stream", [f"exp={UNIX_TS + 86400}"], None))
    out = []
    for name, method, path, fields, data in cases:
        digest = None if data is None else body_digest(data)
        field_list = [digest] if digest is not None else list(fields or [])
        out.append(
            {
                "key": name,
                "method": method,
                "path": path,
                "fields": field_list,
                "body": None if data is None else data.decode("utf-8"),
                "body_sha256": digest,
                "ts": UNIX_TS,
                **({} if server is None else {"server": server}),
                "signed_text": signed_text(method, path, field_list, UNIX_TS, server).decode(
                    "utf-8"
                ),
                "header": sign_request(keys[name], method, path, field_list, UNIX_TS, server),
            }
        )
    return out


def _plaintexts() -> list[dict[str, Any]]:
    header, chunks = chunked_file(
        "notes.txt", "text/plain", b"0123456789" * 9000, file_id="00112233445566778899aabbccddeeff"
    )
    return [
        text_message("hello bob"),
        text_message("ünïcödé ✓ 😀\nsecond line"),
        inline_file("pixel.png", "image/png", bytes.fromhex("89504e470d0a1a0a") + bytes(range(64))),
        header,
        chunks[1],
        file_share("big.iso", 67108864, "ab" * 32, "ticket-text", "sealed-key-text"),
        receipt("delivered", ["0f" * 64, "a1" * 64]),
        # every plaintext a client sends carries its newest verified key directory head
        {**text_message("with a head"), "head": {"size": 7, "root": "cd" * 32}},
    ]


def envelope_vectors() -> list[dict[str, Any]]:
    keys = _keys()
    out = []
    pairs = [("alice", "bob"), ("bob", "alice"), ("carol", "alice")]
    for index, plaintext in enumerate(_plaintexts()):
        sender, recipient = pairs[index % len(pairs)]
        salt = bytes([index]) * 16
        envelope = seal_envelope(keys[sender], keys[recipient].primary, plaintext, ts=TS, salt=salt)
        secrets = derive(keys[sender], keys[recipient].primary, salt)
        out.append(
            {
                "sender": sender,
                "recipient": recipient,
                "ts": TS,
                "salt": b64url_encode(salt),
                "plaintext": plaintext,
                "plaintext_jcs": canonical_json(plaintext).decode("utf-8"),
                "aad_jcs": canonical_json(header_of(envelope)).decode("utf-8"),
                "shared_hex": secrets.shared.hex(),
                "key_hex": secrets.key.hex(),
                "nonce_hex": secrets.nonce.hex(),
                "envelope": envelope,
            }
        )
    return out


def seal_raw(sender: KeyPair, recipient_primary: str, plain: bytes, salt: bytes) -> dict[str, Any]:
    """
    An envelope around arbitrary plaintext bytes (at L{TS}): how a hostile
    sender builds a plaintext that L{seal_envelope} would never write.
    """
    envelope: dict[str, Any] = {
        "v": 1,
        "from": sender.primary,
        "to": recipient_primary,
        "ts": TS,
        "salt": b64url_encode(salt),
    }
    secrets = derive(sender, recipient_primary, salt)
    ct = ChaCha20Poly1305(secrets.key).encrypt(
        secrets.nonce, plain, canonical_json(header_of(envelope))
    )
    envelope["ct"] = b64url_encode(ct)
    envelope["sig"] = sender.sign_jcs(envelope)
    return envelope


#: a plaintext two readers could disagree about: every client refuses it
DUPLICATE_KEY_PLAINTEXT = b'{"type":"text","text":"pay alice","text":"pay mallory"}'


def bad_envelope_vectors() -> list[dict[str, Any]]:
    """
    Envelopes a client must refuse, each with the L{EnvelopeError} code
    the Python client gives (other clients need only refuse them).
    """
    keys = _keys()
    good = seal_envelope(
        keys["alice"], keys["bob"].primary, text_message("hi"), ts=TS, salt=b"\x07" * 16
    )

    def changed(**fields: Any) -> dict[str, Any]:
        return {**good, **fields}

    ct = good["ct"]
    flipped_ct = ct[:-2] + ("A" if ct[-2] != "A" else "B") + ct[-1]
    # a forgery: mallory re-signs alice's envelope claiming to be carol, but
    # the ciphertext was made with alice's key agreement
    forged = {k: v for k, v in good.items() if k != "sig"}
    forged["from"] = keys["carol"].primary
    forged["sig"] = keys["carol"].sign_jcs(forged)
    return [
        {
            "name": "signature by another key",
            "recipient": "bob",
            "error": "bad_signature",
            "envelope": changed(
                sig=keys["carol"].sign_jcs({k: v for k, v in good.items() if k != "sig"})
            ),
        },
        {
            "name": "ciphertext changed",
            "recipient": "bob",
            "error": "bad_signature",
            "envelope": changed(ct=flipped_ct),
        },
        {
            "name": "time changed",
            "recipient": "bob",
            "error": "bad_signature",
            "envelope": changed(ts="2026-05-25T03:00:01Z"),
        },
        {
            "name": "re-signed by a third party",
            "recipient": "bob",
            "error": "decrypt_failed",
            "envelope": forged,
        },
        {
            "name": "addressed to someone else",
            "recipient": "carol",
            "error": "not_for_us",
            "envelope": good,
        },
        {
            "name": "missing field",
            "recipient": "bob",
            "error": "malformed",
            "envelope": {k: v for k, v in good.items() if k != "salt"},
        },
        {
            "name": "unknown version",
            "recipient": "bob",
            "error": "malformed",
            "envelope": changed(v=2),
        },
        {
            "name": "plaintext with a repeated key",
            "recipient": "bob",
            "error": "bad_plaintext",
            "envelope": seal_raw(
                keys["alice"], keys["bob"].primary, DUPLICATE_KEY_PLAINTEXT, b"\x09" * 16
            ),
        },
    ]


def sigchain_vectors() -> list[dict[str, Any]]:
    alice = _keys()["alice"]
    chain: list[dict[str, Any]] = []
    for kind, body in (
        (
            "add_endpoint",
            bodies.add_endpoint(
                "nats-1", "nats", url="wss://kez.lat/nats", inbox="kez.inbox." + alice.public_hex
            ),
        ),
        ("add_endpoint", bodies.add_endpoint("iroh-1", "iroh", node_id=alice.public_hex)),
        ("add_claim", bodies.add_claim("github:alice", "https://gist.github.com/alice/1")),
        ("remove_endpoint", bodies.remove_endpoint("nats-1")),
    ):
        chain.append(next_event(alice, chain, kind, body, created_at=TS))
    return [
        {
            "key": "alice",
            "events": chain,
            "event_jcs": [canonical_json(e).decode("utf-8") for e in chain],
            "hashes": [event_hash(e) for e in chain],
        }
    ]


def sealed_key_vectors() -> list[dict[str, Any]]:
    keys = _keys()
    out = []
    for index, recipient in enumerate(("bob", "carol")):
        content_key = bytes([0xA0 + index]) * 32
        ephemeral = bytes([0x10 + index]) * 32
        sealed = seal_with_ephemeral(content_key, keys[recipient].primary, ephemeral)
        out.append(
            {
                "recipient": recipient,
                "content_key_hex": content_key.hex(),
                "ephemeral_secret_hex": ephemeral.hex(),
                "sealed": b64url_encode(sealed),
            }
        )
    return out


def manifest_vectors() -> list[dict[str, Any]]:
    alice = _keys()["alice"]
    entry = public_entry(
        id="f1",
        name="readme.txt",
        size=12,
        mime="text/plain",
        blake3="cd" * 32,
        added_at=TS,
    )
    manifest = build_manifest(alice, [entry], created_at=TS)
    data = manifest_bytes(manifest)
    return [
        {
            "owner": "alice",
            "manifest": manifest,
            "blob": data.decode("utf-8"),
            "blake3": manifest_blake3(data),
        }
    ]


def all_vectors() -> dict[str, Any]:
    return {
        "format": FORMAT_VERSION,
        "generator": "kezchat.e2e.vectors",
        "keys": key_vectors(),
        "jcs": jcs_vectors(),
        "registrations": registration_vectors(),
        "auth": auth_vectors(),
        "auth_server": auth_vectors(AUTH_SERVER),
        "envelopes": envelope_vectors(),
        "bad_envelopes": bad_envelope_vectors(),
        "sigchains": sigchain_vectors(),
        "sealed_keys": sealed_key_vectors(),
        "manifests": manifest_vectors(),
        "keylog": keylog_vectors(TS),
    }


def render(vectors: dict[str, Any]) -> str:
    """
    The file's text: stable key order, two-space indent, non-ASCII kept.
    """
    return json.dumps(vectors, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> None:
    sys.stdout.write(render(all_vectors()))


if __name__ == "__main__":
    main()
