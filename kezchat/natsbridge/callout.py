"""
The auth-callout responder: nats-server asks, the handle registry answers.

nats-server, configured with C{auth_callout} (see C{deploy/nats.conf}),
publishes every connection attempt as an I{authorization request} JWT on
C{$SYS.REQ.USER.AUTH}. The request carries what the client presented: its
nkey (a KEZ primary spelt as a NATS user key) and its signature over the
nonce the server sent it. We check that signature ourselves (nats-server
does not, for users it does not know), look the key up in the registry,
and reply with an I{authorization response} JWT signed by the issuer
account key: either a user JWT confining the client to its own inbox
(L{kezchat.natsbridge.subjects.user_permissions}) or an error.

Facts learned against nats-server 2.15 (SPEC §5): the user JWT's C{sub}
is the request's C{user_nkey}, a key the server made up for this
connection (so a response cannot be replayed onto another one), not the
client's nkey; the response's C{aud} is the server id; the user JWT's
C{aud} names the account the client is placed in. A reply with an empty
payload is a refusal "with no reason supplied", which is how we answer
requests that we cannot even address.

Every path through L{CalloutResponder.respond} ends in a reply: a client
is either admitted or refused at once, never left to time out.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

from nacl.exceptions import BadSignatureError
from nacl.exceptions import ValueError as NaclValueError
from nacl.signing import VerifyKey
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from kezchat.identity.keys import InvalidKey, format_primary
from kezchat.identity.nkeys import decode_public
from kezchat.natsbridge import jwt
from kezchat.natsbridge.aio import resolve
from kezchat.natsbridge.keys import SERVER, USER, NKey, public_key_bytes
from kezchat.natsbridge.subjects import user_permissions

CALLOUT_SUBJECT = "$SYS.REQ.USER.AUTH"
CALLOUT_QUEUE = "kezchat.callout"
REQUEST_AUDIENCE = "nats-authorization-request"

# primary ("ed25519:<hex>") -> registry record, or None when unregistered.
# The result may be a Deferred, an awaitable or a plain value.
Lookup = Callable[[str], "Deferred[Any] | Awaitable[Any] | Any"]


class RefusedError(Exception):
    """
    The client is not admitted; the message is what nats-server logs.
    """


def _record_name(record: Any) -> str | None:
    """
    A display name for the NATS connection (nats-server shows it in logs
    and monitoring), taken from the registry record when it has one.
    """
    name = record.get("fqhn") if isinstance(record, Mapping) else getattr(record, "fqhn", None)
    return name if isinstance(name, str) else None


def _decode_nonce_signature(sig: str) -> bytes:
    # Clients differ: nats-py sends standard base64, the Go and JS clients
    # unpadded base64url. nats-server itself accepts both.
    data = sig.encode("ascii")
    padded = data + b"=" * (-len(data) % 4)
    for decode in (base64.urlsafe_b64decode, base64.standard_b64decode):
        try:
            raw = decode(padded)
        except (binascii.Error, ValueError):
            continue
        if len(raw) == 64:
            return raw
    raise RefusedError("malformed nonce signature")


class CalloutResponder:
    """
    Turns authorization requests into authorization responses.

    @param issuer: the account key nats-server trusts (C{auth_callout.issuer}).
    @param lookup: primary → registry record or C{None}.
    @param account: the account users are placed in (C{KEZ} in
        C{deploy/nats.conf}).
    @param ttl: lifetime of a user JWT in seconds. When it runs out
        nats-server disconnects the client, which reconnects through the
        callout again: the registry is consulted at least that often.
    """

    log = Logger()

    def __init__(
        self,
        issuer: NKey,
        lookup: Lookup,
        account: str = "KEZ",
        ttl: int = 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuer = issuer
        self.lookup = lookup
        self.account = account
        self.ttl = ttl
        self.clock = clock

    async def respond(self, token: bytes) -> bytes:
        """
        The reply payload for one request payload. Never raises.
        """
        now = self.clock()
        try:
            claims = jwt.decode(token, [SERVER], "authorization_request", now=now)
            request = claims["nats"]
            user_nkey = request.get("user_nkey")
            server = request.get("server_id")
            server_id = server.get("id") if isinstance(server, dict) else None
            # user_nkey is new for every connection: not worth caching.
            decode_public(USER, user_nkey)
            public_key_bytes(SERVER, server_id)
        except (jwt.JWTError, InvalidKey, TypeError, AttributeError) as e:
            self.log.warn("Refusing a malformed authorization request: {reason}", reason=str(e))
            return b""
        # both checked just above
        user_nkey, server_id = cast(str, user_nkey), cast(str, server_id)
        try:
            if claims.get("aud") != REQUEST_AUDIENCE:
                raise RefusedError("not an authorization request")
            primary, name = await self._authenticate(request)
        except RefusedError as e:
            self.log.info(
                "NATS connection refused: {reason} (client {client})",
                reason=str(e),
                client=_client_label(request),
            )
            return self._response(user_nkey, server_id, {"error": str(e)}, now)
        except Exception:
            # A request shape nobody anticipated: refuse, never leave the
            # client waiting for the server's auth timeout.
            self.log.failure("Refusing an authorization request that could not be handled")
            return self._response(user_nkey, server_id, {"error": "internal error"}, now)
        user_jwt = self._user_jwt(user_nkey, primary, name, now)
        return self._response(user_nkey, server_id, {"jwt": user_jwt}, now)

    async def _authenticate(self, request: dict[str, Any]) -> tuple[str, str | None]:
        opts, info = request.get("connect_opts"), request.get("client_info")
        if not isinstance(opts, dict) or not isinstance(info, dict):
            raise RefusedError("malformed request")
        nkey, sig, nonce = opts.get("nkey"), opts.get("sig"), info.get("nonce")
        if not isinstance(nkey, str) or not nkey:
            raise RefusedError("a KEZ key (nkey) is required")
        if not isinstance(sig, str) or not isinstance(nonce, str) or not nonce:
            raise RefusedError("the nonce was not signed")
        try:
            key = public_key_bytes(USER, nkey)
            VerifyKey(key).verify(nonce.encode("ascii"), _decode_nonce_signature(sig))
        except (InvalidKey, BadSignatureError, NaclValueError, UnicodeEncodeError) as e:
            raise RefusedError("bad nonce signature") from e
        primary = format_primary(key)
        try:
            record = await resolve(self.lookup(primary))
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.log.failure("Registry lookup failed for {primary}", primary=primary)
            raise RefusedError("registry unavailable") from e
        if record is None:
            raise RefusedError("unknown key")
        return primary, _record_name(record)

    def _user_jwt(self, user_nkey: str, primary: str, name: str | None, now: float) -> str:
        claims: dict[str, Any] = {
            "sub": user_nkey,
            "aud": self.account,
            "exp": int(now) + self.ttl,
            "nats": {
                "type": "user",
                "subs": -1,
                "data": -1,
                "payload": -1,
                **user_permissions(primary.removeprefix("ed25519:")),
            },
        }
        if name:
            claims["name"] = name
        return jwt.encode(claims, self.issuer, now=now)

    def _response(self, user_nkey: str, server_id: str, body: dict[str, Any], now: float) -> bytes:
        claims = {
            "sub": user_nkey,
            "aud": server_id,
            "nats": {"type": "authorization_response", **body},
        }
        return jwt.encode(claims, self.issuer, now=now).encode("ascii")


def _client_label(request: dict[str, Any]) -> str:
    info = request.get("client_info")
    if not isinstance(info, dict):
        return "?"
    return f"{info.get('host', '?')} #{info.get('id', '?')}"


class CalloutSubscription:
    """
    Serves a L{CalloutResponder} on a nats-py connection, in a queue group
    so that several chat-server instances share the load.

    nats-py runs a subscription's callback to completion before taking the
    next message; a registry lookup may wait on the database, so each
    request is answered in its own task and a slow lookup never holds up
    the connections queued behind it.
    """

    log = Logger()

    def __init__(self, responder: CalloutResponder) -> None:
        self.responder = responder
        self._tasks: set[asyncio.Task[None]] = set()
        self._sub: Any = None

    async def start(self, nc: Any, queue: str = CALLOUT_QUEUE) -> None:
        self._nc = nc
        self._sub = await nc.subscribe(
            CALLOUT_SUBJECT, queue=queue, cb=self._on_request, pending_msgs_limit=-1
        )

    async def stop(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            await sub.unsubscribe()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _on_request(self, msg: Any) -> None:
        task = asyncio.ensure_future(self._answer(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, msg: Any) -> None:
        reply = await self.responder.respond(msg.data)
        if not msg.reply:
            return
        try:
            await self._nc.publish(msg.reply, reply)
        except Exception:
            # The connection dropped mid-answer; the server times the
            # client out and it retries.
            self.log.failure("Could not answer an authorization request")
