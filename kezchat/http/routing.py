"""
Klein routing with the house rules: every route has a name (for metrics),
every failure renders as a SPEC §3 JSON error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

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
from kezchat.http.request import DEFAULT_BODY_CAP
from kezchat.http.routedata import route_data
from kezchat.metrics import HTTPMetrics
from kezchat.storage.errors import DatabaseUnavailable, Rejected

log = Logger()

Handler = Callable[..., Any]


class Routes:
    """
    One Klein app and the metrics its errors are counted in.
    """

    def __init__(self, metrics: HTTPMetrics, default_body_cap: int = DEFAULT_BODY_CAP) -> None:
        """
        @param default_body_cap: the body cap of a route that declares none.
        """
        self.app = Klein()
        self.metrics = metrics
        #: routes served ahead of Klein (L{kezchat.http.fastpath})
        self.fast = FastRoutes()
        self.default_body_cap = default_body_cap
        #: static path prefix of a rule → the body cap its routes declared
        self._body_caps: dict[bytes, int] = {}
        self.app.handle_errors(KezError)(self._api_error)
        # werkzeug "redirects" /v1//healthz to /v1/healthz by raising; an
        # API path is either right or not found, never a redirect (and an
        # unhandled RequestRedirect would be a 500)
        self.app.handle_errors(NotFound, RequestRedirect)(self._not_found)
        self.app.handle_errors(MethodNotAllowed)(self._method_not_allowed)
        self.app.handle_errors(DatabaseUnavailable)(self._unavailable)
        self.app.handle_errors(Rejected)(self._rejected)
        self.app.handle_errors(Exception)(self._internal_error)

    def route(
        self, rule: str, *, methods: list[str], name: str, body_cap: int | None = None
    ) -> Callable[[Handler], Handler]:
        """
        Register C{handler} for C{rule}; C{name} labels its metrics (the raw
        path never becomes a label: that would be unbounded cardinality).

        @param body_cap: the largest request body this route takes, in
            bytes (default: L{default_body_cap}). It is enforced while the
            body is read (L{body_cap_for}) and again by L{read_body}.
        """
        cap = self.default_body_cap if body_cap is None else body_cap
        if body_cap is not None:
            prefix = rule.split("<", 1)[0].encode()
            self._body_caps[prefix] = max(cap, self._body_caps.get(prefix, 0))

        def register(handler: Handler) -> Handler:
            def named(request: IRequest, **kw: Any) -> Any:
                data = route_data(request)
                data.route, data.body_cap = name, cap
                return handler(request, **kw)

            named.__name__ = f"{name}:{'/'.join(methods)}"
            self.app.route(rule, methods=methods, endpoint=named.__name__)(named)
            return handler

        return register

    def body_cap_for(self, path: bytes) -> int:
        """
        The body cap of a request path, known before routing (the body is
        not read yet). Paths are matched by the rule prefix they contain,
        so the caps hold under a mount prefix too; the longest wins.
        """
        path = path.split(b"?", 1)[0]
        best, cap = -1, self.default_body_cap
        for prefix, limit in self._body_caps.items():
            if prefix in path and len(prefix) > best:
                best, cap = len(prefix), limit
        return cap

    def render_error(self, request: IRequest, error: KezError) -> bytes:
        """
        Answer with C{error} and count it as a rejection: the one way the
        server refuses a request it has routed.
        """
        self.metrics.rejections.labels(error.code).inc()
        return error_response(request, error)

    def render_failure(self, request: IRequest, failure: Failure) -> bytes | None:
        """
        The answer to a failed request, as the Klein error handlers below
        give it: for routes served outside Klein (L{kezchat.http.fastpath}).
        """
        if failure.check(KezError):
            return self._api_error(request, failure)
        if failure.check(DatabaseUnavailable):
            return self._unavailable(request, failure)
        if failure.check(Rejected):
            return self._rejected(request, failure)
        return self._internal_error(request, failure)

    # Klein calls each handler below only for the exceptions it was
    # registered for, hence the casts.

    def _api_error(self, request: IRequest, failure: Failure) -> bytes:
        return self.render_error(request, cast(KezError, failure.value))

    def _unavailable(self, request: IRequest, failure: Failure) -> bytes:
        # nothing was stored: the client may send the same request again
        error = cast(DatabaseUnavailable, failure.value)
        return self.render_error(
            request,
            KezError(
                "unavailable",
                f"the database is unavailable ({error.cause}); try again shortly",
                retry_after=error.retry_after,
            ),
        )

    def _rejected(self, request: IRequest, failure: Failure) -> bytes:
        # the database refused what the request carries: the same request
        # would be refused again
        return self.render_error(
            request, KezError("bad_request", "the database refused this request's data")
        )

    def _not_found(self, request: IRequest, failure: Failure) -> bytes:
        return self.render_error(request, KezError("not_found", "no such endpoint"))

    def _method_not_allowed(self, request: IRequest, failure: Failure) -> bytes:
        allowed = cast(MethodNotAllowed, failure.value).valid_methods or []
        request.setHeader(b"allow", ", ".join(sorted(allowed)).encode())
        return self.render_error(
            request, KezError("method_not_allowed", "method not allowed here")
        )

    def _internal_error(self, request: IRequest, failure: Failure) -> bytes | None:
        if failure.check(CancelledError):
            # the client went away; there is nobody to answer
            return None
        log.failure("unhandled error on {path}", failure, path=request.path)
        # not a refusal (no KezError code, not counted as a rejection)
        return json_response(
            request,
            {"error": {"code": "internal_error", "message": "the server failed; see its log"}},
            500,
        )
