"""
Klein routing with the house rules: every route has a name (for metrics),
every failure renders as a SPEC §3 JSON error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from klein import Klein
from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import RequestRedirect

from kezchat.errors import KezError
from kezchat.http.errors import error_response, json_response
from kezchat.http.fastpath import FastRoutes
from kezchat.metrics import HTTPMetrics
from kezchat.storage.errors import DatabaseUnavailable

log = Logger()

Handler = Callable[..., Any]


class Routes:
    """
    One Klein app and the metrics its errors are counted in.
    """

    def __init__(self, metrics: HTTPMetrics) -> None:
        self.app = Klein()
        self.metrics = metrics
        #: routes served ahead of Klein (L{kezchat.http.fastpath})
        self.fast = FastRoutes()
        self.app.handle_errors(KezError)(self._api_error)
        # werkzeug "redirects" /v1//healthz to /v1/healthz by raising; an
        # API path is either right or not found, never a redirect (and an
        # unhandled RequestRedirect would be a 500)
        self.app.handle_errors(NotFound, RequestRedirect)(self._not_found)
        self.app.handle_errors(MethodNotAllowed)(self._method_not_allowed)
        self.app.handle_errors(DatabaseUnavailable)(self._unavailable)
        self.app.handle_errors(Exception)(self._internal_error)

    def route(self, rule: str, *, methods: list[str], name: str) -> Callable[[Handler], Handler]:
        """
        Register C{handler} for C{rule}; C{name} labels its metrics (the raw
        path never becomes a label: that would be unbounded cardinality).
        """

        def register(handler: Handler) -> Handler:
            def named(request: IRequest, **kw: Any) -> Any:
                request.kez_route = name  # type: ignore[attr-defined]
                return handler(request, **kw)

            named.__name__ = f"{name}:{'/'.join(methods)}"
            self.app.route(rule, methods=methods, endpoint=named.__name__)(named)
            return handler

        return register

    def render_failure(self, request: IRequest, failure: Failure) -> bytes | None:
        """
        The answer to a failed request, as the Klein error handlers above
        give it: for routes served outside Klein (L{kezchat.http.fastpath}).
        """
        if failure.check(KezError):
            return self._api_error(request, failure)
        if failure.check(DatabaseUnavailable):
            return self._unavailable(request, failure)
        return self._internal_error(request, failure)

    def _api_error(self, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        self.metrics.rejections.labels(error.code).inc()
        return error_response(request, error)

    def _unavailable(self, request: IRequest, failure: Failure) -> bytes:
        # nothing was stored: the client may send the same request again
        error = failure.value
        return self._api_error(
            request,
            Failure(KezError(
                "unavailable",
                f"the database is unavailable ({error.cause}); try again shortly",
                retry_after=error.retry_after,
            )),
        )

    def _not_found(self, request: IRequest, failure: Failure) -> bytes:
        return self._api_error(
            request, Failure(KezError("not_found", "no such endpoint"))
        )

    def _method_not_allowed(self, request: IRequest, failure: Failure) -> bytes:
        allowed = failure.value.valid_methods or []
        request.setHeader(b"allow", ", ".join(sorted(allowed)).encode())
        self.metrics.rejections.labels("method_not_allowed").inc()
        return json_response(
            request,
            {"error": {"code": "method_not_allowed", "message": "method not allowed here"}},
            405,
        )

    def _internal_error(self, request: IRequest, failure: Failure) -> bytes | None:
        if failure.check(CancelledError):
            # the client went away; there is nobody to answer
            return None
        log.failure("unhandled error on {path}", failure, path=request.path)
        return json_response(
            request,
            {"error": {"code": "internal_error", "message": "the server failed; see its log"}},
            500,
        )
