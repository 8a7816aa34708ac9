"""
The interop vectors: the Python implementation still writes exactly the
committed C{interop/python-vectors.json}, and verifies every entry of the
web app's C{interop/web-vectors.json} (see C{interop/README.md}).
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from kezchat.e2e import EnvelopeError, open_envelope, open_own_envelope, seal_envelope
from kezchat.e2e.vectors import all_vectors, render, seal_with_ephemeral
from kezchat.identity.jcs import canonical_json
from kezchat.identity.keys import KeyPair
from kezchat.identity.mnemonic import mnemonic_to_seed, seed_to_mnemonic
from kezchat.identity.nkeys import primary_to_user_nkey
from kezchat.keylog.merkle import (
    MemoryTree,
    ProofError,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from kezchat.keylog.wire import b64url, parse_head, parse_leaf, sign_head
from kezchat.manifests.blob import manifest_blake3, verify_manifest
from kezchat.manifests.sealing import b64url_decode, open_content_key
from kezchat.protocol.auth import body_digest, sign_request, signed_text
from kezchat.protocol.registration import signed_registration
from kezchat.sigchain.chain import verify_chain
from kezchat.sigchain.events import event_hash
from kezchat.testing.requirements import missing

INTEROP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "interop")


def load(name: str) -> dict[str, Any]:
    with open(os.path.join(INTEROP, name), encoding="utf-8") as f:
        return json.load(f)


class VectorChecks:
    """
    Recompute every entry of a vectors file with the Python implementation.
    """

    vectors: dict[str, Any]

    def key(self, name: str) -> KeyPair:
        entry = next(k for k in self.vectors["keys"] if k["name"] == name)
        return KeyPair(bytes.fromhex(entry["seed_hex"]))

    def test_keys(self) -> None:
        for entry in self.vectors["keys"]:
            key = KeyPair(bytes.fromhex(entry["seed_hex"]))
            self.assertEqual(key.primary, entry["primary"])
            self.assertEqual(seed_to_mnemonic(key.seed), entry["mnemonic"])
            self.assertEqual(mnemonic_to_seed(entry["mnemonic"]), key.seed)
            self.assertEqual(primary_to_user_nkey(key.primary), entry["nkey"])
            self.assertEqual(key.x25519_public().hex(), entry["x25519_public_hex"])
            self.assertEqual(key.x25519_private().hex(), entry["x25519_private_hex"])

    def test_jcs(self) -> None:
        for entry in self.vectors["jcs"]:
            value = json.loads(entry["input_json"])
            self.assertEqual(canonical_json(value).decode("utf-8"), entry["jcs"])

    def test_registrations(self) -> None:
        for entry in self.vectors["registrations"]:
            key = self.key(entry["key"])
            self.assertEqual(canonical_json(entry["payload"]).decode(), entry["payload_jcs"])
            self.assertEqual(entry["body"]["payload"], entry["payload"])
            self.assertEqual(entry["body"]["signature"]["sig"], key.sign_jcs(entry["payload"]))

    def test_auth(self) -> None:
        # "auth": the older form naming no server; "auth_server": the form
        # naming the server (a vectors file written before it has none)
        for entry in self.vectors["auth"] + self.vectors.get("auth_server", []):
            key = self.key(entry["key"])
            server = entry.get("server")
            if entry["body"] is not None:
                self.assertEqual(body_digest(entry["body"].encode()), entry["body_sha256"])
            args = (entry["method"], entry["path"], entry["fields"], entry["ts"], server)
            self.assertEqual(signed_text(*args).decode(), entry["signed_text"])
            self.assertEqual(sign_request(key, *args), entry["header"])

    def test_auth_names_the_server(self) -> None:
        entries = self.vectors.get("auth_server")
        if entries is None:
            raise missing("this vectors file has no server-naming auth entries")
        for entry in entries:
            self.assertEqual(entry["signed_text"].split("\n")[:2], [entry["method"], "@kez.lat"])

    def test_envelopes(self) -> None:
        for entry in self.vectors["envelopes"]:
            sender, recipient = self.key(entry["sender"]), self.key(entry["recipient"])
            self.assertEqual(canonical_json(entry["plaintext"]).decode(), entry["plaintext_jcs"])
            sealed = seal_envelope(
                sender,
                recipient.primary,
                entry["plaintext"],
                ts=entry["ts"],
                salt=b64url_decode(entry["salt"]),
            )
            self.assertEqual(sealed, entry["envelope"])
            opened = open_envelope(entry["envelope"], recipient, expected_sender=sender.primary)
            self.assertEqual(opened.plaintext, entry["plaintext"])
            # the sender's copy: its own device opens what it sent
            own = open_own_envelope(
                entry["envelope"], sender, expected_recipient=recipient.primary
            )
            self.assertEqual(own.plaintext, entry["plaintext"])

    def test_bad_envelopes(self) -> None:
        for entry in self.vectors["bad_envelopes"]:
            recipient = self.key(entry["recipient"])
            error = self.assertRaises(EnvelopeError, open_envelope, entry["envelope"], recipient)
            self.assertEqual(error.code, entry["error"], entry["name"])

    def test_sigchains(self) -> None:
        for entry in self.vectors["sigchains"]:
            key = self.key(entry["key"])
            verify_chain(key.primary, entry["events"])
            for event, jcs, digest in zip(
                entry["events"], entry["event_jcs"], entry["hashes"], strict=True
            ):
                unsigned = {k: v for k, v in event.items() if k != "sig"}
                self.assertEqual(key.sign_jcs(unsigned), event["sig"])
                self.assertEqual(canonical_json(event).decode(), jcs)
                self.assertEqual(event_hash(event), digest)

    def test_sealed_keys(self) -> None:
        for entry in self.vectors["sealed_keys"]:
            recipient = self.key(entry["recipient"])
            content_key = bytes.fromhex(entry["content_key_hex"])
            self.assertEqual(open_content_key(entry["sealed"], recipient), content_key)
            again = seal_with_ephemeral(
                content_key, recipient.primary, bytes.fromhex(entry["ephemeral_secret_hex"])
            )
            self.assertEqual(again, b64url_decode(entry["sealed"]))

    def test_manifests(self) -> None:
        for entry in self.vectors["manifests"]:
            owner = self.key(entry["owner"])
            blob = entry["blob"].encode("utf-8")
            self.assertEqual(canonical_json(entry["manifest"]), blob)
            self.assertEqual(manifest_blake3(blob), entry["blake3"])
            verify_manifest(blob, owner=owner.primary, expected_blake3=entry["blake3"])


    def test_keylog(self) -> None:
        """
        The key directory's leaves are the registrations' JCS bytes; every
        head's signature is the log key's (Ed25519 is deterministic, so
        re-signing gives the same bytes); every proof is the one this side
        builds, verifies, and stops verifying when tampered with.
        """
        log = self.vectors["keylog"]
        seed = bytes.fromhex(log["log_seed_hex"])
        tree = MemoryTree()
        for entry in log["leaves"]:
            key = KeyPair(bytes.fromhex(entry["seed_hex"]))
            leaf = canonical_json(signed_registration(key, entry["handle"], log["server"],
                                                      log["ts"]))
            self.assertEqual(b64url(leaf), entry["leaf"])
            self.assertEqual(leaf_hash(leaf).hex(), entry["leaf_hash"])
            self.assertEqual(parse_leaf(leaf).fqhn, f"{entry['handle']}@{log['server']}")
            tree.append(leaf)
        for size, head in enumerate(log["heads"]):
            self.assertEqual(parse_head(head).json(), head)
            self.assertEqual(sign_head(seed, size, tree.root(size), log["ts"]).json(), head)
        roots = [bytes.fromhex(h["root"]) for h in log["heads"]]
        for p in log["inclusion"]:
            path = [bytes.fromhex(h) for h in p["path"]]
            self.assertEqual(tree.inclusion(p["index"], p["size"]), path)
            lh = bytes.fromhex(log["leaves"][p["index"]]["leaf_hash"])
            verify_inclusion(p["index"], p["size"], lh, path, roots[p["size"]])
            if path:
                bad = [bytes([path[0][0] ^ 1]) + path[0][1:], *path[1:]]
                self.assertRaises(ProofError, verify_inclusion, p["index"], p["size"], lh, bad,
                                  roots[p["size"]])
        for p in log["consistency"]:
            path = [bytes.fromhex(h) for h in p["path"]]
            self.assertEqual(tree.consistency(p["from"], p["to"]), path)
            verify_consistency(p["from"], p["to"], path, roots[p["from"]], roots[p["to"]])
            if p["from"] < p["to"]:
                self.assertRaises(ProofError, verify_consistency, p["from"], p["to"], path,
                                  roots[p["to"]], roots[p["to"]])


class PythonVectorsTests(VectorChecks, SynchronousTestCase):
    def setUp(self) -> None:
        self.vectors = load("python-vectors.json")

    def test_generator_writes_the_committed_file(self) -> None:
        with open(os.path.join(INTEROP, "python-vectors.json"), encoding="utf-8") as f:
            committed = f.read()
        self.assertEqual(render(all_vectors()), committed)


class WebVectorsTests(VectorChecks, SynchronousTestCase):
    """
    What the TypeScript implementation wrote, checked by the Python one.
    """

    def setUp(self) -> None:
        path = os.path.join(INTEROP, "web-vectors.json")
        if not os.path.exists(path):
            raise missing("interop/web-vectors.json is written by the web app (npm run vectors)")
        self.vectors = load("web-vectors.json")
