"""
NATS nkeys held by the chat-server: seeds, their public keys, signatures.

Two keys matter to an operator (SPEC §4, C{kezchat-admin nats-keys}): the
I{issuer} account key, whose public part nats-server trusts to sign
authorization responses, and the I{callout} user key, with which the
chat-server itself logs in to NATS. Both are stored as standard nkey seed
text (C{SA…}, C{SU…}), the format every NATS tool reads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import nkeys
from nacl.signing import SigningKey

from kezchat.errors import NatsSetupError
from kezchat.identity.nkeys import decode_public, encode_public

ACCOUNT = nkeys.PREFIX_BYTE_ACCOUNT
USER = nkeys.PREFIX_BYTE_USER
SERVER = nkeys.PREFIX_BYTE_SERVER

_ROLE_NAMES = {ACCOUNT: "account", USER: "user", SERVER: "server"}


class SeedError(NatsSetupError, ValueError):
    """
    Text is not an nkey seed, or not one of the expected role.
    """


@dataclass(frozen=True, repr=False)
class NKey:
    """
    An nkey pair: a role prefix (account, user, ...) and a 32-byte seed.

    C{repr} is deliberately bland so that a seed never lands in a log line.
    """

    prefix: int
    seed: bytes

    def __repr__(self) -> str:
        return f"<NKey {self.public}>"

    @classmethod
    def generate(cls, prefix: int) -> NKey:
        return cls(prefix, bytes(SigningKey.generate()))

    @classmethod
    def from_seed_text(cls, text: str | bytes, prefix: int | None = None) -> NKey:
        """
        Parse C{S…} seed text, optionally insisting on a role.
        """
        raw = text.encode("ascii") if isinstance(text, str) else bytes(text)
        try:
            role, seed = nkeys.decode_seed(raw.strip())
        except (nkeys.NkeysError, ValueError, TypeError) as e:
            raise SeedError("not an nkey seed") from e
        if prefix is not None and role != prefix:
            raise SeedError(
                f"expected a seed of role {_ROLE_NAMES.get(prefix, prefix)},"
                f" got one of role {_ROLE_NAMES.get(role, role)}"
            )
        return cls(role, bytes(seed))

    @property
    def seed_text(self) -> str:
        # nkeys is untyped; encode_seed gives the seed's bytes
        encoded: bytes = nkeys.encode_seed(self.seed, self.prefix)
        return encoded.decode("ascii")

    @cached_property
    def _signing_key(self) -> SigningKey:
        return SigningKey(self.seed)

    @cached_property
    def public(self) -> str:
        return encode_public(self.prefix, bytes(self._signing_key.verify_key))

    def sign(self, message: bytes) -> bytes:
        return self._signing_key.sign(message).signature


@lru_cache(maxsize=16384)
def public_key_bytes(prefix: int, public: str) -> bytes:
    """
    The raw Ed25519 key of an encoded public nkey of role C{prefix}.

    Cached: the callout decodes the same few keys (its issuer, the
    server's, returning clients') over and over, and base32 plus the
    CRC-16 in pure Python cost more than the signature checks around them.

    @raise kezchat.identity.InvalidKey: on a malformed key or wrong role
        (failures are not cached).
    """
    return decode_public(prefix, public)


def read_seed_file(path: str | os.PathLike[str], prefix: int) -> NKey:
    """
    Load a seed file written by C{kezchat-admin nats-keys} (or C{nsc}).
    """
    try:
        text = Path(path).read_text("ascii")
    except (OSError, UnicodeDecodeError) as e:
        raise SeedError(f"cannot read seed file {os.fspath(path)!r}: {e}") from e
    try:
        return NKey.from_seed_text(text, prefix)
    except SeedError as e:
        raise SeedError(f"{os.fspath(path)}: {e}") from None


def write_seed_file(path: str | os.PathLike[str], key: NKey) -> None:
    """
    Write C{key}'s seed to a new file readable by its owner only.

    The file is created with mode 0600 from the start (never widened and
    narrowed afterwards), and an existing file is never overwritten: losing
    an issuer seed means re-keying every nats-server that trusts it.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(key.seed_text + "\n")
