"""
Content keys sealed to one recipient each (libsodium sealed boxes).

A private manifest entry's file is encrypted under a random content key;
the key is sealed to every allowed reader's X25519 public key, derived
from their Ed25519 primary (SPEC §2), so the owner needs nothing from a
reader but the primary the registry already publishes.  Sealed boxes are
anonymous: only the manifest's signature says who wrapped them.
"""

from __future__ import annotations

import base64
import binascii
import re

from nacl.bindings import crypto_box_SEALBYTES
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.utils import random

from kezchat.identity.keys import KeyPair, x25519_public_from_primary

CONTENT_KEY_BYTES = 32
# A sealed box adds an ephemeral public key (32) and a MAC (16).
SEALED_KEY_BYTES = CONTENT_KEY_BYTES + crypto_box_SEALBYTES

_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*")


class UnsealError(ValueError):
    """
    A sealed key is not for this reader, or was damaged.
    """


def b64url_encode(data: bytes) -> str:
    """
    Unpadded base64url, the spelling of binary values in KEZ JSON.
    """
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """
    Decode unpadded base64url, accepting only the canonical spelling (so
    one value has one string, and a changed character is a changed value).

    @raise ValueError: otherwise.
    """
    if not _B64URL_RE.fullmatch(text):
        raise ValueError("not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as e:
        raise ValueError("not unpadded base64url") from e
    if b64url_encode(data) != text:
        raise ValueError("not canonical base64url")
    return data


def new_content_key() -> bytes:
    return random(CONTENT_KEY_BYTES)


def seal_content_key(content_key: bytes, recipient_primary: str) -> str:
    """
    Seal C{content_key} so only the holder of C{recipient_primary} can
    open it; base64url.
    """
    if len(content_key) != CONTENT_KEY_BYTES:
        raise ValueError(f"a content key is {CONTENT_KEY_BYTES} bytes")
    box = SealedBox(PublicKey(x25519_public_from_primary(recipient_primary)))
    return b64url_encode(box.encrypt(content_key))


def open_content_key(sealed: str, keypair: KeyPair) -> bytes:
    """
    Open a key sealed to C{keypair}.

    @raise UnsealError: if it was sealed to someone else or damaged.
    """
    try:
        box = SealedBox(PrivateKey(keypair.x25519_private()))
        content_key = box.decrypt(b64url_decode(sealed))
    except (CryptoError, ValueError) as e:
        raise UnsealError("cannot open this sealed key") from e
    if len(content_key) != CONTENT_KEY_BYTES:
        raise UnsealError("the sealed value is not a content key")
    return content_key
