"""
The root resource of a KEZ HTTP service: a Klein app behind the checks and
the bookkeeping every request gets.

Both servers (C{kezchat} and C{kezsig}) mount one, so refusing non-UTF-8
paths and counting every response happen once, in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import Request

from kezchat.errors import KezError
from kezchat.http.routedata import route_data
from kezchat.http.routing import Routes


class ApiResource(Resource):
    """
    Renders requests with a L{Routes}' Klein app; mountable in any C{Site}.
    """

    isLeaf = True

    def __init__(self, routes: Routes, clock: Callable[[], float]) -> None:
        super().__init__()
        #: the routes served, public so tests can compare them with the docs
        self.routes = routes
        self._klein = routes.app.resource()
        self._fast = routes.fast
        self._metrics = routes.metrics
        self._clock = clock

    def render(self, request: IRequest) -> bytes | int:
        try:
            for segment in (*request.prepath, *request.postpath):
                segment.decode("utf-8")
        except UnicodeDecodeError:
            return self.routes.render_error(
                request, KezError("bad_request", "path is not UTF-8")
            )
        started = self._clock()
        cast(Request, request).notifyFinish().addBoth(self._finished, request, started)
        return self.dispatch(request)

    def dispatch(self, request: IRequest) -> bytes | int:
        """
        Answer a request whose path is known to be UTF-8; subclasses
        override this to serve more than the API.
        """
        fast = self._fast.find(request)
        if fast is not None:
            return fast.render(request)
        return cast("bytes | int", self._klein.render(request))

    def _finished(self, _: object, request: IRequest, started: float) -> None:
        data = route_data(request)
        route = data.route
        method = request.method.decode("latin-1")
        code = cast(Request, request).code
        self._metrics.requests.labels(route, method, str(code)).inc()
        if not data.streaming:
            self._metrics.latency.labels(route).observe(self._clock() - started)
