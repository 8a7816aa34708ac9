"""
Request authentication with C{X-KEZ-Auth} (SPEC §3.2).

A client proves it holds a handle's primary key by signing a short text
naming the method, the path and what the request is about (cursor, body
hash), and the time. Because every endpoint signs a different text, a
signature captured on one endpoint is never accepted on another.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kezchat.errors import KezError
from kezchat.identity.keys import KeyPair, verify_bytes

#: seconds a signed request stays acceptable either side of the server clock
AUTH_SKEW = 60.0

_AUTH_RE = re.compile(r"(-?[0-9]{1,12}):([0-9a-f]{128})")


@dataclass(frozen=True)
class AuthValue:
    timestamp: int
    signature: str


def signed_text(method: str, path: str, fields: Sequence[str], timestamp: int) -> bytes:
    """
    The exact bytes signed for a request: method, path, the endpoint's
    fields and the timestamp, joined by newlines.
    """
    return "\n".join([method, path, *fields, str(timestamp)]).encode("utf-8")


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def sign_request(
    key: KeyPair, method: str, path: str, fields: Sequence[str], timestamp: int
) -> str:
    """
    The C{X-KEZ-Auth} value for a request (what clients send).
    """
    return f"{timestamp}:{key.sign(signed_text(method, path, fields, timestamp))}"


def parse_auth(value: str | bytes | None) -> AuthValue:
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            value = None
    if not value:
        raise KezError("unauthorized", "X-KEZ-Auth is required: <unix_ts>:<sig_hex>")
    match = _AUTH_RE.fullmatch(value.strip())
    if match is None:
        raise KezError("unauthorized", "X-KEZ-Auth must be <unix_ts>:<128 hex>")
    return AuthValue(int(match.group(1)), match.group(2))


class Authenticator:
    """
    Verifies C{X-KEZ-Auth} values against a primary key and the clock.
    """

    def __init__(self, clock: Callable[[], float], skew: float = AUTH_SKEW) -> None:
        self._clock = clock
        self._skew = skew

    def verify(
        self,
        primary: str,
        auth: str | bytes | None,
        method: str,
        path: str,
        fields: Sequence[str] = (),
    ) -> None:
        """
        @raise KezError: C{unauthorized} (missing or malformed),
            C{stale_timestamp} (outside the skew, ±L{AUTH_SKEW} by default)
            or C{bad_signature}; all 401.
        """
        value = parse_auth(auth)
        if abs(self._clock() - value.timestamp) > self._skew:
            raise KezError(
                "stale_timestamp", f"X-KEZ-Auth timestamp is more than {self._skew:g} s off"
            )
        message = signed_text(method, path, fields, value.timestamp)
        if not verify_bytes(primary, message, value.signature):
            raise KezError("bad_signature", "X-KEZ-Auth does not verify for this request")
