"""
The end-to-end envelope: sealing a plaintext for one recipient and opening
it again.

An envelope is::

    {"v": 1, "from": "ed25519:<hex>", "to": "ed25519:<hex>", "ts": "<RFC 3339>",
     "salt": "<base64url, 16 bytes>", "ct": "<base64url>", "sig": "<128 hex>"}

The key agreement is static-static X25519 between the two primaries (each
converted to Montgomery form), stretched with HKDF-SHA256 over a fresh
salt into a ChaCha20-Poly1305 key and nonce; the header fields are the
AEAD's associated data, so a ciphertext cannot be moved under another
header; and the sender signs the whole envelope, so the recipient knows
who wrote it without trusting the server.  The plaintext is a JSON object
serialised as JCS, which makes sealing deterministic for a given salt and
time: that is what lets the Python and TypeScript clients prove byte
compatibility with shared test vectors.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl.bindings import crypto_scalarmult
from nacl.exceptions import CryptoError

from kezchat.identity.jcs import canonical_json
from kezchat.identity.keys import (
    InvalidKey,
    KeyPair,
    parse_primary,
    verify_jcs,
    x25519_public_from_primary,
)
from kezchat.manifests.sealing import b64url_decode, b64url_encode
from kezchat.strictjson import JSONError, loads
from kezchat.timeutil import format_rfc3339, parse_rfc3339

ENVELOPE_VERSION = 1
HKDF_INFO = b"kez-chat-msg-v1"
SALT_BYTES = 16
KEY_BYTES = 32
NONCE_BYTES = 12

_FIELDS = frozenset({"v", "from", "to", "ts", "salt", "ct", "sig"})

#: L{EnvelopeError} codes, from "not an envelope at all" to "not from whom
#: we expected"; a client shows each as a warning, never as a message.
MALFORMED = "malformed"
NOT_FOR_US = "not_for_us"
BAD_SIGNATURE = "bad_signature"
SENDER_MISMATCH = "sender_mismatch"
DECRYPT_FAILED = "decrypt_failed"
BAD_PLAINTEXT = "bad_plaintext"
#: opening one's own sent envelope: it is addressed to someone else than
#: the conversation it was filed under
RECIPIENT_MISMATCH = "recipient_mismatch"


class EnvelopeError(ValueError):
    """
    An envelope that must not be shown as a message.

    @ivar code: one of C{malformed}, C{not_for_us}, C{bad_signature},
        C{sender_mismatch}, C{decrypt_failed}, C{bad_plaintext}.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class OpenedEnvelope:
    """
    A verified, decrypted envelope.
    """

    sender: str
    recipient: str
    ts: str
    plaintext: dict[str, Any]


@dataclass(frozen=True)
class _Secrets:
    shared: bytes
    key: bytes
    nonce: bytes


def header_of(envelope: Mapping[str, Any]) -> dict[str, Any]:
    """
    The fields bound to the ciphertext as associated data.
    """
    return {name: envelope[name] for name in ("v", "from", "to", "ts")}


def derive(own: KeyPair, peer_primary: str, salt: bytes) -> _Secrets:
    """
    The shared secret with C{peer_primary} and the key and nonce it gives
    under C{salt}.  Symmetric: either party computes the same values.
    """
    try:
        shared = crypto_scalarmult(own.x25519_private(), x25519_public_from_primary(peer_primary))
    except (CryptoError, InvalidKey) as e:
        # the all-zero output of a low-order point is refused by libsodium
        raise EnvelopeError(MALFORMED, "the peer key is not usable for key agreement") from e
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_BYTES + NONCE_BYTES,
        salt=salt,
        info=HKDF_INFO,
    ).derive(shared)
    return _Secrets(shared, okm[:KEY_BYTES], okm[KEY_BYTES:])


def seal_envelope(
    sender: KeyPair,
    recipient_primary: str,
    plaintext: Mapping[str, Any],
    *,
    ts: str | None = None,
    salt: bytes | None = None,
) -> dict[str, Any]:
    """
    Encrypt and sign C{plaintext} for C{recipient_primary}.

    C{ts} and C{salt} default to now and 16 fresh random bytes; tests and
    vectors fix them to get the same bytes every time.
    """
    parse_primary(recipient_primary)
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    if len(salt) != SALT_BYTES:
        raise ValueError(f"the salt is {SALT_BYTES} bytes")
    envelope: dict[str, Any] = {
        "v": ENVELOPE_VERSION,
        "from": sender.primary,
        "to": recipient_primary,
        "ts": format_rfc3339(time.time()) if ts is None else ts,
        "salt": b64url_encode(salt),
    }
    secrets = derive(sender, recipient_primary, salt)
    ct = ChaCha20Poly1305(secrets.key).encrypt(
        secrets.nonce, canonical_json(dict(plaintext)), canonical_json(header_of(envelope))
    )
    envelope["ct"] = b64url_encode(ct)
    envelope["sig"] = sender.sign_jcs(envelope)
    return envelope


