"""
The hot route, C{POST /v1/messages}, served by a plain C{twisted.web}
resource in front of Klein.

A message costs the server a few hundred microseconds of CPU, and
profiles put a fifth of that in Klein: binding a werkzeug map to every
request, matching it, adapting the request, a chain of Deferreds around
the handler and another around its error handlers. None of it is needed
to recognise one method on one path. L{FastRoutes} finds such a route
with one dictionary lookup; the route runs the same handler
(L{kezchat.http.send.send_message}) and renders failures through the
same error renderer (L{kezchat.http.routing.Routes.render_failure}) as
the Klein route does, so every answer, header and metric is
the one Klein would give. Anything else (another method, a trailing
slash) goes on to Klein, which keeps the route in its map for a C{405}.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, cast

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.server import NOT_DONE_YET, Request

from kezchat.http.routedata import route_data

log = Logger()

Handler = Callable[[IRequest], Coroutine[Any, Any, bytes]]
#: what a failed request is answered with (L{kezchat.http.routing.Routes.render_failure})
RenderFailure = Callable[[IRequest, Failure], "bytes | None"]


class FastRoute:
    """
    One route served without Klein: runs C{handler} and writes what it
    returns, or what L{Routes.render_failure} makes of its failure.

    As under Klein, a client that goes away cancels the handler, and a
    failure after the client has gone is only logged (cancellation not
    even that).
    """

    def __init__(self, name: str, handler: Handler, render_failure: RenderFailure) -> None:
        self.name = name
        self._handler = handler
        self._render_failure = render_failure

    def render(self, request: IRequest) -> int:
        route_data(request).route = self.name
        # what Klein does with a matched route: the path is consumed
        request.prepath.extend(request.postpath)
        request.postpath = []
        state = _State()
        d = Deferred.fromCoroutine(self._handler(request))
        cast(Request, request).notifyFinish().addBoth(state.finished, d)
        d.addCallbacks(
            self._write, self._failed, callbackArgs=(request, state), errbackArgs=(request, state)
        )
        d.addErrback(self._unwritten)
        return NOT_DONE_YET

    @staticmethod
    def _unwritten(failure: Failure) -> None:
        log.failure("unhandled error writing a response", failure)

    @staticmethod
    def _write(body: bytes, request: IRequest, state: _State) -> None:
        if state.gone:
            return
        request.write(body)
        request.finish()

    def _failed(self, failure: Failure, request: IRequest, state: _State) -> None:
        if state.gone:
            if not failure.check(CancelledError):
                log.failure("unhandled error processing {path}", failure, path=request.path)
            return
        body = self._render_failure(request, failure)
        if body is not None:
            request.write(body)
        if not state.gone:
            request.finish()


class _State:
    __slots__ = ("gone",)

    def __init__(self) -> None:
        self.gone = False

    def finished(self, result: object, d: Deferred[Any]) -> None:
        # notifyFinish fires when the response is done or the client left
        self.gone = True
        if isinstance(result, Failure):
            d.cancel()


class FastRoutes:
    """
    The routes served ahead of Klein, by method and exact path.
    """

    def __init__(self) -> None:
        self._routes: dict[tuple[bytes, tuple[bytes, ...]], FastRoute] = {}

    def add(self, method: bytes, path: tuple[bytes, ...], route: FastRoute) -> None:
        self._routes[(method, path)] = route

    def find(self, request: IRequest) -> FastRoute | None:
        if not self._routes:
            return None
        return self._routes.get((request.method, tuple(request.postpath)))
