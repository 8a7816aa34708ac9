"""
Routes of the key directory (the registry's transparency log).

    GET /v1/log/head                         the signed tree head
    GET /v1/log/inclusion?handle=&size=      a registration's inclusion proof
    GET /v1/log/consistency?from=&to=        a consistency proof between two sizes
        (&server=<domain>: another domain's, asked of it; federation)
    GET /v1/log/entries?start=&count=        leaves, at most 1000
"""

from __future__ import annotations

from twisted.web.iweb import IRequest

from kezchat.errors import KezError
from kezchat.http.errors import json_response
from kezchat.http.remotes import RemoteDirectory, other_server
from kezchat.http.routing import Routes
from kezchat.keylog.log import KeyLog, parse_index


def _arg(request: IRequest, name: str) -> str | None:
    """
    The one value of query parameter C{name}, or C{None}; given twice or
    not UTF-8 is a C{bad_request}.
    """
    # IRequest.args is a zope Attribute (Any); Twisted fills it with lists of bytes
    values: list[bytes] = request.args.get(name.encode()) or []
    if len(values) > 1:
        raise KezError("bad_request", f"give {name} once")
    if not values:
        return None
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise KezError("bad_request", f"{name} is not UTF-8") from None


def install(
    routes: Routes, log: KeyLog, remote: RemoteDirectory | None = None, own: str = ""
) -> None:
    """
    @param remote: answers C{consistency?server=<other domain>} from that
        domain (federation); without it such a request is C{not_found}.
    @param own: this server's domain (C{server=<own>} is a local request).
    """

    @routes.route("/v1/log/head", methods=["GET"], name="log_head")
    async def head(request: IRequest) -> bytes:
        return json_response(request, await log.head())

    @routes.route("/v1/log/inclusion", methods=["GET"], name="log_inclusion")
    async def inclusion(request: IRequest) -> bytes:
        handle = _arg(request, "handle")
        if handle is None:
            raise KezError("bad_request", "handle is required")
        size = parse_index(_arg(request, "size"), "size")
        return json_response(request, await log.inclusion(handle, size))

    @routes.route("/v1/log/consistency", methods=["GET"], name="log_consistency")
    async def consistency(request: IRequest) -> bytes:
        first = parse_index(_arg(request, "from"), "from")
        second = parse_index(_arg(request, "to"), "to")
        domain = other_server(request, own)
        if domain is not None:
            if remote is None:
                raise KezError("not_found", "this server does not ask other servers' logs")
            return json_response(request, await remote.consistency(domain, first, second))
        return json_response(request, await log.consistency(first, second))

    @routes.route("/v1/log/entries", methods=["GET"], name="log_entries")
    async def entries(request: IRequest) -> bytes:
        start = parse_index(_arg(request, "start"), "start")
        count = parse_index(_arg(request, "count"), "count")
        return json_response(request, await log.entries(start, count))
