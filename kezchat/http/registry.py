"""
Routes of the handle registry and WebFinger (SPEC §3.1).
"""

from __future__ import annotations

from twisted.web.iweb import IRequest

from kezchat.errors import KezError
from kezchat.http.clientip import ClientAddress
from kezchat.http.errors import json_response, read_json
from kezchat.http.remotes import RemoteDirectory, other_server
from kezchat.http.routing import Routes
from kezchat.metrics import Metrics
from kezchat.registry import Registry
from kezchat.relay.limits import Limiter

REGISTRATION_CAP = 64 * 1024
#: what a registration pre-check answers as "not available" (anything
#: else is an error of the check itself)
REGISTRATION_REFUSALS = frozenset(
    {"invalid_handle", "wrong_server", "reserved_handle", "handle_taken"}
)


def install(
    routes: Routes,
    registry: Registry,
    limiter: Limiter,
    client_address: ClientAddress,
    metrics: Metrics,
    remote: RemoteDirectory | None = None,
) -> None:
    """
    @param remote: answers lookups of handles and keys of other servers
        (federation); without it they are C{not_found}.
    """

    @routes.route("/v1/register", methods=["POST"], name="register", body_cap=REGISTRATION_CAP)
    async def register(request: IRequest) -> bytes:
        await limiter.check(client_address(request))
        body = read_json(request)
        record = await registry.register(body)
        metrics.registrations.inc()
        request.setHeader(b"location", f"/v1/u/{record.local}".encode())
        return json_response(request, registry.record_json(record), 201)

    @routes.route("/v1/register/check", methods=["GET"], name="register_check")
    async def register_check(request: IRequest) -> bytes:
        # Always 200 when the question could be asked: the answer "no" is
        # not an error of this request (and a browser logs every 4xx).
        given = request.args.get(b"handle") or []
        if len(given) != 1:
            raise KezError("bad_request", "give exactly one handle=<handle>")
        try:
            text = given[0].decode("utf-8")
        except UnicodeDecodeError:
            raise KezError("bad_request", "handle is not UTF-8") from None
        try:
            handle = await registry.availability(text)
        except KezError as e:
            if e.code not in REGISTRATION_REFUSALS:
                raise
            return json_response(request, {"available": False, **e.to_json()})
        answer = {"handle": handle.local, "fqhn": handle.fqhn, "available": True}
        wait = await limiter.wait(client_address(request))
        if wait:
            answer["available"] = False
            answer["error"] = {
                "code": "rate_limited",
                "message": f"too many registrations from this address; try again in {wait} s",
                "retry_after": wait,
            }
        return json_response(request, answer)

    @routes.route("/v1/u/<path:handle>", methods=["GET"], name="lookup")
    async def lookup(request: IRequest, handle: str) -> bytes:
        parsed = registry.parse_lookup(handle)
        if remote is not None and parsed.server != registry.policy.server:
            return json_response(request, await remote.lookup(parsed))
        record = await registry.lookup(handle)
        return json_response(request, registry.record_json(record))

    @routes.route("/v1/by-primary/<path:primary>", methods=["GET"], name="by_primary")
    async def by_primary(request: IRequest, primary: str) -> bytes:
        domain = other_server(request, registry.policy.server)
        if domain is not None:
            if remote is None:
                raise KezError("not_found", "this server does not look up other servers' keys")
            return json_response(request, await remote.by_primary(domain, primary))
        record = await registry.by_primary(primary)
        return json_response(request, registry.record_json(record))

    @routes.route("/.well-known/webfinger", methods=["GET"], name="webfinger")
    async def webfinger(request: IRequest) -> bytes:
        request.setHeader(b"access-control-allow-origin", b"*")
        resources = request.args.get(b"resource") or []
        if len(resources) != 1:
            raise KezError("bad_request", "give exactly one resource=acct:<handle>@<server>")
        try:
            resource = resources[0].decode("utf-8")
        except UnicodeDecodeError:
            raise KezError("bad_request", "resource is not UTF-8") from None
        scheme, _, account = resource.partition(":")
        if scheme.lower() != "acct" or "@" not in account:
            raise KezError("bad_request", "resource must be acct:<handle>@<server>")
        try:
            handle = registry.parse_lookup(account)
        except KezError:
            raise KezError("bad_request", "resource must be acct:<handle>@<server>") from None
        record = await registry.lookup(handle.fqhn)
        return json_response(
            request, registry.webfinger_json(record), content_type=b"application/jrd+json"
        )
