"""
The chat-server's HTTP resource: every API route, the web app, metrics.

L{ChatResource} is what an embedding application mounts in its own
C{Site} (at the root or under a sub-path); L{KezChatHTTP} builds it from
the domain objects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest
from twisted.web.server import NOT_DONE_YET

from kezchat.errors import KezError
from kezchat.http import meta, registry
from kezchat.http.clientip import ClientAddress
from kezchat.http.remotes import RemoteDirectory
from kezchat.http.request import KezSite
from kezchat.http.resource import ApiResource
from kezchat.http.routedata import route_data
from kezchat.http.routing import Routes
from kezchat.http.webapp import WebApp
from kezchat.metrics import Metrics
from kezchat.registry import Registry
from kezchat.relay.limits import Limiter

#: first path segments served by the API, never by the web app fallback
API_SEGMENTS = frozenset({b"v1", b".well-known", b"metrics"})


@dataclass
class KezChatHTTP:
    """
    The parts the HTTP layer calls. Built by L{kezchat.server.service}.
    """

    registry: Registry
    metrics: Metrics
    clock: Callable[[], float]
    register_limiter: Limiter
    client_address: ClientAddress = field(default_factory=ClientAddress)
    nats_status: Callable[[], str] = lambda: "disabled"
    #: the NATS WebSocket URL healthz advertises to the web app, if any
    nats_ws_url: str | None = None
    #: C{"ok"} or C{"degraded"} (L{kezchat.storage.sqlite.SQLiteDatabase.health})
    db_health: Callable[[], str] = lambda: "ok"
    web: WebApp | None = None
    #: extra route installers: callables taking the L{Routes}
    extensions: list[Callable[[Routes], None]] = field(default_factory=list)
    #: answers lookups of other servers' handles (federation)
    remote: RemoteDirectory | None = None

    def __post_init__(self) -> None:
        self.routes = Routes(self.metrics)
        registry.install(
            self.routes, self.registry, self.register_limiter, self.client_address, self.metrics,
            self.remote,
        )
        meta.install(
            self.routes, self.registry.policy.server, self.metrics, self.nats_status,
            self.db_health, self.nats_ws_url,
        )
        for extend in self.extensions:
            extend(self.routes)

    def resource(self) -> ChatResource:
        """
        The HTTP resource alone, to mount in another C{Site}.
        """
        return ChatResource(self)

    def site(self, reactor: IReactorTime, access_log: bool = False) -> KezSite:
        """
        A C{Site} serving L{resource} with the per-path body caps enforced
        while reading.
        """
        site = KezSite(
            self.resource(),
            body_cap_for=self.routes.body_cap_for,
            on_refused=lambda code: self.metrics.rejections.labels(code).inc(),
            access_log=access_log,
            reactor=reactor,
        )
        site.displayTracebacks = False
        return site


class ChatResource(ApiResource):
    """
    The root of the chat-server's URL space, mountable anywhere: the API,
    and the web app for every path outside it.
    """

    def __init__(self, http: KezChatHTTP) -> None:
        super().__init__(http.routes, http.clock)
        self._http = http

    def dispatch(self, request: IRequest) -> bytes | int:
        first = request.postpath[0] if request.postpath else b""
        if self._http.web is not None and first not in API_SEGMENTS:
            route_data(request).route = "web"
            try:
                return self._http.web.render(request)
            except KezError as e:
                return self.routes.render_error(request, e)
        return super().dispatch(request)


__all__ = ["NOT_DONE_YET", "ChatResource", "KezChatHTTP"]
