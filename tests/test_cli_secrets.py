"""
Where the CLI keeps the secret seed: in the OS keyring when there is a
usable one, else in a passphrase-encrypted file (scrypt + ChaCha20-
Poly1305, mode 0600). Either way, neither the seed nor the words are ever
written to the home in the clear.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import keyring
from keyring.backends import fail, null
from twisted.trial.unittest import SynchronousTestCase

from kezchat.cli.home import Home
from kezchat.cli.secrets import (
    SecretStore,
    WrongPassphrase,
    open_seed,
    seal_seed,
    usable_keyring,
)
from kezchat.identity.keys import KeyPair
from kezchat.identity.mnemonic import mnemonic_to_seed, seed_to_mnemonic
from kezchat.protocol.natskeys import USER, NKey
from tests.clisupport import CliTestCase


def secret_spellings(seed: bytes) -> list[bytes]:
    """
    Every way the seed or its words could plausibly be written out.
    """
    words = seed_to_mnemonic(seed).split()
    spellings = [
        seed,
        seed.hex().encode(),
        seed.hex().upper().encode(),
        base64.b64encode(seed),
        base64.b64encode(seed).rstrip(b"="),
        base64.urlsafe_b64encode(seed).rstrip(b"="),
        base64.b32encode(seed).rstrip(b"="),
        NKey(USER, seed).seed_text.encode(),
        json.dumps(list(seed)).encode(),
    ]
    for sep in (" ", "\n", ",", ", ", '", "'):
        spellings.append(sep.join(words).encode())
    # any three consecutive words, in any case
    for i in range(len(words) - 2):
        spellings.append(" ".join(words[i : i + 3]).encode())
    return spellings


def files_under(*roots: str) -> list[Path]:
    return [p for root in roots for p in Path(root).rglob("*") if p.is_file()]


class SeedNeverInClearTests(CliTestCase):
    async def test_homes_hold_no_seed_and_no_words(self) -> None:
        """
        After register, recover, add, send and listen, no file of either
        home contains the seed or its words in any usual spelling; the
        homes are 0700 and their files 0600.
        """
        await self.start_servers(keyring=False)
        alice, bob = await self.registered("alice", "bob")
        laptop = self.user("laptop")
        await laptop.ok("recover", "--yes", stdin=alice.mnemonic.encode())
        await bob.ok("send", "alice", "hello")
        await alice.ok("listen", "--json", "--count", "1", "--timeout", "20")
        await laptop.ok("listen", "--json", "--count", "1", "--timeout", "20")
        await laptop.ok("send", "bob", "from the laptop")

        files = files_under(alice.home, laptop.home, bob.home)
        self.assertGreater(len(files), 10)
        for user in (alice, bob):
            seed = mnemonic_to_seed(user.mnemonic)
            for path in files:
                data = path.read_bytes()
                for spelling in secret_spellings(seed):
                    self.assertNotIn(spelling.lower(), data.lower(), f"{path} leaks the secret")
        for home in (alice.home, laptop.home, bob.home):
            self.assertEqual(stat.S_IMODE(os.stat(home).st_mode), 0o700)
            for path in Path(home).iterdir():
                self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600, path)
            with open(os.path.join(home, "account.json")) as f:
                self.assertEqual(json.load(f)["secret"], "file")

    async def test_os_keyring_when_usable(self) -> None:
        """
        With a working keyring backend the seed goes there: no key file in
        the home, no passphrase asked, and the key still unlocks.
        """
        await self.start_servers(keyring=False)
        store = os.path.abspath(self.mktemp() + "-keyring.json")  # outside every home
        env = {
            "PYTHON_KEYRING_BACKEND": "tests.keyringbackend.FileKeyring",
            "KEZ_TEST_KEYRING_FILE": store,
            "KEZ_CHAT_PASSPHRASE": "",  # would be refused if it were needed
        }
        [bob] = await self.registered("bob")
        alice = self.user("alice", **env)
        registered = await alice.ok("register", "alice", "--yes", "--json")
        self.assertFalse(os.path.exists(os.path.join(alice.home, "secret.json")))
        self.assertEqual(alice.account["secret"], "keyring")
        with open(store) as f:
            entries = json.load(f)
        self.assertEqual(
            entries,
            {
                f"kez-chat\0{registered.json['primary']}": mnemonic_to_seed(
                    registered.json["mnemonic"]
                ).hex()
            },
        )
        await alice.ok("send", "bob", "keyring works")
        got = await bob.ok("listen", "--json", "--count", "1", "--timeout", "20")
        self.assertEqual(got.json["text"], "keyring works")

        # the keyring lost the entry: a clear way back, no traceback
        os.unlink(store)
        result = await alice.run("send", "bob", "again")
        self.assertEqual(result.code, 1, str(result))
        self.assertIn("kez-chat recover", result.err)
        self.assertNotIn("Traceback", result.err)


class KeyFileTests(SynchronousTestCase):
    def test_round_trip_and_wrong_passphrase(self) -> None:
        key = KeyPair.generate()
        document = seal_seed(key.seed, key.primary, "pass phrase")
        self.assertEqual(open_seed(document, "pass phrase"), key.seed)
        self.assertRaises(WrongPassphrase, open_seed, document, "pass phrasE")
        self.assertEqual(document["kdf"]["name"], "scrypt")
        self.assertGreaterEqual(document["kdf"]["n"], 2**15)

    def test_tampering_is_detected(self) -> None:
        key, other = KeyPair.generate(), KeyPair.generate()
        document = seal_seed(key.seed, key.primary, "pw")
        # the file moved to another account: the primary is authenticated
        self.assertRaises(WrongPassphrase, open_seed, {**document, "primary": other.primary}, "pw")
        ct = bytearray(base64.b64decode(document["ct"]))
        ct[0] ^= 1
        flipped = {**document, "ct": base64.b64encode(bytes(ct)).decode()}
        self.assertRaises(WrongPassphrase, open_seed, flipped, "pw")
        self.assertRaises(ValueError, open_seed, {"version": 1}, "pw")
        self.assertRaises(
            ValueError, open_seed, {**document, "kdf": {**document["kdf"], "n": 2**30}}, "pw"
        )

    def test_store_writes_an_encrypted_private_file(self) -> None:
        home = Home(Path(self.mktemp()))
        typed = "typed passphrase"
        store = SecretStore(home, ask=lambda confirm: typed, keyring_backend=lambda: None)
        key = KeyPair.generate()
        self.assertEqual(store.save(key), "file")
        self.assertEqual(stat.S_IMODE(home.secret_path.stat().st_mode), 0o600)
        again = SecretStore(home, ask=lambda confirm: typed, keyring_backend=lambda: None)
        self.assertEqual(again.load(key.primary, "file"), key)

    def test_fail_and_null_keyrings_are_not_usable(self) -> None:
        previous = keyring.get_keyring()
        self.addCleanup(keyring.set_keyring, previous)
        for backend in (fail.Keyring(), null.Keyring()):
            keyring.set_keyring(backend)
            self.assertIsNone(usable_keyring())
