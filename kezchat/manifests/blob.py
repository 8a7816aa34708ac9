"""
The manifest blob: a signed JSON document listing shared files.

    {"type": "kez.chat.shared_files", "version": 1, "owner": "ed25519:…",
     "created_at": "…", "entries": [...], "sig": "<128 hex>"}

It is signed like a sigchain event (C{sig} over JCS of the rest) and
serialised as JCS, so its bytes — and hence the BLAKE3 digest that the
owner's C{set_shared_files} event commits to — are a pure function of its
content.  Readers verify the bytes they were given, not a re-encoding.
"""

from __future__ import annotations

from typing import Any

from blake3 import blake3

from kezchat.identity.jcs import canonical_json
from kezchat.identity.keys import (
    InvalidKey,
    KeyPair,
    is_signature_hex,
    parse_primary,
    verify_jcs,
)
from kezchat.manifests.entries import Entry, check_entry
from kezchat.manifests.errors import (
    BAD_SIGNATURE,
    BLAKE3_MISMATCH,
    MALFORMED,
    TOO_LARGE,
    WRONG_OWNER,
    ManifestError,
)
from kezchat.sigchain import bodies
from kezchat.sigchain.events import utc_now
from kezchat.sigchain.fields import FieldError, require_keys, require_object, timestamp
from kezchat.strictjson import JSONError, loads

MANIFEST_TYPE = "kez.chat.shared_files"
MANIFEST_VERSION = 1
# The home server's mirror takes no more (SPEC §3.4); readers refuse more.
MAX_MANIFEST_BYTES = 64 * 1024

_KEYS = ("type", "version", "owner", "created_at", "entries", "sig")

Manifest = dict[str, Any]


def manifest_blake3(data: bytes) -> str:
    """
    The BLAKE3 hex digest of a blob's bytes, as C{set_shared_files} carries it.
    """
    return blake3(data).hexdigest()


def check_manifest_shape(value: object) -> Manifest:
    """
    Check everything but the signature.

    @raise ManifestError: C{malformed}.
    """
    try:
        manifest = require_object(value, "a manifest")
        require_keys(manifest, "a manifest", _KEYS)
        if manifest["type"] != MANIFEST_TYPE:
            raise FieldError(f"type must be {MANIFEST_TYPE}")
        if type(manifest["version"]) is not int or manifest["version"] != MANIFEST_VERSION:
            raise FieldError(f"version must be {MANIFEST_VERSION}")
        try:
            parse_primary(manifest["owner"])
        except InvalidKey as e:
            raise FieldError(f"owner: {e}") from e
        timestamp(manifest["created_at"], "created_at")
        if not is_signature_hex(manifest["sig"]):
            raise FieldError("sig must be 128 lowercase hex characters")
        entries = manifest["entries"]
        if not isinstance(entries, list):
            raise FieldError("entries must be a list")
        seen: set[str] = set()
        for position, entry in enumerate(entries):
            try:
                check_entry(entry)
            except FieldError as e:
                raise FieldError(f"entry {position}: {e}") from e
            if entry["id"] in seen:
                raise FieldError(f"entry {position}: id {entry['id']!r} is used twice")
            seen.add(entry["id"])
    except FieldError as e:
        raise ManifestError(MALFORMED, str(e)) from e
    return manifest


def build_manifest(owner: KeyPair, entries: list[Entry], created_at: str | None = None) -> Manifest:
    """
    Sign a manifest of C{entries} (from L{public_entry}/L{private_entry}).
    """
    manifest: Manifest = {
        "type": MANIFEST_TYPE,
        "version": MANIFEST_VERSION,
        "owner": owner.primary,
        "created_at": created_at or utc_now(),
        "entries": entries,
    }
    manifest["sig"] = owner.sign_jcs(manifest)
    return check_manifest_shape(manifest)


def manifest_bytes(manifest: Manifest) -> bytes:
    """
    The blob: the manifest's JCS bytes.
    """
    data = canonical_json(manifest)
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(TOO_LARGE, f"the manifest is over {MAX_MANIFEST_BYTES} bytes")
    return data


def shared_files_body(data: bytes, url: str) -> dict[str, Any]:
    """
    The C{set_shared_files} event body that commits to blob C{data}.
    """
    return bodies.set_shared_files(manifest_blake3(data), len(data), url)


def verify_manifest(
    data: bytes, *, owner: str | None = None, expected_blake3: str | None = None
) -> Manifest:
    """
    Parse and verify a blob.

    @param owner: the primary the reader expects (whose profile it opened).
    @param expected_blake3: the digest from the owner's sigchain; checked
        first, since a blob that is not the committed one is not worth
        parsing.
    @raise ManifestError: with the precise reason.
    """
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(TOO_LARGE, f"the manifest is over {MAX_MANIFEST_BYTES} bytes")
    if expected_blake3 is not None and manifest_blake3(data) != expected_blake3:
        raise ManifestError(BLAKE3_MISMATCH, "the blob is not the one the sigchain commits to")
    try:
        value = loads(data)
    except JSONError as e:
        raise ManifestError(MALFORMED, str(e)) from e
    manifest = check_manifest_shape(value)
    if owner is not None and manifest["owner"] != owner:
        raise ManifestError(WRONG_OWNER, f"the manifest is {manifest['owner']}'s, not {owner}'s")
    unsigned = {key: value for key, value in manifest.items() if key != "sig"}
    if not verify_jcs(manifest["owner"], unsigned, manifest["sig"]):
        raise ManifestError(BAD_SIGNATURE, "the signature does not verify against the owner")
    return manifest
