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
(L{kezchat.protocol.subjects.user_permissions}) or an error. A client
whose connection name is C{kez:<device>} is also granted that device's own
durable consumer, C{inbox_<hex>_<device>}, so each device of one key reads
every message.

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
import inspect
import json
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError
from nacl.exceptions import ValueError as NaclValueError
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from kezchat.compat.aio import resolve
from kezchat.identity.keys import InvalidKey, format_primary
from kezchat.natsbridge import jwt
from kezchat.natsbridge.errors import NatsSetupError
from kezchat.natsbridge.flush import flush
from kezchat.protocol.natskeys import SERVER, USER, NKey, public_key_bytes
from kezchat.protocol.subjects import device_of_connection, user_permissions

CALLOUT_SUBJECT = "$SYS.REQ.USER.AUTH"
CALLOUT_QUEUE = "kezchat.callout"
REQUEST_AUDIENCE = "nats-authorization-request"

class Lookup(Protocol):
    """
    The callout's view of the registry: primary (C{"ed25519:<hex>"}) →
    record, or C{None} when unregistered. L{kezchat.registry.Registry}
    is one (its C{cached_primary} and C{find_primary}, adapted by
    L{registry_lookup}).
    """

    def cached(self, primary: str) -> Any | None:
        """
        The record if it is known at once (in memory), else C{None}:
        unregistered or not cached, L{fetch} decides.
        """

    def fetch(self, primary: str) -> Deferred[Any | None] | Awaitable[Any | None]:
        """
        The record, or C{None} when unregistered, however long it takes:
        a Deferred (Twisted code, such as the registry's) or an asyncio
        awaitable.
        """


@dataclass(frozen=True)
class FunctionLookup:
    """
    A L{Lookup} from two functions.
    """

    cached: Callable[[str], Any | None]
    fetch: Callable[[str], Deferred[Any | None] | Awaitable[Any | None]]


def registry_lookup(registry: Any) -> Lookup:
    """
    The L{Lookup} of a L{kezchat.registry.Registry}: its record cache by
    primary, then its store.
    """
    return FunctionLookup(registry.cached_primary, registry.find_primary)


# A user nkey as nats-server makes one for each connection: "U" then the
# rest of the base32 of the prefix byte (whose last 3 bits are zero), the
# key and the CRC. Checking its shape is enough: it comes from the server,
# in a request whose signature we checked, and only ever goes back to it.
_USER_NKEY = re.compile(r"U[A-D][A-Z2-7]{54}")


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


class _Pending:
    """
    A request whose checks passed up to the registry lookup.
    """

    __slots__ = ("now", "primary", "request", "server_id", "user_nkey")

    def __init__(
        self, request: dict[str, Any], user_nkey: str, server_id: str, now: float, primary: str
    ) -> None:
        self.request = request
        self.user_nkey = user_nkey
        self.server_id = server_id
        self.now = now
        self.primary = primary


