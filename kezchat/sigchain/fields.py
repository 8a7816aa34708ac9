"""
Field checks shared by sigchain events and manifest blobs.

Each check returns the value it was given when it is acceptable and raises
L{FieldError} naming the field otherwise, so that the callers turn one
exception into their own precise error.  Text never carries control
characters: besides being useless in ids, names and URLs, they are the one
thing JCS may spell in more than one way when re-typed by hand.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from kezchat.identity.keys import is_key_hex

# The largest integer JCS (and JavaScript) represents exactly.
MAX_SAFE_INTEGER = 2**53 - 1

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_TIMESTAMP_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z")


class FieldError(ValueError):
    """
    A field is missing, of the wrong type or out of range.
    """


def require_object(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FieldError(f"{what} must be a JSON object")
    return value


def require_keys(
    obj: Mapping[str, Any],
    what: str,
    required: Iterable[str],
    optional: Iterable[str] = (),
) -> None:
    """
    Check that C{obj} has every required key and nothing unexpected.

    Unknown keys are refused rather than ignored: a signed document whose
    meaning a reader cannot fully understand is not one it should act on.
    """
    required = set(required)
    missing = sorted(required - obj.keys())
    if missing:
        raise FieldError(f"{what} is missing {', '.join(missing)}")
    unknown = sorted(obj.keys() - required - set(optional))
    if unknown:
        raise FieldError(f"{what} has unknown field(s) {', '.join(unknown)}")


def text(value: object, what: str, max_length: int = 256) -> str:
    """
    A non-empty string of at most C{max_length} characters, no controls.
    """
    if not isinstance(value, str):
        raise FieldError(f"{what} must be a string")
    if not value:
        raise FieldError(f"{what} must not be empty")
    if len(value) > max_length:
        raise FieldError(f"{what} is longer than {max_length} characters")
    if _CONTROL_RE.search(value):
        raise FieldError(f"{what} contains a control character")
    return value


def integer(value: object, what: str, minimum: int = 0) -> int:
    """
    An integer (never a boolean or a float) in C{[minimum, 2**53 - 1]}.
    """
    if not isinstance(value, int) or isinstance(value, bool):
        raise FieldError(f"{what} must be an integer")
    if not minimum <= value <= MAX_SAFE_INTEGER:
        raise FieldError(f"{what} must be between {minimum} and {MAX_SAFE_INTEGER}")
    return value


def hex64(value: object, what: str) -> str:
    """
    64 lowercase hex characters: a SHA-256 or BLAKE3 digest, or a raw key.
    """
    if not is_key_hex(value):
        raise FieldError(f"{what} must be 64 lowercase hex characters")
    return value


def timestamp(value: object, what: str) -> str:
    """
    An RFC 3339 UTC timestamp, C{2026-05-25T03:00:00Z} (fraction optional).
    """
    if not isinstance(value, str) or not _TIMESTAMP_RE.fullmatch(value):
        raise FieldError(f"{what} must be an RFC 3339 UTC timestamp like 2026-05-25T03:00:00Z")
    try:
        datetime.strptime(value[:19], "%Y-%m-%dT%H:%M:%S")
    except ValueError as e:
        raise FieldError(f"{what} is not a real date and time") from e
    return value


def one_of(value: object, what: str, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise FieldError(f"{what} must be one of {', '.join(choices)}")
    return str(value)
