"""
Ed25519 primary keys and the signatures made with them.

A primary is written C{ed25519:<64 lowercase hex>}; a signature is 128
lowercase hex characters of raw Ed25519 over the signed bytes (for JSON,
over its JCS form: alg C{ed25519-sha512-jcs}).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, TypeGuard

from nacl.bindings import (
    crypto_sign_ed25519_pk_to_curve25519,
)
from nacl.exceptions import BadSignatureError
from nacl.exceptions import ValueError as NaclValueError
from nacl.signing import SigningKey, VerifyKey

from kezchat.identity.jcs import canonical_json

PRIMARY_PREFIX = "ed25519:"
SIGNATURE_ALG = "ed25519-sha512-jcs"

_PRIMARY_RE = re.compile(r"ed25519:[0-9a-f]{64}")
_KEY_HEX_RE = re.compile(r"[0-9a-f]{64}")
_SIG_RE = re.compile(r"[0-9a-f]{128}")


def is_key_hex(value: object) -> TypeGuard[str]:
    """
    Whether C{value} is a public key (or hash) as 64 lowercase hex digits,
    the one spelling every part of KEZ accepts.
    """
    return isinstance(value, str) and _KEY_HEX_RE.fullmatch(value) is not None


def is_signature_hex(value: object) -> TypeGuard[str]:
    """
    Whether C{value} is an ed25519 signature as 128 lowercase hex digits.
    """
    return isinstance(value, str) and _SIG_RE.fullmatch(value) is not None


class InvalidKey(ValueError):
    """
    A string is not a well-formed C{ed25519:<hex>} primary.
    """


def parse_primary(text: object) -> bytes:
    """
    Return the 32 raw public-key bytes of an C{ed25519:<hex>} primary.

    Only the canonical lowercase form is accepted, so that one key has
    exactly one spelling in storage and in signed payloads.
    """
    if not isinstance(text, str) or not _PRIMARY_RE.fullmatch(text):
        raise InvalidKey("expected ed25519:<64 lowercase hex>")
    return bytes.fromhex(text[len(PRIMARY_PREFIX) :])


def format_primary(public_key: bytes) -> str:
    """
    Spell 32 raw public-key bytes as a primary.
    """
    if len(public_key) != 32:
        raise InvalidKey("an ed25519 public key is 32 bytes")
    return PRIMARY_PREFIX + public_key.hex()


def verify_bytes(primary: str, message: bytes, signature_hex: object) -> bool:
    """
    Check a hex Ed25519 signature over C{message} by C{primary}.

    Returns C{False} for anything malformed rather than raising: to a caller
    deciding whether to trust a request, a garbled signature and a wrong one
    are the same answer.
    """
    if not is_signature_hex(signature_hex):
        return False
    try:
        key = VerifyKey(parse_primary(primary))
        key.verify(message, bytes.fromhex(signature_hex))
    except (InvalidKey, BadSignatureError, NaclValueError):
        return False
    return True


def verify_jcs(primary: str, value: Any, signature_hex: object) -> bool:
    """
    Check a signature over the JCS bytes of C{value}.
    """
    try:
        message = canonical_json(value)
    except ValueError:
        return False
    return verify_bytes(primary, message, signature_hex)


@dataclass(frozen=True)
class KeyPair:
    """
    An Ed25519 key pair held by a client: the 32-byte seed is the secret
    (the 24 words of the mnemonic encode exactly it).
    """

    seed: bytes

    def __post_init__(self) -> None:
        if len(self.seed) != 32:
            raise InvalidKey("an ed25519 seed is 32 bytes")

    @classmethod
    def generate(cls) -> KeyPair:
        return cls(bytes(SigningKey.generate()))

    @property
    def _signing_key(self) -> SigningKey:
        return SigningKey(self.seed)

    @property
    def public_key(self) -> bytes:
        return bytes(self._signing_key.verify_key)

    @property
    def primary(self) -> str:
        return format_primary(self.public_key)

    @property
    def public_hex(self) -> str:
        return self.public_key.hex()

    def sign(self, message: bytes) -> str:
        return sign_bytes(self.seed, message)

    def sign_jcs(self, value: Any) -> str:
        return sign_jcs(self.seed, value)

    def x25519_private(self) -> bytes:
        """
        The X25519 private key derived from this Ed25519 key (SPEC §2).
        """
        return bytes(self._signing_key.to_curve25519_private_key())

    def x25519_public(self) -> bytes:
        return x25519_public_from_primary(self.primary)


def sign_bytes(seed: bytes, message: bytes) -> str:
    """
    Sign C{message} with the key of C{seed}; returns 128 hex characters.
    """
    return SigningKey(seed).sign(message).signature.hex()


def sign_jcs(seed: bytes, value: Any) -> str:
    """
    Sign the JCS bytes of C{value}.
    """
    return sign_bytes(seed, canonical_json(value))


def x25519_public_from_primary(primary: str) -> bytes:
    """
    The X25519 public key of an Ed25519 primary (Montgomery form).
    """
    return crypto_sign_ed25519_pk_to_curve25519(parse_primary(primary))