class CalloutResponder:
    """
    Turns authorization requests into authorization responses.

    The work is split around the registry lookup (L{prepare}, then
    L{complete} or L{finish}) so that a returning client whose record is
    cached is answered synchronously: four Ed25519 operations (the
    server's request, the client's nonce, two signatures) are what an
    authorization must cost, and little else should.

    @param issuer: the account key nats-server trusts (C{auth_callout.issuer}).
    @param lookup: primary → registry record or C{None}; a cached record
        (L{Lookup.cached}) is used without waiting, else it is fetched.
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
        self._account_json = json.dumps(account)
        self._issuer_json = json.dumps(issuer.public)
        #: owner key → the rendered C{nats} section of its user JWT
        self._sections: OrderedDict[tuple[str, str | None], str] = OrderedDict()

    async def respond(self, token: bytes) -> bytes:
        """
        The reply payload for one request payload. Never raises.
        """
        pending = self.prepare(token)
        if isinstance(pending, bytes):
            return pending
        answer = self.complete(pending)
        if isinstance(answer, bytes):
            return answer
        return await self.finish(pending, answer)

    def prepare(self, token: bytes) -> bytes | _Pending:
        """
        Check a request as far as the registry lookup: the reply when it
        is already decided (a refusal), else what L{complete} or
        L{finish} needs. Never raises.
        """
        now = self.clock()
        try:
            claims = jwt.decode(token, [SERVER], "authorization_request", now=now)
            request = claims["nats"]
            user_nkey = request.get("user_nkey")
            server = request.get("server_id")
            server_id = server.get("id") if isinstance(server, dict) else None
            if not isinstance(user_nkey, str) or not _USER_NKEY.fullmatch(user_nkey):
                raise InvalidKey("the request's user_nkey is not a user key")
            public_key_bytes(SERVER, server_id)
        except (jwt.JWTError, InvalidKey, TypeError, AttributeError) as e:
            self.log.warn("Refusing a malformed authorization request: {reason}", reason=str(e))
            return b""
        # checked just above
        server_id = cast(str, server_id)
        try:
            if claims.get("aud") != REQUEST_AUDIENCE:
                raise RefusedError("not an authorization request")
            primary = self._authenticate(request)
        except RefusedError as e:
            return self._refuse(request, user_nkey, server_id, now, str(e))
        except Exception:
            return self._internal_error(user_nkey, server_id, now)
        return _Pending(request, user_nkey, server_id, now, primary)

    def complete(self, pending: _Pending) -> bytes | Deferred[Any] | Awaitable[Any]:
        """
        Ask the registry's cache: the reply, if the record is there;
        else the fetch to wait for, to hand to L{finish}. Never raises.
        """
        try:
            record = self.lookup.cached(pending.primary)
        except Exception:
            return self._lookup_failed(pending)
        if record is None:
            return self.lookup.fetch(pending.primary)
        return self._decide(pending, record)

    async def finish(self, pending: _Pending, answer: Any = None) -> bytes:
        """
        The reply, once the registry has answered (C{answer}, from
        L{complete}; asked here when not given). Never raises.
        """
        try:
            if answer is None:
                answer = self.lookup.fetch(pending.primary)
            record = await resolve(answer)
        except asyncio.CancelledError:
            raise
        except Exception:
            return self._lookup_failed(pending)
        return self._decide(pending, record)

    def refuse_busy(self, pending: _Pending) -> bytes:
        """
        The refusal for a request not looked up because too many look-ups
        are waiting: the client retries later.
        """
        return self._response(
            pending.user_nkey, pending.server_id, '"error":"busy, retry later"', pending.now
        )

    def _lookup_failed(self, pending: _Pending) -> bytes:
        self.log.failure("Registry lookup failed for {primary}", primary=pending.primary)
        return self._refuse(
            pending.request, pending.user_nkey, pending.server_id, pending.now,
            "registry unavailable",
        )

    def _decide(self, pending: _Pending, record: Any) -> bytes:
        if record is None:
            return self._refuse(
                pending.request, pending.user_nkey, pending.server_id, pending.now, "unknown key"
            )
        try:
            user_jwt = self._user_jwt(
                pending.user_nkey, pending.primary, _record_name(record), pending.now,
                _device(pending.request),
            )
            return self._response(
                pending.user_nkey, pending.server_id, f'"jwt":"{user_jwt}"', pending.now
            )
        except Exception:
            return self._internal_error(pending.user_nkey, pending.server_id, pending.now)

    def _refuse(
        self, request: dict[str, Any], user_nkey: str, server_id: str, now: float, reason: str
    ) -> bytes:
        self.log.info(
            "NATS connection refused: {reason} (client {client})",
            reason=reason,
            client=_client_label(request),
        )
        return self._response(user_nkey, server_id, '"error":' + _json(reason), now)

    def _internal_error(self, user_nkey: str, server_id: str, now: float) -> bytes:
        # A request shape nobody anticipated: refuse, never leave the
        # client waiting for the server's auth timeout.
        self.log.failure("Refusing an authorization request that could not be handled")
        return self._response(user_nkey, server_id, '"error":"internal error"', now)

    def _authenticate(self, request: dict[str, Any]) -> str:
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
            crypto_sign_open(_decode_nonce_signature(sig) + nonce.encode("ascii"), key)
        except (InvalidKey, BadSignatureError, NaclValueError, UnicodeEncodeError) as e:
            raise RefusedError("bad nonce signature") from e
        return format_primary(key)

    def _section(self, primary: str, device: str | None = None) -> str:
        """
        The C{nats} section of a user JWT for C{primary} connecting as
        C{device}, rendered once per key and device (it depends on
        nothing else).
        """
        section = self._sections.get((primary, device))
        if section is None:
            section = _json(
                {
                    "type": "user",
                    "subs": -1,
                    "data": -1,
                    "payload": -1,
                    **user_permissions(primary.removeprefix("ed25519:"), device),
                    "version": 2,
                }
            )
            self._sections[(primary, device)] = section
            if len(self._sections) > 10_000:
                self._sections.popitem(last=False)
        return section

    def _user_jwt(
        self, user_nkey: str, primary: str, name: str | None, now: float,
        device: str | None = None,
    ) -> str:
        # the same claims jwt.encode would make from a dict, rendered from
        # parts: user_nkey and the keys are base32/hex, safe in a string
        name_member = ',"name":' + _json(name) if name else ""
        section = self._section(primary, device)
        unsigned = (
            f'{{"sub":"{user_nkey}","aud":{self._account_json},"exp":{int(now) + self.ttl},'
            f'"nats":{section}{name_member},"iss":{self._issuer_json},'
            f'"iat":{int(now)}}}'
        )
        return jwt.encode_serialised(unsigned.encode("utf-8"), self.issuer)

    def _response(self, user_nkey: str, server_id: str, body: str, now: float) -> bytes:
        unsigned = (
            f'{{"sub":"{user_nkey}","aud":"{server_id}",'
            f'"nats":{{"type":"authorization_response",{body},"version":2}},'
            f'"iss":{self._issuer_json},"iat":{int(now)}}}'
        )
        return jwt.encode_serialised(unsigned.encode("utf-8"), self.issuer).encode("ascii")


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _device(request: dict[str, Any]) -> str | None:
    """
    The device the client names in its connection name (C{kez:<device>}),
    whose own durable consumer it is granted; C{None} for any other name.
    """
    opts = request.get("connect_opts")
    return device_of_connection(opts.get("name")) if isinstance(opts, dict) else None


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
    request whose record is not cached is answered in its own task and a
    slow lookup never holds up the connections queued behind it.

    Both queues are bounded, so a connect storm while the database is slow
    costs bounded memory: at most C{max_lookups} look-ups wait at once
    (past that a request is refused at once with C{"busy"}: the client
    retries), and at most C{max_pending} requests wait unread in nats-py
    (past that nats-py drops them, nats-server times the client out, and
    L{kezchat.natsbridge.connection.NatsConnection.dropped} counts them).
    L{busy} counts the refusals.
    """

    log = Logger()

    def __init__(
        self,
        responder: CalloutResponder,
        max_lookups: int = 512,
        max_pending: int = 8192,
        on_busy: Callable[[], None] = lambda: None,
    ) -> None:
        """
        @param on_busy: told of each request refused past C{max_lookups}
            (for the C{kezchat_nats_callout_busy_total} metric).
        """
        self.responder = responder
        self.on_busy = on_busy
        self.max_lookups = max_lookups
        self.max_pending = max_pending
        #: requests refused because C{max_lookups} look-ups were waiting
        self.busy = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._sub: Any = None
        self._nc: Any = None

    async def start(self, nc: Any, queue: str = CALLOUT_QUEUE) -> None:
        """
        Subscribe, and return once nats-server has accepted the
        subscription: from then on clients can log in.

        @raise NatsSetupError: the broker refused the subscription (the
            chat-server's user may not subscribe to the callout subject).
        """
        if self._sub is not None and self._nc is nc:
            return  # already serving on this connection
        self._nc = nc
        before = nc.last_error
        sub = await nc.subscribe(
            CALLOUT_SUBJECT, queue=queue, cb=self._on_request, pending_msgs_limit=self.max_pending
        )
        try:
            await flush(nc)
            error = nc.last_error
            if error is not before and "permissions violation" in str(error).lower():
                raise NatsSetupError(
                    f"nats-server refused the callout's subscription to {CALLOUT_SUBJECT}"
                    f" ({error}): the chat-server's NATS user must be allowed to subscribe"
                    " to it (auth_callout.auth_users, and no permissions block that denies it)"
                )
        except BaseException:
            # a failed start leaves nothing behind: it is retried whole
            try:
                await sub.unsubscribe()
            except Exception:
                pass
            raise
        self._sub = sub

    async def stop(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            await sub.unsubscribe()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _on_request(self, msg: Any) -> None:
        responder = self.responder
        pending = responder.prepare(msg.data)
        if isinstance(pending, bytes):
            await self._reply(msg, pending)
            return
        answer = responder.complete(pending)
        if isinstance(answer, bytes):
            # a returning client, its record cached: answered here,
            # without a task per request
            await self._reply(msg, answer)
            return
        if len(self._tasks) >= self.max_lookups:
            self.busy += 1
            self.on_busy()
            if self.busy == 1 or self.busy % 1000 == 0:
                self.log.warn(
                    "Refusing NATS logins: {count} registry look-ups already waiting"
                    " ({busy} refused so far)", count=len(self._tasks), busy=self.busy,
                )
            if inspect.iscoroutine(answer):
                answer.close()
            await self._reply(msg, responder.refuse_busy(pending))
            return
        task = asyncio.ensure_future(self._answer(msg, pending, answer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, msg: Any, pending: _Pending, answer: Awaitable[Any]) -> None:
        await self._reply(msg, await self.responder.finish(pending, answer))

    async def _reply(self, msg: Any, reply: bytes) -> None:
        if not msg.reply:
            return
        try:
            await self._nc.publish(msg.reply, reply)
        except Exception:
            # The connection dropped mid-answer; the server times the
            # client out and it retries.
            self.log.failure("Could not answer an authorization request")
