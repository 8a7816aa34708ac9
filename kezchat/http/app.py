"""
The chat-server's HTTP resource: every API route, the web app, metrics.

L{ChatResource} is what an embedding application mounts in its own
C{Site} (at the root or under a sub-path); L{KezChatHTTP} builds it from
the domain objects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET

from kezchat.http import meta, registry
from kezchat.http.clientip import ClientAddress
from kezchat.http.errors import json_response
from kezchat.http.request import DEFAULT_BODY_CAP, KezSite
from kezchat.http.routing import Routes
from kezchat.metrics import Metrics
from kezchat.ratelimit import RateLimiter
from kezchat.registry import Registry

#: first path segments served by the API, never by the web app fallback
API_SEGMENTS = frozenset({b"v1", b".well-known", b"metrics"})


@dataclass
class KezChatHTTP:
    """
    The parts the HTTP layer calls. Built by L{kezchat.service}.
    """

    registry: Registry
    metrics: Metrics
    clock: Callable[[], float]
    register_limiter: RateLimiter
    client_address: ClientAddress = field(default_factory=ClientAddress)
    nats_status: Callable[[], str] = lambda: "disabled"
    web: IResource | None = None
    #: path prefix → body cap in bytes; the longest matching prefix wins
    body_caps: dict[bytes, int] = field(default_factory=dict)
    #: extra route installers: callables taking the L{Routes}
    extensions: list[Callable[[Routes], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.routes = Routes(self.metrics)
        registry.install(
            self.routes, self.registry, self.register_limiter, self.client_address, self.metrics
        )
        meta.install(self.routes, self.registry.policy.server, self.metrics, self._nats_status)
        for extend in self.extensions:
            extend(self.routes)

    def _nats_status(self) -> str:
        return self.nats_status()

    def resource(self) -> ChatResource:
        return ChatResource(self)

    def body_cap_for(self, path: bytes) -> int:
        path = path.split(b"?", 1)[0]
        best, cap = -1, DEFAULT_BODY_CAP
        for prefix, limit in self.body_caps.items():
            if path.startswith(prefix) and len(prefix) > best:
                best, cap = len(prefix), limit
        return cap

    def site(self, reactor: object) -> KezSite:
        """
        A C{Site} serving L{resource} with the per-path body caps enforced
        while reading.
        """
        site = KezSite(
            self.resource(),
            body_cap_for=self.body_cap_for,
            on_refused=lambda code: self.metrics.rejections.labels(code).inc(),
            reactor=reactor,
        )
        site.displayTracebacks = False
        return site


class ChatResource(Resource):
    """
    The root of the chat-server's URL space, mountable anywhere.
    """

    isLeaf = True

    def __init__(self, http: KezChatHTTP) -> None:
        super().__init__()
        self._http = http
        self._klein = http.routes.app.resource()

    def render(self, request: IRequest) -> bytes | int:
        try:
            for segment in (*request.prepath, *request.postpath):
                segment.decode("utf-8")
        except UnicodeDecodeError:
            return json_response(
                request, {"error": {"code": "bad_request", "message": "path is not UTF-8"}}, 400
            )
        started = self._http.clock()
        request.notifyFinish().addBoth(self._finished, request, started)
        first = request.postpath[0] if request.postpath else b""
        if self._http.web is not None and first not in API_SEGMENTS:
            request.kez_route = "web"
            return self._http.web.render(request)
        return self._klein.render(request)

    def _finished(self, _: object, request: IRequest, started: float) -> None:
        metrics = self._http.metrics
        route = getattr(request, "kez_route", "unmatched")
        metrics.requests.labels(route, request.method.decode("latin-1"), str(request.code)).inc()
        if not getattr(request, "kez_streaming", False):
            metrics.latency.labels(route).observe(self._http.clock() - started)


__all__ = ["NOT_DONE_YET", "ChatResource", "KezChatHTTP"]
