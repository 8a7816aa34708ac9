"""
Handles: C{local@server}, stored and sent in the qualified form (fqhn).

The grammar (SPEC §2): a local part of 3–32 characters from C{a-z 0-9 _ -},
starting with a letter or a digit. Lookups accept the bare or the qualified
form in any case; what is signed must be the canonical lowercase form.

Every pattern here is applied with C{fullmatch}: a handle is the whole
string or nothing (C{"bob\n"} is not C{bob}). Clients may trim what a
user pasted; the server never does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LOCAL_RE = re.compile(r"[a-z0-9][a-z0-9_-]{2,31}")
# A DNS name: labels of letters, digits and hyphens, dot-separated.
SERVER_RE = re.compile(
    r"(?=.{1,253}\Z)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*"
    r"(:[0-9]{1,5})?"
)

RESERVED_HANDLES = frozenset(
    (
        "abuse admin administrator api help hostmaster info kez mailer-daemon "
        "moderator nats noreply no-reply null official postmaster root security "
        "server staff support sys system test undefined webmaster www"
    ).split()
)

#: what no handle may begin with (after dropping separators and digits):
#: the service's own name
RESERVED_PREFIXES = ("kez",)

_SEPARATORS = re.compile(r"[-_0-9]+")


def is_reserved(
    local: str,
    words: frozenset[str] = RESERVED_HANDLES,
    prefixes: tuple[str, ...] = RESERVED_PREFIXES,
) -> bool:
    """
    Whether the local part C{local} is reserved: it reads as one of the
    reserved C{words} once separators (C{-}, C{_}) and digits are dropped
    (C{admin-}, C{_admin}, C{ad-min}, C{admin2}); or one of its pieces
    between separators and digits is a reserved word (C{kez-official},
    C{the_admin}, C{support-2}); or, with separators and digits dropped,
    it begins with a reserved prefix (C{kezteam}, C{kez-news}).
    """
    squashed = _SEPARATORS.sub("", local)
    if squashed.startswith(prefixes):
        return True
    # pieces joined by one "-", so that a reserved word with a separator
    # of its own ("no-reply") is found as a run of pieces
    pieces = "-" + "-".join(filter(None, _SEPARATORS.split(local))) + "-"
    for word in words:
        if squashed == _SEPARATORS.sub("", word):
            return True
        if "-" + "-".join(filter(None, _SEPARATORS.split(word))) + "-" in pieces:
            return True
    return False


class InvalidHandle(ValueError):
    """
    A string does not follow the handle grammar.
    """


@dataclass(frozen=True)
class Handle:
    """
    A qualified handle, always lowercase.
    """

    local: str
    server: str

    @property
    def fqhn(self) -> str:
        return f"{self.local}@{self.server}"

    def __str__(self) -> str:
        return self.fqhn


def validate_local(local: object) -> str:
    """
    Return C{local} if it is a canonical local part, else raise.

    Case is not folded here: this is the check for signed payloads, which
    must already carry the lowercase form.
    """
    if not isinstance(local, str) or not LOCAL_RE.fullmatch(local):
        raise InvalidHandle(
            "a handle is 3-32 characters of a-z, 0-9, _ and -, starting with a letter or digit"
        )
    return local


def parse_handle(text: object, default_server: str) -> Handle:
    """
    Parse a handle as a user typed it: bare (C{alice}) or qualified
    (C{alice@kez.lat}), any case, without a leading C{@}. White space is
    not trimmed: C{"bob\n"} is refused, never read as C{bob}.
    """
    if not isinstance(text, str):
        raise InvalidHandle("a handle is a string")
    # Case-insensitive in the ASCII sense only: str.lower() maps some
    # non-ASCII letters to ASCII (KELVIN SIGN U+212A → "k"), which would let
    # a look-alike string resolve to someone's handle.
    if not text.isascii():
        raise InvalidHandle("a handle is ASCII")
    lowered = text.lower()
    local, sep, server = lowered.partition("@")
    if not sep:
        server = default_server.lower()
    elif not server or not SERVER_RE.fullmatch(server):
        raise InvalidHandle("the part after @ is not a server name")
    return Handle(validate_local(local), server)
