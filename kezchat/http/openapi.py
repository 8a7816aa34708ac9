"""
C{GET /v1/openapi.json}: the route serving a server's OpenAPI document,
which L{kezchat.openapi} holds as data.
"""

from __future__ import annotations

from twisted.web.iweb import IRequest

from kezchat.http.errors import json_bytes
from kezchat.http.routing import Routes
from kezchat.openapi import document_bytes


def install_openapi(routes: Routes, name: str) -> None:
    """
    Serve server C{name}'s document at C{GET /v1/openapi.json}, with CORS
    open so browser-based API tools can read it.
    """
    body = document_bytes(name)

    @routes.route("/v1/openapi.json", methods=["GET"], name="openapi")
    def openapi(request: IRequest) -> bytes:
        request.setHeader(b"access-control-allow-origin", b"*")
        return json_bytes(request, body)
