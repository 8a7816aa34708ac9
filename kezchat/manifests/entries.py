"""
The entries of a shared-files manifest (SPEC §7, design option A).

    {"id", "name", "size", "mime", "blake3", "added_at",
     "visibility": "public" | "private",
     "wrapped": {"<recipient hex>": "<content key sealed to them>"}}

A public entry has an empty C{wrapped} and may carry its content key in
the clear as C{"key"} (base64url) when its file is encrypted at all; a
private entry has at least one wrapped key and never a clear one.
"""

from __future__ import annotations

from typing import Any

from kezchat.identity.keys import parse_primary
from kezchat.manifests.sealing import (
    CONTENT_KEY_BYTES,
    SEALED_KEY_BYTES,
    b64url_decode,
    b64url_encode,
    seal_content_key,
)
from kezchat.sigchain.fields import (
    FieldError,
    hex64,
    integer,
    one_of,
    require_keys,
    require_object,
    text,
    timestamp,
)

PUBLIC = "public"
PRIVATE = "private"

_ENTRY_KEYS = ("id", "name", "size", "mime", "blake3", "added_at", "visibility", "wrapped")

Entry = dict[str, Any]


def _binary(value: object, what: str, length: int) -> bytes:
    if not isinstance(value, str):
        raise FieldError(f"{what} must be a base64url string")
    try:
        data = b64url_decode(value)
    except ValueError as e:
        raise FieldError(f"{what}: {e}") from e
    if len(data) != length:
        raise FieldError(f"{what} must encode {length} bytes")
    return data


def _name(value: object) -> str:
    """
    A file name a downloader may write as is: no separators, no dot-dirs.
    """
    name = text(value, "name", 255)
    if "/" in name or "\\" in name or name in {".", ".."}:
        raise FieldError("name must be a plain file name, without / or \\")
    return name


def check_entry(entry: object) -> Entry:
    """
    Check one entry's shape.

    @raise FieldError: naming what is wrong.
    """
    entry = require_object(entry, "an entry")
    require_keys(entry, "an entry", _ENTRY_KEYS, ["key"])
    text(entry["id"], "entry id", 128)
    _name(entry["name"])
    integer(entry["size"], "size")
    text(entry["mime"], "mime", 255)
    hex64(entry["blake3"], "blake3")
    timestamp(entry["added_at"], "added_at")
    visibility = one_of(entry["visibility"], "visibility", (PUBLIC, PRIVATE))
    wrapped = require_object(entry["wrapped"], "wrapped")
    for recipient, sealed in wrapped.items():
        hex64(recipient, "a wrapped recipient")
        _binary(sealed, "a wrapped key", SEALED_KEY_BYTES)
    if visibility == PUBLIC:
        if wrapped:
            raise FieldError("a public entry wraps no keys")
        if "key" in entry:
            _binary(entry["key"], "key", CONTENT_KEY_BYTES)
    else:
        if not wrapped:
            raise FieldError("a private entry wraps its key for at least one reader")
        if "key" in entry:
            raise FieldError("a private entry must not carry its key in the clear")
    return entry


def _file_fields(
    id: str, name: str, size: int, mime: str, blake3: str, added_at: str
) -> Entry:
    """
    What every entry says about its file, whoever may read it.
    """
    return {
        "id": id,
        "name": name,
        "size": size,
        "mime": mime,
        "blake3": blake3,
        "added_at": added_at,
    }


def public_entry(
    *,
    id: str,
    name: str,
    size: int,
    mime: str,
    blake3: str,
    added_at: str,
    content_key: bytes | None = None,
) -> Entry:
    """
    An entry every reader sees; C{content_key}, if the file is encrypted,
    is published alongside it.
    """
    entry = _file_fields(id, name, size, mime, blake3, added_at)
    entry.update(visibility=PUBLIC, wrapped={})
    if content_key is not None:
        entry["key"] = b64url_encode(content_key)
    return check_entry(entry)


def private_entry(
    *,
    id: str,
    name: str,
    size: int,
    mime: str,
    blake3: str,
    added_at: str,
    content_key: bytes,
    recipients: list[str],
) -> Entry:
    """
    An entry only C{recipients} (primaries) can open: the content key is
    sealed to each of them.
    """
    entry = _file_fields(id, name, size, mime, blake3, added_at)
    entry.update(
        visibility=PRIVATE,
        wrapped={
            parse_primary(primary).hex(): seal_content_key(content_key, primary)
            for primary in recipients
        },
    )
    return check_entry(entry)
