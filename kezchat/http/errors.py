"""
JSON bodies in and out, and the SPEC §3 error shape.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.web.iweb import IRequest

from kezchat.errors import KezError
from kezchat.http.request import DEFAULT_BODY_CAP


def json_response(
    request: IRequest, value: Any, status: int = 200, content_type: bytes = b"application/json"
) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def error_response(request: IRequest, error: KezError) -> bytes:
    if error.retry_after is not None:
        request.setHeader(b"retry-after", str(error.retry_after).encode())
    return json_response(request, error.to_json(), error.status)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def read_body(request: IRequest, cap: int = DEFAULT_BODY_CAP) -> bytes:
    """
    The request body, refusing one above C{cap}.

    Behind our own C{KezSite} the cap was enforced while reading; this check
    is what still protects the routes when the resource is mounted in
    someone else's C{Site}.
    """
    content = request.content
    content.seek(0, 2)
    if content.tell() > cap:
        raise KezError("payload_too_large", f"the request body is larger than {cap} bytes")
    content.seek(0)
    return content.read()


def parse_json(raw: bytes) -> Any:
    """
    Decode a JSON body strictly: UTF-8, no NaN/Infinity, bounded nesting.
    """
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        raise KezError("bad_request", f"the body is not valid JSON: {e}"[:200]) from None


def read_json(request: IRequest, cap: int = DEFAULT_BODY_CAP) -> Any:
    return parse_json(read_body(request, cap))