def check_shape(envelope: object) -> dict[str, Any]:
    """
    Return C{envelope} if it has exactly the envelope's fields with the
    right types; raise L{EnvelopeError} C{malformed} otherwise.
    """
    if not isinstance(envelope, dict) or set(envelope) != _FIELDS:
        raise EnvelopeError(MALFORMED, "not a v1 envelope: wrong fields")
    if envelope["v"] != ENVELOPE_VERSION or isinstance(envelope["v"], bool):
        raise EnvelopeError(MALFORMED, f"unsupported envelope version {envelope['v']!r}")
    for name in ("from", "to", "ts", "salt", "ct", "sig"):
        if not isinstance(envelope[name], str):
            raise EnvelopeError(MALFORMED, f'"{name}" must be a string')
    try:
        parse_primary(envelope["from"])
        parse_primary(envelope["to"])
        parse_rfc3339(envelope["ts"])
        if len(b64url_decode(envelope["salt"])) != SALT_BYTES:
            raise ValueError("the salt is 16 bytes")
        b64url_decode(envelope["ct"])
    except ValueError as e:
        raise EnvelopeError(MALFORMED, f"not a v1 envelope: {e}") from e
    return envelope


def open_envelope(
    envelope: object, recipient: KeyPair, *, expected_sender: str | None = None
) -> OpenedEnvelope:
    """
    Check and decrypt an envelope addressed to C{recipient}.

    The checks run in the order a client needs to explain a failure: the
    shape, the addressee, the signature by C{from}, that C{from} is the key
    pinned for the sender (C{expected_sender}, when the caller knows one),
    then the AEAD and the plaintext's own shape.

    @raise EnvelopeError: with the code of the first check that failed.
    """
    envelope = check_shape(envelope)
    if envelope["to"] != recipient.primary:
        raise EnvelopeError(NOT_FOR_US, "the envelope is addressed to another key")
    unsigned = {name: value for name, value in envelope.items() if name != "sig"}
    if not verify_jcs(envelope["from"], unsigned, envelope["sig"]):
        raise EnvelopeError(BAD_SIGNATURE, "the envelope's signature does not verify")
    if expected_sender is not None and envelope["from"] != expected_sender:
        raise EnvelopeError(
            SENDER_MISMATCH, "the envelope is signed by a key other than the sender's pinned key"
        )
    return _decrypt(envelope, recipient, envelope["from"])


def open_own_envelope(
    envelope: object, sender: KeyPair, *, expected_recipient: str | None = None
) -> OpenedEnvelope:
    """
    Check and decrypt an envelope C{sender} sealed for someone else: the
    sender's copy a relay keeps, read back on another of the sender's
    devices. The X25519 secret is symmetric, so the sender's private key
    and the recipient's public key give the recipient's secret.

    The envelope must be from C{sender} and carry its valid signature
    (a server cannot slip a message into the sender's history as sent),
    and, when C{expected_recipient} is given (the key pinned for the
    conversation), be addressed to it.

    @raise EnvelopeError: C{malformed}, C{not_for_us} (not from C{sender}),
        C{bad_signature}, C{recipient_mismatch}, C{decrypt_failed} or
        C{bad_plaintext}.
    """
    envelope = check_shape(envelope)
    if envelope["from"] != sender.primary:
        raise EnvelopeError(NOT_FOR_US, "the envelope was not sent by this key")
    unsigned = {name: value for name, value in envelope.items() if name != "sig"}
    if not verify_jcs(envelope["from"], unsigned, envelope["sig"]):
        raise EnvelopeError(BAD_SIGNATURE, "the envelope's signature does not verify")
    if expected_recipient is not None and envelope["to"] != expected_recipient:
        raise EnvelopeError(
            RECIPIENT_MISMATCH, "the envelope is addressed to a key other than the pinned one"
        )
    return _decrypt(envelope, sender, envelope["to"])


def _decrypt(envelope: dict[str, Any], own: KeyPair, peer_primary: str) -> OpenedEnvelope:
    """
    The AEAD and the plaintext's shape, with the secret C{own} shares with
    C{peer_primary}.
    """
    secrets = derive(own, peer_primary, b64url_decode(envelope["salt"]))
    try:
        plain = ChaCha20Poly1305(secrets.key).decrypt(
            secrets.nonce,
            b64url_decode(envelope["ct"]),
            canonical_json(header_of(envelope)),
        )
    except InvalidTag as e:
        raise EnvelopeError(DECRYPT_FAILED, "the ciphertext does not decrypt") from e
    try:
        plaintext = loads(plain)
    except JSONError as e:
        raise EnvelopeError(BAD_PLAINTEXT, f"the plaintext is not JSON: {e}") from e
    if not isinstance(plaintext, dict):
        raise EnvelopeError(BAD_PLAINTEXT, "the plaintext is not a JSON object")
    return OpenedEnvelope(envelope["from"], envelope["to"], envelope["ts"], plaintext)
