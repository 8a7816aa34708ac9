"""
Operational routes: health and metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from twisted.web.iweb import IRequest

from kezchat import __version__
from kezchat.http.errors import json_response
from kezchat.http.openapi import install_openapi
from kezchat.http.routing import Routes
from kezchat.metrics import HTTPMetrics, Metrics


def install(
    routes: Routes,
    server: str,
    metrics: Metrics,
    nats_status: Callable[[], str],
    db_health: Callable[[], str] = lambda: "ok",
    nats_ws_url: str | None = None,
) -> None:
    # where browsers reach NATS over WebSocket: the web app's live transport
    # when present, SSE otherwise (and whenever that URL does not answer)
    extra = {} if nats_ws_url is None else {"nats_ws": nats_ws_url}

    @routes.route("/v1/healthz", methods=["GET"], name="healthz")
    def healthz(request: IRequest) -> bytes:
        body = {"server": server, "version": __version__, "nats": nats_status(), **extra}
        return health_response(request, db_health(), body)

    install_metrics(routes, metrics)
    install_openapi(routes, "kezchat")


def health_response(request: IRequest, db: str, body: Mapping[str, object]) -> bytes:
    """
    A healthz answer: C{"db": "ok" | "degraded"}, and 503 while degraded
    (the database cannot store writes: a load balancer should look
    elsewhere, a supervisor should look at the disk).
    """
    healthy = db == "ok"
    return json_response(
        request,
        {"status": "ok" if healthy else "degraded", **body, "db": db},
        200 if healthy else 503,
    )


def install_metrics(routes: Routes, metrics: HTTPMetrics) -> None:
    """
    C{GET /metrics}: the Prometheus text of C{metrics}' own registry.
    """

    @routes.route("/metrics", methods=["GET"], name="metrics")
    def prometheus(request: IRequest) -> bytes:
        request.setHeader(b"content-type", metrics.content_type.encode())
        return metrics.render()
