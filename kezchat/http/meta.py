"""
Operational routes: health and metrics.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.web.iweb import IRequest

from kezchat import __version__, openapi
from kezchat.http.errors import json_response
from kezchat.http.routing import Routes
from kezchat.metrics import HTTPMetrics, Metrics


def install(
    routes: Routes, server: str, metrics: Metrics, nats_status: Callable[[], str]
) -> None:
    @routes.route("/v1/healthz", methods=["GET"], name="healthz")
    def healthz(request: IRequest) -> bytes:
        return json_response(
            request,
            {"status": "ok", "server": server, "version": __version__, "nats": nats_status()},
        )

    install_metrics(routes, metrics)
    openapi.install(routes, "kezchat")


def install_metrics(routes: Routes, metrics: HTTPMetrics) -> None:
    """
    C{GET /metrics}: the Prometheus text of C{metrics}' own registry.
    """

    @routes.route("/metrics", methods=["GET"], name="metrics")
    def prometheus(request: IRequest) -> bytes:
        request.setHeader(b"content-type", metrics.content_type.encode())
        return metrics.render()
