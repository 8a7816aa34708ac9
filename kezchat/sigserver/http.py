"""
The sig-server's HTTP API (SPEC §7): thin Klein routes over L{Sigchains}.

    GET  /v1/sigchains/ed25519/<hex>          {"primary", "events"} (JCS), or
                                              JSON Lines with Accept: application/jsonl
                                              or ?format=jsonl
    POST /v1/sigchains/ed25519/<hex>/events   one event → 201 {"seq", "hash"}
    GET  /v1/healthz, GET /metrics

A key nobody has appended to answers 200 with an empty chain rather than
404: an empty chain is a valid chain, and its first append needs no set-up.
Errors: see L{kezchat.sigserver.sigchains.Sigchains.append}; an event's own
flaws are 400/401, its place in the chain (fork, gap, wrong prev, bad
revoke) a 409.

CORS is open: the web app, served from the chat-server's origin, reads and
appends to chains here, and the data is public and self-authenticating.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from kezchat import __version__
from kezchat.errors import KezError
from kezchat.http.errors import json_response, read_json
from kezchat.http.meta import health_response, install_metrics
from kezchat.http.openapi import install_openapi
from kezchat.http.request import KezSite
from kezchat.http.resource import ApiResource
from kezchat.http.routedata import route_data
from kezchat.http.routing import Routes
from kezchat.sigchain.wire import JSONL_MEDIA_TYPE
from kezchat.sigserver.metrics import SigMetrics
from kezchat.sigserver.sigchains import Sigchains

#: one event; the largest legitimate one is a few hundred bytes
EVENT_CAP = 16 * 1024

_CORS = {
    b"access-control-allow-methods": b"GET, POST, OPTIONS",
    b"access-control-allow-headers": b"Content-Type, Accept",
    b"access-control-max-age": b"86400",
}


def _wants_jsonl(request: IRequest) -> bool:
    # IRequest.args is a zope Attribute (Any); Twisted fills it with lists of bytes
    formats: list[bytes] | None = request.args.get(b"format")
    if formats:
        if formats != [b"jsonl"] and formats != [b"json"]:
            raise KezError("bad_request", "format is json or jsonl")
        return formats == [b"jsonl"]
    accept = request.getHeader(b"accept") or b""
    return JSONL_MEDIA_TYPE.encode() in accept.lower()


def install(
    routes: Routes,
    sigchains: Sigchains,
    metrics: SigMetrics,
    base_url: str,
    db_health: Callable[[], str] = lambda: "ok",
) -> None:
    @routes.route("/v1/healthz", methods=["GET"], name="healthz")
    def healthz(request: IRequest) -> bytes:
        return health_response(request, db_health(), {"service": "kezsig", "version": __version__})

    install_metrics(routes, metrics)
    install_openapi(routes, "kezsig")

    @routes.route("/v1/sigchains/ed25519/<key_hex>", methods=["GET"], name="sigchain")
    async def chain(request: IRequest, key_hex: str) -> bytes:
        jsonl = _wants_jsonl(request)
        body = await sigchains.rendered(key_hex, jsonl)
        request.setHeader(b"cache-control", b"no-cache")
        if jsonl:
            request.setHeader(b"content-type", JSONL_MEDIA_TYPE.encode())
        else:
            request.setHeader(b"content-type", b"application/json")
        return body

    @routes.route("/v1/sigchains/ed25519/<key_hex>/events", methods=["POST"], name="append")
    async def append(request: IRequest, key_hex: str) -> bytes:
        body = read_json(request)
        result = await sigchains.append(key_hex, body)
        if result.created:
            metrics.events_appended.labels(body["type"]).inc()
        request.setHeader(b"location", f"{base_url}/v1/sigchains/ed25519/{key_hex}".encode())
        return json_response(
            request, {"seq": result.seq, "hash": result.hash}, 201 if result.created else 200
        )


class SigResource(ApiResource):
    """
    The sig-server's root resource: the API with CORS on every answer.
    """

    def dispatch(self, request: IRequest) -> bytes | int:
        request.setHeader(b"access-control-allow-origin", b"*")
        if request.method == b"OPTIONS":
            route_data(request).route = "preflight"
            for name, value in _CORS.items():
                request.setHeader(name, value)
            request.setResponseCode(204)
            return b""
        return super().dispatch(request)


def build_resource(
    sigchains: Sigchains,
    metrics: SigMetrics,
    clock: Callable[[], float],
    base_url: str = "",
    db_health: Callable[[], str] = lambda: "ok",
) -> SigResource:
    """
    The resource alone, for mounting in an existing C{Site}.
    """
    routes = Routes(metrics, default_body_cap=EVENT_CAP)
    install(routes, sigchains, metrics, base_url, db_health)
    return SigResource(routes, clock)


def build_site(
    resource: SigResource, metrics: SigMetrics, reactor: IReactorTime, access_log: bool = False
) -> KezSite:
    """
    A C{Site} that refuses bodies over their route's cap (L{EVENT_CAP})
    while reading them.
    """
    site = KezSite(
        resource,
        body_cap_for=resource.routes.body_cap_for,
        on_refused=lambda code: metrics.rejections.labels(code).inc(),
        refusal_headers=((b"Access-Control-Allow-Origin", b"*"),),
        access_log=access_log,
        reactor=reactor,
    )
    site.displayTracebacks = False
    return site
