"""
JSON bodies in and out, and the SPEC §3 error shape.
"""

from __future__ import annotations

from typing import IO, Any

from twisted.web.iweb import IRequest

from kezchat.errors import KezError, json_body
from kezchat.http.request import DEFAULT_BODY_CAP
from kezchat.http.routedata import route_data
from kezchat.strictjson import parse_json


def json_bytes(
    request: IRequest, body: bytes, status: int = 200, content_type: bytes = b"application/json"
) -> bytes:
    """
    Answer with a JSON body already serialised. The length is set so the
    response is not sent chunked (Klein writes after the headers are out).
    """
    request.setResponseCode(status)
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"content-length", b"%d" % len(body))
    return body


def json_response(
    request: IRequest, value: Any, status: int = 200, content_type: bytes = b"application/json"
) -> bytes:
    return json_bytes(request, json_body(value), status, content_type)


def error_response(request: IRequest, error: KezError) -> bytes:
    """
    Answer with C{error}: its status, its C{Retry-After}, its JSON body.
    Use L{kezchat.http.routing.Routes.render_error}, which also counts it.
    """
    if error.retry_after is not None:
        request.setHeader(b"retry-after", str(error.retry_after).encode())
    return json_bytes(request, error.body(), error.status)


def read_body(request: IRequest, cap: int | None = None) -> bytes:
    """
    The request body, refusing one above C{cap} (by default the cap its
    route declared, see L{kezchat.http.routing.Routes.route}).

    Behind our own C{KezSite} the cap was enforced while reading; this check
    is what still protects the routes when the resource is mounted in
    someone else's C{Site}.
    """
    if cap is None:
        declared = route_data(request).body_cap
        cap = DEFAULT_BODY_CAP if declared is None else declared
    # IRequest.content is a zope Attribute (Any); Twisted makes it a binary file
    content: IO[bytes] = request.content
    content.seek(0, 2)
    if content.tell() > cap:
        raise KezError("payload_too_large", f"the request body is larger than {cap} bytes")
    content.seek(0)
    return content.read()


def read_json(request: IRequest, cap: int | None = None) -> Any:
    return parse_json(read_body(request, cap))
