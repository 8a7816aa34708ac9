"""
The handle registry: who holds which handle (SPEC §3.1).

A registration is a signed statement by a primary key that it claims a
handle on this server. The checks run in SPEC order, each with its own
error code, so a client can tell exactly what to fix.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred, succeed

from kezchat.errors import KezError
from kezchat.identity.handles import (
    RESERVED_HANDLES,
    RESERVED_PREFIXES,
    Handle,
    InvalidHandle,
    is_reserved,
    parse_handle,
    validate_local,
)
from kezchat.identity.jcs import canonical_json
from kezchat.identity.keys import SIGNATURE_ALG, InvalidKey, parse_primary, verify_jcs
from kezchat.protocol.registration import REGISTRATION_TAG, REGISTRATION_TYPE
from kezchat.storage.interfaces import HandleRecord, HandleTaken, PrimaryTaken, RegistryStore
from kezchat.timeutil import format_rfc3339, parse_rfc3339

REGISTRATION_SKEW = 300.0
#: records remembered in memory; a binding never changes once made
CACHE_SIZE = 65536


class RecordCache:
    """
    A bounded, least-recently-used map of handle records: the one cache of
    registry answers, for the relay, the NATS bridge and the NATS callout
    alike.

    Handles are never unbound or rebound, so a record once read stays
    true and entries never go stale; the bound only caps memory. Misses
    are never cached: another instance may register the handle a moment
    later, and it must work at once.
    """

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self._size = size
        self._records: OrderedDict[str, HandleRecord] = OrderedDict()

    def get(self, key: str) -> HandleRecord | None:
        """
        The record under C{key}, now the most recently used; C{None} if
        not cached.
        """
        record = self._records.get(key)
        if record is not None:
            self._records.move_to_end(key)
        return record

    def put(self, key: str, record: HandleRecord) -> None:
        """
        Remember C{record}, forgetting the least recently used past the bound.
        """
        self._records[key] = record
        self._records.move_to_end(key)
        if len(self._records) > self._size:
            self._records.popitem(last=False)

    def __len__(self) -> int:
        return len(self._records)


@dataclass(frozen=True)
class RegistryPolicy:
    """
    What a registry enforces and how it names things.

    @ivar server: the domain handles are registered on.
    @ivar base_url: this chat-server's public URL (WebFinger links).
    @ivar sig_base_url: the signature server's public URL (sigchain links),
        or C{None} when there is none and no sigchain is advertised.
    @ivar reserved: words no local part may read as or contain as a piece
        (see L{is_reserved}).
    @ivar reserved_prefixes: what no local part may begin with.
    """

    server: str
    base_url: str
    sig_base_url: str | None
    reserved: frozenset[str] = RESERVED_HANDLES
    reserved_prefixes: tuple[str, ...] = RESERVED_PREFIXES


def _require(value: Any, kind: type, what: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise KezError("bad_request", f"{what} must be a {kind.__name__}")
    return value


class Registry:
    """
    Registers handles and answers lookups. Knows nothing of HTTP.
    """

    def __init__(
        self,
        store: RegistryStore,
        policy: RegistryPolicy,
        clock: Callable[[], float],
        cache_size: int = CACHE_SIZE,
    ) -> None:
        """
        @param clock: seconds since the epoch (registration timestamps).
        @param cache_size: records remembered by fqhn, and again by primary:
            the relay resolves sender and recipient of every message, the
            NATS callout every connection, without a trip to the database.
        """
        self.store = store
        self.policy = policy
        self._clock = clock
        self._by_fqhn = RecordCache(cache_size)
        self._by_primary = RecordCache(cache_size)

    def _remember(self, record: HandleRecord) -> HandleRecord:
        self._by_fqhn.put(record.fqhn, record)
        self._by_primary.put(record.primary, record)
        return record

    async def _cached(
        self,
        cache: RecordCache,
        key: str,
        fetch: Callable[[str], Awaitable[HandleRecord | None]],
    ) -> HandleRecord | None:
        record = cache.get(key)
        if record is not None:
            return record
        fetched = await fetch(key)
        return self._remember(fetched) if fetched is not None else None

    # -- registration -----------------------------------------------------

    def check_registration(self, body: Any) -> HandleRecord:
        """
        Every check of a registration that needs no database, in SPEC
        order; returns the record to store.

        @raise KezError: the first check that fails.
        """
        body = _require(body, dict, "the body")
        if body.get("kez") != REGISTRATION_TAG:
            raise KezError("bad_request", f'"kez" must be "{REGISTRATION_TAG}"')
        payload = _require(body.get("payload"), dict, '"payload"')
        signature = _require(body.get("signature"), dict, '"signature"')
        if payload.get("type") != REGISTRATION_TYPE:
            raise KezError("bad_request", f'payload "type" must be "{REGISTRATION_TYPE}"')
        if payload.get("version") != 1 or isinstance(payload.get("version"), bool):
            raise KezError("bad_request", 'payload "version" must be 1')
        primary = payload.get("primary")
        try:
            parse_primary(primary)
        except InvalidKey:
            raise KezError("bad_request", 'payload "primary" must be ed25519:<64 hex>') from None
        if signature.get("alg") != SIGNATURE_ALG:
            raise KezError("bad_signature", f'signature "alg" must be "{SIGNATURE_ALG}"')
        if signature.get("key") != primary:
            raise KezError("bad_signature", "the signing key is not the registered primary")
        if not verify_jcs(primary, payload, signature.get("sig")):
            raise KezError("bad_signature", "the signature does not verify over JCS(payload)")
        server = payload.get("server")
        if not isinstance(server, str) or server != self.policy.server:
            raise KezError("wrong_server", f"this server registers handles on {self.policy.server}")
        handle = self._signed_handle(payload.get("handle"))
        self._check_reserved(handle)
        try:
            created = parse_rfc3339(payload.get("created_at"))
        except ValueError:
            raise KezError("bad_request", '"created_at" must be an RFC 3339 timestamp') from None
        now = self._clock()
        if abs(now - created) > REGISTRATION_SKEW:
            raise KezError(
                "stale_timestamp",
                f"created_at is more than {REGISTRATION_SKEW:g} s from the server's clock",
            )
        return HandleRecord(handle.local, handle.server, primary, now)

    def _signed_handle(self, value: Any) -> Handle:
        """
        The handle of a signed payload: the canonical lowercase local part,
        or the lowercase fqhn on this server.
        """
        if not isinstance(value, str):
            raise KezError("invalid_handle", '"handle" must be a string')
        local, sep, server = value.partition("@")
        if sep and server != self.policy.server:
            raise KezError("wrong_server", f"this server registers handles on {self.policy.server}")
        try:
            return Handle(validate_local(local), self.policy.server)
        except InvalidHandle as e:
            raise KezError("invalid_handle", str(e)) from None

    def _check_reserved(self, handle: Handle) -> None:
        """
        (see L{is_reserved}).
        """
        if is_reserved(handle.local, self.policy.reserved, self.policy.reserved_prefixes):
            raise KezError("reserved_handle", f"{handle.local!r} is reserved")

    async def availability(self, text: str) -> Handle:
        """
        Whether a registration of C{text} would be accepted, as far as can
        be told before there is a key: the same handle checks as
        L{check_registration}, then whether it is taken. Clients ask before
        a person writes down words for a handle they cannot have.

        @return: the handle, when it is free.
        @raise KezError: the code the registration would get
            (C{invalid_handle}, C{wrong_server}, C{reserved_handle},
            C{handle_taken}).
        """
        handle = self._signed_handle(text.lower())
        self._check_reserved(handle)
        if await self._cached(self._by_fqhn, handle.fqhn, self.store.handle) is not None:
            raise KezError("handle_taken", f"{handle.fqhn} is already registered")
        return handle

    async def register(self, body: Any) -> HandleRecord:
        """
        Check and store a registration. Uniqueness is decided by the store,
        so it holds however many registrations race.
        """
        record = self.check_registration(body)
        # the key directory's leaf: the request exactly as accepted
        try:
            leaf = canonical_json(body)
        except ValueError:
            raise KezError("bad_request", "the registration has no canonical JSON form") from None
        try:
            return self._remember(await self.store.add_handle(record, leaf))
        except HandleTaken:
            raise KezError("handle_taken", f"{record.fqhn} is already registered") from None
        except PrimaryTaken:
            raise KezError(
                "primary_taken", "this key is already bound to another handle"
            ) from None

    # -- lookups ----------------------------------------------------------

    def parse_lookup(self, text: str) -> Handle:
        """
        A handle as a client may write it in a lookup: bare or qualified,
        any case.
        """
        try:
            return parse_handle(text, self.policy.server)
        except InvalidHandle as e:
            raise KezError("invalid_handle", str(e)) from None

    async def lookup(self, text: str) -> HandleRecord:
        """
        The record of a handle registered here.

        @param text: a handle as a client writes it (see L{parse_lookup}).
        @raise KezError: C{invalid_handle}, or C{not_found} (also for a
            handle on another server).
        """
        handle = self.parse_lookup(text)
        record = None
        if handle.server == self.policy.server:
            record = await self._cached(self._by_fqhn, handle.fqhn, self.store.handle)
        if record is None:
            raise KezError("not_found", f"{handle.fqhn} is not registered here")
        return record

    async def by_primary(self, primary: str) -> HandleRecord:
        """
        The record bound to a primary key.

        @raise KezError: C{bad_request} for a malformed key, C{not_found}
            when no handle is bound to it.
        """
        try:
            parse_primary(primary)
        except InvalidKey:
            raise KezError("bad_request", "expected ed25519:<64 lowercase hex>") from None
        record = await self._cached(self._by_primary, primary, self.store.by_primary)
        if record is None:
            raise KezError("not_found", "no handle is bound to this key")
        return record

    def cached_primary(self, primary: str) -> HandleRecord | None:
        """
        The record bound to C{primary} if this registry has it in memory,
        else C{None} (unregistered, or not cached: ask L{find_primary}).
        Synchronous: the NATS callout answers a returning client with it.
        """
        return self._by_primary.get(primary)

    def find_primary(self, primary: str) -> Deferred[HandleRecord | None]:
        """
        The record bound to C{primary}, or C{None}: for the NATS callout
        and the bridge, which have their own error handling.
        """
        record = self._by_primary.get(primary)
        if record is not None:
            return succeed(record)
        return ensureDeferred(self._cached(self._by_primary, primary, self.store.by_primary))

    # -- rendering --------------------------------------------------------

    def sigchain_url(self, primary: str) -> str | None:
        """
        Where the signature server publishes C{primary}'s sigchain; C{None}
        when no sig-server is configured.
        """
        if self.policy.sig_base_url is None:
            return None
        return f"{self.policy.sig_base_url}/v1/sigchains/ed25519/{primary.split(':', 1)[1]}"

    def record_json(self, record: HandleRecord) -> dict[str, Any]:
        """
        The public record (SPEC §3.1).
        """
        sigchain_url = self.sigchain_url(record.primary)
        return {
            "handle": record.local,
            "fqhn": record.fqhn,
            "primary": record.primary,
            **({"sigchain_url": sigchain_url} if sigchain_url else {}),
            "registered_at": format_rfc3339(record.registered_at),
            **({"log_index": record.log_index} if record.log_index is not None else {}),
        }

    def webfinger_json(self, record: HandleRecord) -> dict[str, Any]:
        """
        The RFC 7033 JRD of a record.
        """
        record_url = f"{self.policy.base_url}/v1/u/{record.local}"
        links = [{"rel": "self", "type": "application/json", "href": record_url}]
        sigchain_url = self.sigchain_url(record.primary)
        if sigchain_url:
            links.append(
                {
                    "rel": "https://kez.lat/rel/sigchain",
                    "type": "application/json",
                    "href": sigchain_url,
                }
            )
        return {
            "subject": f"acct:{record.fqhn}",
            "aliases": [record_url],
            "links": links,
            "properties": {"https://kez.lat/ns/primary": record.primary},
        }
