"""
docs/protocol.md's worked examples, recomputed with the package.

Every fenced block tagged C{kez-example=<name>} must hold exactly what
L{EXAMPLES}[name] computes from the fixed seeds, so the document cannot
drift from the code. After a deliberate protocol change, rewrite the
blocks with::

    python -m tests.test_protocol_doc --write
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

import nkeys
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from kezchat.e2e import inline_file, open_envelope, seal_envelope, text_message
from kezchat.e2e.envelope import derive, header_of
from kezchat.errors import STATUS_BY_CODE
from kezchat.federation import s2s
from kezchat.identity.jcs import canonical_json
from kezchat.identity.keys import KeyPair
from kezchat.identity.mnemonic import mnemonic_to_seed, seed_to_mnemonic
from kezchat.identity.nkeys import primary_to_user_nkey
from kezchat.keylog import merkle
from kezchat.keylog.vectors import example_log
from kezchat.keylog.wire import from_b64url, parse_head, parse_leaf
from kezchat.manifests import build_manifest, manifest_blake3, manifest_bytes, public_entry
from kezchat.manifests.sealing import b64url_decode, b64url_encode
from kezchat.protocol.auth import body_digest, sign_request, signed_text
from kezchat.protocol.natskeys import USER, NKey
from kezchat.protocol.registration import registration_payload, sign_registration
from kezchat.protocol.subjects import user_permissions
from kezchat.relay.items import item_json
from kezchat.sigchain import bodies
from kezchat.sigchain.events import event_hash, next_event
from kezchat.storage.interfaces import StoredMessage

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"

ALICE = KeyPair(bytes(range(32)))
BOB = KeyPair(bytes(range(32, 64)))
TS = "2026-05-25T03:00:00Z"
UNIX_TS = 1779678000
SALT = bytes(16)
MESSAGE = text_message("hello bob")

BLOCK = re.compile(
    r"^(?P<indent> *)```(?P<lang>\w+) kez-example=(?P<name>[a-z0-9-]+)\n"
    r"(?P<body>.*?)^(?P=indent)```$",
    re.M | re.S,
)


def pretty(value: object) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def _send_body() -> bytes:
    return canonical_json({"to": "bob", "envelope": {"v": 1}})


def _manifest_blob() -> bytes:
    entry = public_entry(
        id="notes", name="notes.txt", size=5, mime="text/plain",
        blake3="ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f",
        added_at=TS,
    )
    return manifest_bytes(build_manifest(ALICE, [entry], created_at=TS))


def _envelope() -> dict:
    return seal_envelope(ALICE, BOB.primary, MESSAGE, ts=TS, salt=SALT)


#: the server the worked request signatures name (alice is alice@kez.lat)
SERVER = "kez.lat"
#: the stream example's exp: a day after UNIX_TS, the longest allowed
STREAM_EXP = UNIX_TS + 86400


def _auth(
    method: str, path: str, fields: list[str], server: str | None = SERVER
) -> tuple[str, str]:
    return (
        signed_text(method, path, fields, UNIX_TS, server).decode(),
        sign_request(ALICE, method, path, fields, UNIX_TS, server),
    )


def _stream_exp_url() -> str:
    auth = _auth("GET", "/v1/inbox/alice/stream", [f"exp={STREAM_EXP}"])[1]
    return f"https://kez.lat/v1/inbox/alice/stream?auth={auth}&exp={STREAM_EXP}"


def _log() -> dict:
    return example_log([("alice", ALICE), ("bob", BOB)], "kez.lat", TS)


def _unsigned(head: dict) -> dict:
    return {k: v for k, v in head.items() if k != "sig"}


def _first_event() -> dict:
    body = bodies.add_endpoint("nats-1", "nats", url="wss://kez.lat/nats")
    return next_event(ALICE, [], "add_endpoint", body, created_at=TS)


#: example name → its exact text, from the blocks already read (for the
#: few examples that depend on an input shown in the document)
EXAMPLES: dict[str, Callable[[dict[str, str]], str]] = {
    "alice-seed": lambda _: ALICE.seed.hex(),
    "alice-primary": lambda _: ALICE.primary,
    "bob-primary": lambda _: BOB.primary,
    "alice-mnemonic": lambda _: seed_to_mnemonic(ALICE.seed),
    "jcs-input": lambda blocks: blocks["jcs-input"],
    "jcs-output": lambda blocks: canonical_json(json.loads(blocks["jcs-input"])).decode(),
    "alice-x25519-private": lambda _: ALICE.x25519_private().hex(),
    "bob-x25519-public": lambda _: BOB.x25519_public().hex(),
    "alice-nkey-raw": lambda _: (
        raw := bytes([nkeys.PREFIX_BYTE_USER]) + ALICE.public_key
    ).hex() + nkeys.crc16_checksum(raw).hex(),
    "alice-nkey": lambda _: primary_to_user_nkey(ALICE.primary),
    "alice-nkey-seed": lambda _: NKey(USER, ALICE.seed).seed_text,
    "registration-payload": lambda _: pretty(registration_payload(ALICE, "alice", "kez.lat", TS)),
    "registration-jcs": lambda _: canonical_json(
        registration_payload(ALICE, "alice", "kez.lat", TS)
    ).decode(),
    "registration-sig": lambda _: ALICE.sign_jcs(
        registration_payload(ALICE, "alice", "kez.lat", TS)
    ),
    "registration-body": lambda _: pretty(
        sign_registration(ALICE, registration_payload(ALICE, "alice", "kez.lat", TS))
    ),
    "auth-inbox-text": lambda _: _auth("GET", "/v1/inbox/alice", ["since=0"])[0],
    "auth-inbox-header": lambda _: _auth("GET", "/v1/inbox/alice", ["since=0"])[1],
    "auth-stream-text": lambda _: _auth("GET", "/v1/inbox/alice/stream", [])[0],
    "auth-stream-header": lambda _: _auth("GET", "/v1/inbox/alice/stream", [])[1],
    "auth-stream-exp-text": lambda _: _auth(
        "GET", "/v1/inbox/alice/stream", [f"exp={STREAM_EXP}"]
    )[0],
    "auth-stream-exp-url": lambda _: _stream_exp_url(),
    "auth-legacy-text": lambda _: _auth("GET", "/v1/inbox/alice", ["since=0"], None)[0],
    "auth-legacy-header": lambda _: _auth("GET", "/v1/inbox/alice", ["since=0"], None)[1],
    "auth-delete-text": lambda _: _auth("DELETE", "/v1/inbox/alice", ["upto=7"])[0],
    "auth-delete-header": lambda _: _auth("DELETE", "/v1/inbox/alice", ["upto=7"])[1],
    "auth-send-body": lambda _: _send_body().decode(),
    "auth-send-sha256": lambda _: body_digest(_send_body()),
    "auth-send-text": lambda _: _auth("POST", "/v1/messages", [body_digest(_send_body())])[0],
    "auth-send-header": lambda _: _auth("POST", "/v1/messages", [body_digest(_send_body())])[1],
    "auth-put-text": lambda _: _auth(
        "PUT", "/v1/manifests/alice", [body_digest(_manifest_blob())]
    )[0],
    "auth-put-header": lambda _: _auth(
        "PUT", "/v1/manifests/alice", [body_digest(_manifest_blob())]
    )[1],
    "envelope-plaintext": lambda _: canonical_json(MESSAGE).decode(),
    "envelope-shared": lambda _: derive(ALICE, BOB.primary, SALT).shared.hex(),
    "envelope-key": lambda _: derive(ALICE, BOB.primary, SALT).key.hex(),
    "envelope-nonce": lambda _: derive(ALICE, BOB.primary, SALT).nonce.hex(),
    "envelope-aad": lambda _: canonical_json(header_of(_envelope())).decode(),
    "envelope-ct": lambda _: _envelope()["ct"],
    "envelope-signed": lambda _: canonical_json(
        {k: v for k, v in _envelope().items() if k != "sig"}
    ).decode(),
    "envelope-sig": lambda _: _envelope()["sig"],
    "envelope": lambda _: pretty(_envelope()),
    "inline-file": lambda _: pretty(inline_file("hi.txt", "text/plain", b"hello")),
    "sigchain-event": lambda _: pretty(_first_event()),
    "sigchain-hash": lambda _: event_hash(_first_event()),
    "manifest-blob": lambda _: _manifest_blob().decode(),
    "manifest-blake3": lambda _: manifest_blake3(_manifest_blob()),
    "keylog-leaf-hash": lambda _: _log()["leaves"][0]["leaf_hash"],
    "keylog-head": lambda _: pretty(_log()["heads"][2]),
    "keylog-head-signed": lambda _: canonical_json(_unsigned(_log()["heads"][2])).decode(),
    "keylog-inclusion": lambda _: pretty({
        "index": 1, "size": 2, "leaf": _log()["leaves"][1]["leaf"],
        "path": next(p["path"] for p in _log()["inclusion"] if (p["index"], p["size"]) == (1, 2)),
    }),
    "s2s-text": lambda _: s2s.signed_text(
        "a.example", "b.example", "POST", "/v1/federation/messages", b"", UNIX_TS
    ).decode(),
    "s2s-header": lambda _: s2s.HEADER + ": " + s2s.sign(
        ALICE, "a.example", "b.example", "POST", "/v1/federation/messages", b"", UNIX_TS
    ),
    "undeliverable-item": lambda _: pretty(json.loads(item_json(StoredMessage(
        "alice@a.example", 9, "alice@a.example", ALICE.primary,
        json.dumps(_envelope(), separators=(",", ":")), UNIX_TS + 30 * 86400, "out",
        "bob@b.example", BOB.primary, undeliverable=True,
    )))),
    "keylog-consistency": lambda _: pretty({
        "path": next(p["path"] for p in _log()["consistency"] if (p["from"], p["to"]) == (1, 2)),
    }),
}


def read_blocks(text: str) -> dict[str, str]:
    blocks: dict[str, str] = {}
    for m in BLOCK.finditer(text):
        indent = m.group("indent")
        lines = m.group("body").splitlines()
        blocks[m.group("name")] = "\n".join(line.removeprefix(indent) for line in lines)
    return blocks


def rewrite(text: str) -> str:
    """
    C{text} with every example block holding its computed value.
    """
    blocks = read_blocks(text)

    def fill(m: re.Match[str]) -> str:
        indent, name = m.group("indent"), m.group("name")
        value = EXAMPLES[name](blocks)
        body = "".join(f"{indent}{line}\n" for line in value.splitlines())
        return f"{indent}```{m.group('lang')} kez-example={name}\n{body}{indent}```"

    return BLOCK.sub(fill, text)


class WorkedExampleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.text = DOC.read_text(encoding="utf-8")
        self.blocks = read_blocks(self.text)

    def test_every_example_is_recomputed(self) -> None:
        """
        Each tagged block holds exactly what the package computes, and
        every known example appears.
        """
        self.assertEqual(set(self.blocks), set(EXAMPLES))
        for name, compute in EXAMPLES.items():
            self.assertEqual(self.blocks[name], compute(self.blocks), name)

    def test_examples_hold_together(self) -> None:
        """
        The values shown fit each other the way a client uses them: the
        words give the seed back, bob opens alice's envelope, the
        registration body carries the JCS signature shown.
        """
        blocks = self.blocks
        self.assertEqual(mnemonic_to_seed(blocks["alice-mnemonic"]).hex(), blocks["alice-seed"])
        envelope = json.loads(self.blocks["envelope"])
        opened = open_envelope(envelope, BOB, expected_sender=ALICE.primary)
        self.assertEqual(opened.plaintext, json.loads(self.blocks["envelope-plaintext"]))
        self.assertEqual(b64url_decode(envelope["salt"]), SALT)
        self.assertEqual(b64url_encode(SALT), envelope["salt"])
        body = json.loads(self.blocks["registration-body"])
        self.assertEqual(body["signature"]["sig"], self.blocks["registration-sig"])
        self.assertEqual(canonical_json(body["payload"]).decode(), self.blocks["registration-jcs"])
        # the X25519 private key as the prose derives it: SHA-512(seed)[:32], clamped
        scalar = bytearray(hashlib.sha512(ALICE.seed).digest()[:32])
        scalar[0] &= 248
        scalar[31] = (scalar[31] & 127) | 64
        self.assertEqual(bytes(scalar).hex(), blocks["alice-x25519-private"])
        header = self.blocks["auth-send-header"]
        self.assertEqual(header.split(":")[0], str(UNIX_TS))
        self.assertEqual(
            blocks["auth-send-text"].split("\n"),
            ["POST", "@kez.lat", "/v1/messages", blocks["auth-send-sha256"], str(UNIX_TS)],
        )

    def test_keylog_examples_verify(self) -> None:
        """
        The key directory examples check out the way a client checks them:
        the head's signature, bob's inclusion under its root, consistency
        with the size-1 tree whose root is alice's leaf hash; alice's leaf
        is the registration body shown.
        """
        head = parse_head(json.loads(self.blocks["keylog-head"]))
        proof = json.loads(self.blocks["keylog-inclusion"])
        leaf = from_b64url(proof["leaf"])
        self.assertEqual(parse_leaf(leaf).fqhn, "bob@kez.lat")
        path = [bytes.fromhex(h) for h in proof["path"]]
        merkle.verify_inclusion(1, 2, merkle.leaf_hash(leaf), path, head.root)
        alice_leaf = canonical_json(json.loads(self.blocks["registration-body"]))
        self.assertEqual(merkle.leaf_hash(alice_leaf).hex(), self.blocks["keylog-leaf-hash"])
        shown = json.loads(self.blocks["keylog-consistency"])["path"]
        consistency = [bytes.fromhex(h) for h in shown]
        merkle.verify_consistency(1, 2, consistency, merkle.leaf_hash(alice_leaf), head.root)

    def test_agrees_with_the_interop_vectors(self) -> None:
        """
        The document's keys and envelope are the interop vectors' (same
        seeds, salt and time), so the two references cannot disagree.
        """
        vectors = json.loads((DOC.parent.parent / "interop" / "python-vectors.json").read_text())
        keys = {k["name"]: k for k in vectors["keys"]}
        self.assertEqual(keys["alice"]["mnemonic"], self.blocks["alice-mnemonic"])
        self.assertEqual(keys["alice"]["nkey"], self.blocks["alice-nkey"])
        self.assertEqual(keys["bob"]["primary"], self.blocks["bob-primary"])
        [vector] = [
            v
            for v in vectors["envelopes"]
            if (v["sender"], v["recipient"], v["plaintext"]) == ("alice", "bob", MESSAGE)
            and v["salt"] == b64url_encode(SALT)
        ]
        self.assertEqual(vector["envelope"], json.loads(self.blocks["envelope"]))

    def test_error_table(self) -> None:
        """
        The error table lists every code the servers use, with its status.
        """
        rows = dict(re.findall(r"^\| `([a-z_]+)` \| (\d{3}) \|", self.text, re.M))
        for code, status in STATUS_BY_CODE.items():
            self.assertEqual(rows.get(code), str(status), code)

    def test_nats_permissions(self) -> None:
        """
        The permission table says exactly what the callout grants.
        """
        me = ALICE.public_hex
        granted = user_permissions(me)
        table = self.text[self.text.index("**Permissions**") : self.text.index("**Inbox prefix.**")]
        shown = {
            kind: {
                s.replace("<me>", me)
                for row in re.findall(rf"^\| {kind} \| (.*?) \|", table, re.M)
                for s in re.findall(r"`([^`]+)`", row)
            }
            for kind in ("publish", "subscribe")
        }
        self.assertEqual(shown["publish"], set(granted["pub"]["allow"]))
        self.assertEqual(shown["subscribe"], set(granted["sub"]["allow"]))
        as_device = {
            s.replace("<me>", me).replace("<device>", "laptop")
            for row in re.findall(r"^\| publish, as a device \| (.*?) \|", table, re.M)
            for s in re.findall(r"`([^`]+)`", row)
        }
        laptop = user_permissions(me, "laptop")
        self.assertEqual(shown["publish"] | as_device, set(laptop["pub"]["allow"]))
        self.assertEqual(shown["subscribe"], set(laptop["sub"]["allow"]))

    @settings(max_examples=20, deadline=None)
    @given(st.binary(min_size=32, max_size=32))
    def test_nkey_recipe(self, seed: bytes) -> None:
        """
        The nkey and nkey-seed recipes in prose (prefix bytes, CRC-16
        XMODEM little-endian, base32 without padding) give the package's
        for any key.
        """
        import base64

        def crc16(data: bytes) -> bytes:
            crc = 0
            for byte in data:
                crc ^= byte << 8
                for _ in range(8):
                    crc = ((crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1) & 0xFFFF
            return crc.to_bytes(2, "little")

        def encode(raw: bytes) -> str:
            return base64.b32encode(raw + crc16(raw)).decode().rstrip("=")

        key = KeyPair(seed)
        self.assertEqual(encode(bytes([0xA0]) + key.public_key), primary_to_user_nkey(key.primary))
        self.assertEqual(encode(bytes([0x95, 0x00]) + seed), NKey(USER, seed).seed_text)


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        DOC.write_text(rewrite(DOC.read_text(encoding="utf-8")), encoding="utf-8")
    else:
        sys.exit("usage: python -m tests.test_protocol_doc --write")
