"""
Where the secret seed lives: the OS keyring when one is usable, otherwise
a file in the home encrypted under a passphrase.

The file is scrypt (memory-hard, parameters stored beside the salt so they
can be raised later) feeding ChaCha20-Poly1305, with the primary key as
associated data so a file cannot be swapped between accounts unnoticed.
Neither the seed nor the 24 words are ever written anywhere in the clear.
"""

from __future__ import annotations

import base64
import getpass
import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kezchat.cli.errors import CliError
from kezchat.cli.home import Home, read_json, write_atomic

if TYPE_CHECKING:
    from kezchat.identity.keys import KeyPair

# cryptography, nacl and keyring are imported where they are used: a
# command that never unlocks the key (whoami, contacts) starts without them

KEYRING_SERVICE = "kez-chat"
PASSPHRASE_ENV = "KEZ_CHAT_PASSPHRASE"
#: set to C{off} to keep the seed in the encrypted file even with a keyring
KEYRING_ENV = "KEZ_CHAT_KEYRING"

#: scrypt cost: 2**17 x r=8 is 128 MiB and about half a second per unlock
#: (the interactive-login figure current guidance gives for scrypt); files
#: written with other parameters keep theirs, which are stored beside the salt
SCRYPT_N = 2**17
SCRYPT_R = 8
SCRYPT_P = 1
FILE_VERSION = 1

#: the shortest passphrase accepted when one is chosen (as in the web app)
MIN_PASSPHRASE = 8

KIND_KEYRING = "keyring"
KIND_FILE = "file"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise ValueError("not base64 text")
    return base64.b64decode(text, validate=True)


def derive_key(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))


def seal_seed(seed: bytes, primary: str, passphrase: str) -> dict[str, Any]:
    """
    The encrypted-file document for C{seed}.
    """
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    salt, nonce = os.urandom(16), os.urandom(12)
    key = derive_key(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    ct = ChaCha20Poly1305(key).encrypt(nonce, seed, primary.encode("ascii"))
    return {
        "version": FILE_VERSION,
        "primary": primary,
        "kdf": {"name": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P, "salt": _b64(salt)},
        "aead": "chacha20-poly1305",
        "nonce": _b64(nonce),
        "ct": _b64(ct),
    }


class WrongPassphrase(Exception):
    pass


def open_seed(document: Any, passphrase: str) -> bytes:
    """
    The seed in an encrypted-file document.

    @raise WrongPassphrase: the passphrase does not open it.
    @raise ValueError: the document is not one we wrote.
    """
    try:
        kdf = document["kdf"]
        if document["version"] != FILE_VERSION or kdf["name"] != "scrypt":
            raise ValueError("unknown secret file version")
        n, r, p = int(kdf["n"]), int(kdf["r"]), int(kdf["p"])
        if not (2**10 <= n <= 2**22 and 1 <= r <= 32 and 1 <= p <= 16):
            raise ValueError("scrypt parameters out of range")
        salt, nonce, ct = _unb64(kdf["salt"]), _unb64(document["nonce"]), _unb64(document["ct"])
        primary = document["primary"].encode("ascii")
    except (KeyError, TypeError, AttributeError, UnicodeEncodeError) as e:
        raise ValueError(f"malformed secret file: {e}") from None
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    key = derive_key(passphrase, salt, n, r, p)
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, ct, primary)
    except InvalidTag:
        raise WrongPassphrase() from None


def usable_keyring() -> Any | None:
    """
    The OS keyring backend, or C{None} when there is no real one (keyring's
    fail and null backends, an empty chain) or C{KEZ_CHAT_KEYRING=off}.
    """
    if os.environ.get(KEYRING_ENV, "").lower() in ("off", "0", "no", "false"):
        return None
    try:
        import keyring
        from keyring.backends import chainer, fail, null
    except ImportError:
        return None
    try:
        backend = keyring.get_keyring()
    except Exception:
        return None
    if isinstance(backend, fail.Keyring | null.Keyring):
        return None
    if isinstance(backend, chainer.ChainerBackend) and not backend.backends:
        return None
    return backend


def passphrase_from_terminal(confirm: bool) -> str | None:
    """
    Ask on the terminal, or C{None} when there is none to ask on.
    """
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        return None
    try:
        first = getpass.getpass("Passphrase for the key file: ")
        if confirm:
            again = getpass.getpass("The same passphrase again: ")
            if again != first:
                raise CliError("the two passphrases differ: run the command again")
    except (EOFError, KeyboardInterrupt):
        raise CliError("no passphrase given") from None
    return first


