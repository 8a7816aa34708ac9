"""
The key directory's wire forms, for the server that makes them and the
clients and auditors that check them: signed tree heads, leaves (the
registrations as accepted) and proof paths.

A head is C{{"size", "root", "ts", "key", "sig"}}: C{sig} is the log key's
Ed25519 signature over the JCS bytes of the other four fields, C{key} the
log key as C{ed25519:<hex>}. Leaves travel as unpadded base64url, hashes
as lowercase hex.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from nacl.signing import SigningKey

from kezchat.identity.jcs import canonical_json
from kezchat.identity.keys import (
    SIGNATURE_ALG,
    InvalidKey,
    format_primary,
    is_signature_hex,
    parse_primary,
    verify_jcs,
)
from kezchat.keylog.merkle import HASH_SIZE
from kezchat.timeutil import parse_rfc3339

_HEX_HASH = re.compile(r"[0-9a-f]{64}")
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
#: the largest size or index any field may carry (JSON's exact integers)
MAX_INDEX = 2**53 - 1


class WireError(ValueError):
    """
    Something from the log (a head, a leaf, a proof) is malformed or does
    not verify.
    """


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def from_b64url(text: object) -> bytes:
    """
    Strictly unpadded base64url, as the log writes it.

    @raise WireError: anything else.
    """
    if not isinstance(text, str) or not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise WireError("not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise WireError("not unpadded base64url") from None
    if b64url(data) != text:
        raise WireError("not the canonical base64url of its bytes")
    return data


def hash_from_hex(text: object) -> bytes:
    if not isinstance(text, str) or not _HEX_HASH.fullmatch(text):
        raise WireError("a hash must be 64 lowercase hex digits")
    return bytes.fromhex(text)


def path_from_json(value: object) -> list[bytes]:
    if not isinstance(value, list) or len(value) > 128:
        raise WireError('"path" must be a list of hashes')
    return [hash_from_hex(h) for h in value]


def _index(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_INDEX:
        raise WireError(f'"{what}" must be a non-negative integer')
    return value


@dataclass(frozen=True)
class Head:
    """
    A signed tree head whose signature verified.
    """

    size: int
    root: bytes
    ts: str
    key: str
    sig: str

    def unsigned(self) -> dict[str, Any]:
        return {"size": self.size, "root": self.root.hex(), "ts": self.ts, "key": self.key}

    def json(self) -> dict[str, Any]:
        return {**self.unsigned(), "sig": self.sig}

    def brief(self) -> dict[str, Any]:
        """
        What a client gossips in its messages: C{{"size", "root"}}.
        """
        return {"size": self.size, "root": self.root.hex()}


def sign_head(seed: bytes, size: int, root: bytes, ts: str) -> Head:
    """
    The head of a tree of C{size} leaves with root C{root}, signed with the
    log key whose seed is C{seed}.
    """
    signing = SigningKey(seed)
    key = format_primary(bytes(signing.verify_key))
    unsigned = {"size": size, "root": root.hex(), "ts": ts, "key": key}
    sig = signing.sign(canonical_json(unsigned)).signature.hex()
    return Head(size, root, ts, key, sig)


def parse_head(value: object) -> Head:
    """
    A head from JSON, its signature checked against its own C{key} (that
    the key is the one the client expects is the client's check).

    @raise WireError: malformed, or the signature does not verify.
    """
    if not isinstance(value, dict) or set(value) != {"size", "root", "ts", "key", "sig"}:
        raise WireError('a head is exactly {"size", "root", "ts", "key", "sig"}')
    size = _index(value["size"], "size")
    root = hash_from_hex(value["root"])
    ts = value["ts"]
    try:
        parse_rfc3339(ts)
    except ValueError:
        raise WireError('"ts" must be an RFC 3339 timestamp') from None
    key = value["key"]
    try:
        parse_primary(key)
    except InvalidKey:
        raise WireError('"key" must be ed25519:<64 hex>') from None
    sig = value["sig"]
    if not is_signature_hex(sig):
        raise WireError('"sig" must be 128 lowercase hex digits')
    head = Head(size, root, ts, key, sig)
    if not verify_jcs(key, head.unsigned(), sig):
        raise WireError("the head's signature does not verify under its key")
    return head


def parse_brief(value: object) -> tuple[int, bytes]:
    """
    A gossiped head C{{"size", "root"}}.
    """
    if not isinstance(value, dict) or set(value) != {"size", "root"}:
        raise WireError('a gossiped head is exactly {"size", "root"}')
    return _index(value["size"], "size"), hash_from_hex(value["root"])


@dataclass(frozen=True)
class Registration:
    """
    A leaf read back: the registration it holds, its signature checked.

    @ivar handle: the local part, lowercase, as signed.
    """

    handle: str
    server: str
    primary: str

    @property
    def fqhn(self) -> str:
        return f"{self.handle}@{self.server}"


def parse_leaf(leaf: bytes) -> Registration:
    """
    The registration a leaf holds: JSON in its JCS form, a handle
    registration signed by its primary.

    @raise WireError: it is not one, or its signature does not verify.
    """
    try:
        body = json.loads(leaf.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise WireError("the leaf is not JSON") from None
    try:
        canonical = canonical_json(body)
    except ValueError:
        canonical = b""
    if canonical != leaf:
        raise WireError("the leaf is not in canonical (JCS) form")
    if not isinstance(body, dict) or body.get("kez") != "handle_registration":
        raise WireError("the leaf is not a handle registration")
    payload, signature = body.get("payload"), body.get("signature")
    if not isinstance(payload, dict) or not isinstance(signature, dict):
        raise WireError("the leaf has no payload or signature")
    primary, handle, server = payload.get("primary"), payload.get("handle"), payload.get("server")
    if payload.get("type") != "kez.chat.handle_registration" or not isinstance(primary, str) \
            or not isinstance(handle, str) or not isinstance(server, str):
        raise WireError("the leaf's payload is not a handle registration")
    if signature.get("alg") != SIGNATURE_ALG or signature.get("key") != primary \
            or not verify_jcs(primary, payload, signature.get("sig")):
        raise WireError("the leaf's signature does not verify under its primary")
    local, _, on = handle.partition("@")
    if on and on != server:
        raise WireError("the leaf's handle names another server")
    return Registration(local, server, primary)


__all__ = [
    "HASH_SIZE",
    "MAX_INDEX",
    "Head",
    "Registration",
    "WireError",
    "b64url",
    "from_b64url",
    "hash_from_hex",
    "parse_brief",
    "parse_head",
    "parse_leaf",
    "path_from_json",
    "sign_head",
]
