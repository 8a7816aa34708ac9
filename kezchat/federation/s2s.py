"""
Server-to-server request signing, shared by the sending and the
receiving side.

A server proves a request comes from it by signing, with its own server
key (published at C{GET /v1/server}), a text naming both servers, the
method, the path, the body's SHA-256 and the time::

    KEZ-S2S
    @<from domain>
    @<to domain>
    <METHOD>
    <path>
    <sha256 of the body, hex>
    <unix seconds>

and sending C{X-KEZ-Server-Auth: <from domain>:<unix seconds>:<sig hex>}.
Naming the target server means a request signed for one server is refused
by every other; naming the path and the body means it cannot be moved to
another endpoint or given another body; the time bounds replays to the
same window as client signatures (L{kezchat.protocol.auth.AUTH_SKEW}).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from kezchat.errors import KezError
from kezchat.identity.handles import SERVER_RE
from kezchat.identity.keys import KeyPair, verify_bytes
from kezchat.protocol.auth import AUTH_SKEW, body_digest

#: the request header carrying a server's signature
HEADER = "X-KEZ-Server-Auth"

_VALUE_RE = re.compile(r"([^:\s]{1,253}):(-?[0-9]{1,12}):([0-9a-f]{128})")


def signed_text(
    sender: str, target: str, method: str, path: str, body: bytes, timestamp: int
) -> bytes:
    """
    The exact bytes a server signs for a request from C{sender} to C{target}.
    """
    lines = ["KEZ-S2S", f"@{sender}", f"@{target}", method, path, body_digest(body), str(timestamp)]
    return "\n".join(lines).encode("utf-8")


def sign(
    key: KeyPair, sender: str, target: str, method: str, path: str, body: bytes, timestamp: int
) -> str:
    """
    The C{X-KEZ-Server-Auth} value for a request (what the sending server
    attaches).
    """
    text = signed_text(sender, target, method, path, body, timestamp)
    return f"{sender}:{timestamp}:{key.sign(text)}"


@dataclass(frozen=True)
class ServerAuth:
    """
    A parsed C{X-KEZ-Server-Auth} value.
    """

    sender: str
    timestamp: int
    signature: str


def parse(value: str | bytes | None) -> ServerAuth:
    """
    @raise KezError: C{unauthorized} for a missing or garbled value.
    """
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not value:
        raise KezError("unauthorized", f"{HEADER} is required: <domain>:<unix_ts>:<sig_hex>")
    match = _VALUE_RE.fullmatch(value.strip())
    if match is None or not SERVER_RE.fullmatch(match.group(1).lower()):
        raise KezError("unauthorized", f"{HEADER} must be <domain>:<unix_ts>:<128 hex>")
    return ServerAuth(match.group(1).lower(), int(match.group(2)), match.group(3))


#: the key another server publishes: its domain → C{ed25519:<hex>}
KeyOf = Callable[[str], Awaitable[str]]


class ServerVerifier:
    """
    Checks C{X-KEZ-Server-Auth} on requests arriving at server C{own}.
    """

    def __init__(self, own: str, key_of: KeyOf, clock: Callable[[], float]) -> None:
        """
        @param key_of: fetches the key a domain publishes at C{GET
            /v1/server} (over its resolved base URL, checked to name that
            domain); raises L{KezError} when it cannot.
        """
        self.own = own
        self._key_of = key_of
        self._clock = clock

    async def verify(self, header: str | bytes | None, method: str, path: str, body: bytes) -> str:
        """
        The domain that signed this request.

        @raise KezError: C{unauthorized} (garbled header),
            C{stale_timestamp}, C{bad_signature} (not signed by that
            domain's key, or signed for another server), or what
            fetching the sender's key raises.
        """
        auth = parse(header)
        if auth.sender == self.own:
            raise KezError("bad_signature", "a request cannot come from this server itself")
        if abs(self._clock() - auth.timestamp) > AUTH_SKEW:
            raise KezError("stale_timestamp", "the signed time is more than 60 s off")
        key = await self._key_of(auth.sender)
        text = signed_text(auth.sender, self.own, method, path, body, auth.timestamp)
        if not verify_bytes(key, text, auth.signature):
            raise KezError(
                "bad_signature", f"the request is not signed by {auth.sender}'s key for {self.own}"
            )
        return auth.sender
