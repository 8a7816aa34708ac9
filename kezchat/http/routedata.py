"""
What a route learns about a request that the layers around it need later:
its metrics label, its body cap, whether it became a stream.

Kept in a side table keyed by the request (weakly: an entry goes with its
request) rather than set as attributes on the request object, so every
field has one type and one default, and nothing pretends that
C{twisted.web}'s C{Request} has attributes it does not declare.
"""

from __future__ import annotations

from dataclasses import dataclass
from weakref import WeakKeyDictionary

from twisted.web.iweb import IRequest


@dataclass
class RouteData:
    """
    One request's route data.

    @ivar route: the metrics label of the route that answered it (never
        the raw path: that would be unbounded cardinality).
    @ivar body_cap: the largest body its route takes, or C{None} for the
        default (L{kezchat.http.request.DEFAULT_BODY_CAP}).
    @ivar streaming: it became a long-lived event stream, whose duration
        is no latency.
    """

    route: str = "unmatched"
    body_cap: int | None = None
    streaming: bool = False


_TABLE: WeakKeyDictionary[IRequest, RouteData] = WeakKeyDictionary()


def route_data(request: IRequest) -> RouteData:
    """
    The route data of C{request}, made (with the defaults) on first use.
    """
    data = _TABLE.get(request)
    if data is None:
        data = _TABLE[request] = RouteData()
    return data
