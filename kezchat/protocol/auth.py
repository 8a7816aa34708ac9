"""
Request authentication with C{X-KEZ-Auth} (SPEC §3.2).

A client proves it holds a handle's primary key by signing a short text
naming the method, the server, the path and what the request is about
(cursor, body hash), and the time. Because every endpoint signs a
different text, a signature captured on one endpoint is never accepted on
another; because the text names the server (C{@kez.lat} on its second
line), a request signed for one server is refused by another where the
same key holds the same handle.

The older form without the server line is still accepted while the
operator allows it (C{--legacy-auth on}), and counted, so operators can
see when no client sends it any more and turn it off.
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
#: the longest a stream's C{auth} may stay valid with C{exp}: 24 h after its C{ts}
MAX_STREAM_WINDOW = 24 * 3600

_EXP_RE = re.compile(r"[0-9]{1,12}")

_AUTH_RE = re.compile(r"(-?[0-9]{1,12}):([0-9a-f]{128})")


@dataclass(frozen=True)
class AuthValue:
    timestamp: int
    signature: str


def signed_text(
    method: str,
    path: str,
    fields: Sequence[str],
    timestamp: int,
    server: str | None = None,
) -> bytes:
    """
    The exact bytes signed for a request: method, C{@server}, path, the
    endpoint's fields and the timestamp, joined by newlines.

    @param server: the domain of the server the request is for. C{None}
        gives the older form without that line, which names no server and
        so could be replayed to another one.
    """
    head = [method] if server is None else [method, f"@{server}"]
    return "\n".join([*head, path, *fields, str(timestamp)]).encode("utf-8")


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def sign_request(
    key: KeyPair,
    method: str,
    path: str,
    fields: Sequence[str],
    timestamp: int,
    server: str | None = None,
) -> str:
    """
    The C{X-KEZ-Auth} value for a request (what clients send). Clients
    name the C{server} the request is for; see L{signed_text}.
    """
    return f"{timestamp}:{key.sign(signed_text(method, path, fields, timestamp, server))}"


def handle_server(handle: str) -> str | None:
    """
    The server domain of a qualified handle (C{alice@kez.lat} →
    C{kez.lat}), which is the server a request about it is signed for;
    C{None} for a bare handle, which names no server.
    """
    return handle.partition("@")[2].strip().lower() or None


def parse_expiry(value: str | bytes | None) -> int | None:
    """
    The C{exp} of a stream URL: C{None} when absent, else a unix time.

    @raise KezError: C{bad_request} for anything but a plain number.
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not _EXP_RE.fullmatch(value):
        raise KezError("bad_request", "exp must be a unix time in seconds")
    return int(value)


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
    Verifies C{X-KEZ-Auth} values against a primary key, this server's
    name and the clock.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        server: str,
        *,
        legacy: bool = True,
        on_legacy: Callable[[str], object] = lambda method: None,
        skew: float = AUTH_SKEW,
    ) -> None:
        """
        @param server: this server's domain, which the signed text names.
        @param legacy: also accept the older text that names no server.
        @param on_legacy: told the method of each request accepted in the
            older form (a metric: when it stays at zero, turn C{legacy} off).
        """
        self._clock = clock
        self._server = server
        self._legacy = legacy
        self._on_legacy = on_legacy
        self._skew = skew

    def verify(
        self,
        primary: str,
        auth: str | bytes | None,
        method: str,
        path: str,
        fields: Sequence[str] = (),
        *,
        expires: int | None = None,
    ) -> None:
        """
        @param expires: the C{exp} of a long-lived stream URL: the
            signature (which then covers C{exp=<expires>} after C{fields})
            stays valid until then instead of for L{AUTH_SKEW}.
        @raise KezError: C{unauthorized} (missing or malformed),
            C{stale_timestamp} (outside the skew, ±L{AUTH_SKEW} by default,
            or past C{expires}) or C{bad_signature}, all 401;
            C{bad_request} (400) for an C{expires} not after the signature's
            time or more than L{MAX_STREAM_WINDOW} after it.
        """
        value = parse_auth(auth)
        self._check_time(value.timestamp, expires)
        if expires is not None:
            fields = [*fields, f"exp={expires}"]
        ts, sig = value.timestamp, value.signature
        if verify_bytes(primary, signed_text(method, path, fields, ts, self._server), sig):
            return
        if self._legacy and verify_bytes(primary, signed_text(method, path, fields, ts), sig):
            self._on_legacy(method)
            return
        raise KezError("bad_signature", "X-KEZ-Auth does not verify for this request")

    def _check_time(self, timestamp: int, expires: int | None) -> None:
        """
        Without C{expires}: C{timestamp} within the skew of the clock. With
        it: a window of at most L{MAX_STREAM_WINDOW} from C{timestamp}
        (not ahead of the clock by more than the skew) that has not ended.
        """
        now = self._clock()
        if expires is None:
            if abs(now - timestamp) > self._skew:
                raise KezError(
                    "stale_timestamp", f"X-KEZ-Auth timestamp is more than {self._skew:g} s off"
                )
            return
        if not timestamp < expires <= timestamp + MAX_STREAM_WINDOW:
            raise KezError(
                "bad_request",
                f"exp must be after the signature's time and at most "
                f"{MAX_STREAM_WINDOW} s after it",
            )
        if timestamp - now > self._skew:
            raise KezError("stale_timestamp", f"auth timestamp is more than {self._skew:g} s ahead")
        if now > expires:
            raise KezError("stale_timestamp", "exp has passed: sign a new stream URL")