class SecretStore:
    """
    Saves and loads the seed of the account in one home.

    @param ask: asks a person for the passphrase (C{confirm} when choosing
        one), returning C{None} when nobody can be asked.
    """

    def __init__(
        self,
        home: Home,
        ask: Callable[[bool], str | None] = passphrase_from_terminal,
        keyring_backend: Callable[[], Any | None] = usable_keyring,
    ) -> None:
        self.home = home
        self._ask = ask
        self._keyring_backend = keyring_backend
        self._passphrase: str | None = None
        #: why the keyring refused the last L{save}, if it did
        self.keyring_error: str | None = None

    def passphrase(self, confirm: bool) -> str:
        """
        The passphrase from C{KEZ_CHAT_PASSPHRASE}, else asked; remembered
        for this invocation.
        """
        if self._passphrase is None:
            value = os.environ.get(PASSPHRASE_ENV)
            if value is None:
                value = self._ask(confirm)
            if value is None:
                raise CliError(
                    "no OS keyring here, so the key is kept in a file encrypted under a "
                    f"passphrase: set {PASSPHRASE_ENV} or run in a terminal to be asked"
                )
            if not value:
                raise CliError(f"the passphrase is empty: set {PASSPHRASE_ENV} to a real one")
            if confirm and len(value) < MIN_PASSPHRASE:
                # only when choosing one: a file made under a shorter one
                # still opens
                raise CliError(
                    f"the passphrase is shorter than {MIN_PASSPHRASE} characters: choose a"
                    " longer one"
                )
            self._passphrase = value
        return self._passphrase

    def prepare(self) -> str:
        """
        Decide where a new seed will go, gathering the passphrase now if a
        file is needed (before anything irreversible happens).

        @return: L{KIND_KEYRING} or L{KIND_FILE}.
        """
        if self._keyring_backend() is not None:
            return KIND_KEYRING
        self.passphrase(confirm=True)
        return KIND_FILE

    def save(self, keypair: KeyPair) -> str:
        """
        Store the seed (blocking: scrypt; call off the reactor thread).

        @return: the kind of storage used.
        """
        backend = self._keyring_backend()
        if backend is not None:
            try:
                backend.set_password(KEYRING_SERVICE, keypair.primary, keypair.seed.hex())
                return KIND_KEYRING
            except Exception as e:
                # a keyring that refuses (locked, no D-Bus): fall back to the file
                self.keyring_error = f"{type(e).__name__}: {e}"
        self.home.ensure()
        document = seal_seed(keypair.seed, keypair.primary, self.passphrase(confirm=True))
        write_atomic(self.home.secret_path, json.dumps(document, indent=2).encode() + b"\n")
        return KIND_FILE

    def load(self, primary: str, kind: str) -> KeyPair:
        """
        The key pair of C{primary} (blocking: scrypt; call off the reactor).
        """
        keypair = self._load_keyring(primary) if kind == KIND_KEYRING else self._load_file()
        if keypair.primary != primary:
            raise CliError(
                f"the stored key is not {primary}: the home {self.home.root} is inconsistent;"
                " run `kez-chat recover` with your 24 words"
            )
        return keypair

    def _load_keyring(self, primary: str) -> KeyPair:
        from kezchat.identity.keys import KeyPair

        backend = self._keyring_backend()
        value = None
        if backend is not None:
            try:
                value = backend.get_password(KEYRING_SERVICE, primary)
            except Exception as e:
                raise CliError(
                    f"the OS keyring did not answer ({type(e).__name__}): unlock it and try again"
                ) from None
        if not value:
            raise CliError(
                "the key is no longer in the OS keyring: run `kez-chat recover` with your 24 words"
            )
        try:
            return KeyPair(bytes.fromhex(value))
        except ValueError:
            raise CliError("the keyring entry is damaged: run `kez-chat recover`") from None

    def _load_file(self) -> KeyPair:
        from kezchat.identity.keys import KeyPair

        document = read_json(self.home.secret_path)
        if document is None:
            raise CliError(
                f"no key file in {self.home.root}: run `kez-chat recover` with your 24 words"
            )
        try:
            seed = open_seed(document, self.passphrase(confirm=False))
        except WrongPassphrase:
            raise CliError(
                f"wrong passphrase for {self.home.secret_path}: check {PASSPHRASE_ENV}"
                " (forgotten? `kez-chat recover` with your 24 words sets a new one)"
            ) from None
        except ValueError as e:
            raise CliError(f"{self.home.secret_path}: {e}") from None
        return KeyPair(seed)
