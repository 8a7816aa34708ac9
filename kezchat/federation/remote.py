"""
Talking to other servers: fetching their server key and answering
lookups of their handles (C{GET /v1/u/bob@b.example} on alice's server).

A remote record is passed on only with the other server's signed log
head and the inclusion proof of that handle under it, and only after
this server checked them itself (the same check clients run,
L{kezchat.client.keydir.KeyDirectory.vouch}): clients verify again, as
they do for local keys, so nothing rests on this server's word.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import treq
from twisted.internet.error import ConnectError, DNSLookupError, TimeoutError
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IPolicyForHTTPS

from kezchat.client.errors import ServerError
from kezchat.client.http import read_body
from kezchat.client.keydir import DirectoryError, KeyDirectory
from kezchat.errors import KezError
from kezchat.federation.cache import TTLCache
from kezchat.federation.resolve import Resolver
from kezchat.identity.handles import Handle
from kezchat.identity.keys import InvalidKey, parse_primary

#: the largest answer read from another server
MAX_ANSWER = 256 * 1024
#: seconds a request to another server may take
TIMEOUT = 10.0
#: seconds a record, a "no such handle" and a server key are kept
RECORD_TTL = 60.0
NEGATIVE_TTL = 10.0
KEY_TTL = 300.0


class _Answers:
    """
    A fixed head and inclusion proof, for checking them with
    L{KeyDirectory} (which asks a source for them).
    """

    def __init__(self, head: Any, inclusion: Any) -> None:
        self._head = head
        self._inclusion = inclusion

    async def log_head(self) -> Any:
        return self._head

    async def log_inclusion(self, handle: str, size: int) -> Any:
        return self._inclusion

    async def log_consistency(self, first: int, second: int) -> Any:
        raise DirectoryError("inconsistent", "no consistency proof is asked here")


class _NoHeads:
    """
    A head store that keeps nothing: each remote answer is checked on
    its own (clients keep heads and check consistency across answers).
    """

    def get(self, server: str) -> dict[str, Any] | None:
        return None

    def put(self, server: str, head: dict[str, Any]) -> None:
        pass


class RemoteServers:
    """
    This server's HTTP client for other servers.
    """

    def __init__(
        self,
        resolver: Resolver,
        reactor: Any,
        clock: Callable[[], float],
        tls_policy: IPolicyForHTTPS | None = None,
    ) -> None:
        """
        @param tls_policy: how HTTPS certificates are checked (default:
            verified against the system's trust roots and the host name).
        """
        self.resolver = resolver
        self._pool = HTTPConnectionPool(reactor, persistent=False)
        self._agent = Agent(
            reactor, contextFactory=tls_policy or BrowserLikePolicyForHTTPS(), pool=self._pool
        )
        self._records: TTLCache[dict[str, Any] | None] = TTLCache(clock)
        self._keys: TTLCache[str] = TTLCache(clock, size=256)

    async def request(
        self, domain: str, method: str, path: str, body: bytes = b"",
        headers: Headers | None = None,
    ) -> tuple[int, Any]:
        """
        Send a request to C{domain}'s server (after the policy check);
        its status and JSON answer.

        @raise KezError: the policy's refusal, or C{remote_failed} when the
            server cannot be reached or answers what is not JSON.
        """
        self.resolver.check(domain)
        url = self.resolver.base_url(domain) + path
        try:
            response = await treq.request(
                method, url, data=body or None, headers=headers, agent=self._agent,
                timeout=TIMEOUT,
            )
            raw = await read_body(response, MAX_ANSWER)
        except ServerError as e:
            raise KezError("remote_failed", f"{domain} answered too much: {e}") from None
        except (ConnectError, DNSLookupError, TimeoutError, OSError) as e:
            raise KezError("remote_failed", f"{domain} cannot be reached: {e}") from None
        except Exception as e:  # TLS failures and dropped connections come in many types
            raise KezError("remote_failed", f"{domain} cannot be reached: {e!r}") from None
        try:
            return response.code, json.loads(raw)
        except ValueError:
            raise KezError(
                "remote_failed", f"{domain} answered {response.code}, not JSON"
            ) from None

    async def _get(self, domain: str, path: str) -> Any:
        code, answer = await self.request(domain, "GET", path)
        if code == 404:
            raise KezError("not_found", f"{domain} has no {path}")
        if code != 200 or not isinstance(answer, dict):
            raise KezError("remote_failed", f"{domain} answered {code} to {path}")
        return answer

    async def server_key(self, domain: str) -> str:
        """
        The key C{domain} publishes at C{GET /v1/server} (kept a while).

        @raise KezError: C{remote_failed} when it cannot be fetched or the
            answer names another server or no key.
        """
        domain = domain.lower()
        key = self._keys.get(domain)
        if key is not None:
            return key
        try:
            answer = await self._get(domain, "/v1/server")
        except KezError as e:
            if e.code != "not_found":
                raise
            raise KezError("remote_failed", f"{domain} publishes no server key") from None
        key = answer.get("key")
        try:
            parse_primary(key)
        except InvalidKey:
            raise KezError("remote_failed", f"{domain} publishes no valid server key") from None
        named = answer.get("server")
        if named != domain:
            raise KezError(
                "remote_failed", f"the server at {domain}'s address says it is {named!r}"
            )
        self._keys.put(domain, key, KEY_TTL)
        return str(key)

    async def lookup(self, handle: Handle) -> dict[str, Any]:
        """
        C{handle}'s record from its own server, with that server's log head
        and the inclusion proof under it (C{"directory": {"head",
        "inclusion"}}), checked.

        @raise KezError: the policy's refusal, C{not_found} (kept briefly),
            or C{remote_failed} when the server cannot be reached or its
            answer does not verify.
        """
        self.resolver.check(handle.server)
        cached = self._records.get(handle.fqhn)
        if cached is not None:
            return cached
        if self._records.get("!" + handle.fqhn) is not None:
            raise KezError("not_found", f"{handle.fqhn} is not registered")
        try:
            record = await self._get(handle.server, f"/v1/u/{quote(handle.local)}")
        except KezError as e:
            if e.code == "not_found":
                self._records.put("!" + handle.fqhn, {}, NEGATIVE_TTL)
                raise KezError("not_found", f"{handle.fqhn} is not registered") from None
            raise
        if record.get("fqhn") != handle.fqhn:
            raise KezError("remote_failed", f"{handle.server} answered for another handle")
        answer = await self._vouched(handle.server, record)
        self._records.put(handle.fqhn, answer, RECORD_TTL)
        return answer

    async def by_primary(self, domain: str, primary: str) -> dict[str, Any]:
        """
        The record C{domain} binds to C{primary} (C{GET /v1/by-primary/<key>
        ?server=<domain>}), with the same attached, checked proof as
        L{lookup} and kept as long.

        @raise KezError: as L{lookup}; C{bad_request} for a malformed key.
        """
        domain = domain.lower()
        self.resolver.check(domain)
        try:
            parse_primary(primary)
        except InvalidKey:
            raise KezError("bad_request", "expected ed25519:<64 lowercase hex>") from None
        name = f"{primary}@{domain}"
        cached = self._records.get(name)
        if cached is not None:
            return cached
        if self._records.get("!" + name) is not None:
            raise KezError("not_found", f"no handle of {domain} is bound to this key")
        try:
            record = await self._get(domain, f"/v1/by-primary/{quote(primary)}")
        except KezError as e:
            if e.code == "not_found":
                self._records.put("!" + name, {}, NEGATIVE_TTL)
                raise KezError(
                    "not_found", f"no handle of {domain} is bound to this key"
                ) from None
            raise
        fqhn = record.get("fqhn")
        if (
            record.get("primary") != primary
            or not isinstance(fqhn, str)
            or fqhn.rpartition("@")[2] != domain
        ):
            raise KezError("remote_failed", f"{domain} answered for another key or domain")
        answer = await self._vouched(domain, record)
        self._records.put(name, answer, RECORD_TTL)
        return answer

    async def _vouched(self, domain: str, record: dict[str, Any]) -> dict[str, Any]:
        """
        C{record} (of C{domain}) with C{domain}'s head and inclusion proof
        attached, after checking them.
        """
        head = await self._get(domain, "/v1/log/head")
        size = head.get("size")
        inclusion = await self._get(
            domain, f"/v1/log/inclusion?handle={quote(str(record.get('fqhn')))}&size={size}"
        )
        directory = KeyDirectory(domain, _Answers(head, inclusion), _NoHeads())
        try:
            await directory.vouch(record)
        except DirectoryError as e:
            raise KezError(
                "remote_failed", f"{domain}'s key directory does not vouch for it: {e}"
            ) from None
        return {**record, "directory": {"head": head, "inclusion": inclusion}}

    async def consistency(self, domain: str, first: int, second: int) -> dict[str, Any]:
        """
        C{domain}'s consistency proof between two of its heads, passed on
        as it is (C{GET /v1/log/consistency?server=<domain>}): a client
        that kept an older head of C{domain} checks it against the newer
        one attached to a lookup.
        """
        self.resolver.check(domain)
        answer: dict[str, Any] = await self._get(
            domain.lower(), f"/v1/log/consistency?from={first}&to={second}"
        )
        return answer

    def close(self) -> Any:
        return self._pool.closeCachedConnections()
