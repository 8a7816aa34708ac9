"""
Routes of federation.

    GET /v1/server      this server's domain and its server key
"""

from __future__ import annotations

from twisted.web.iweb import IRequest

from kezchat.federation.identity import ServerIdentity
from kezchat.http.errors import json_response
from kezchat.http.routing import Routes


def install(routes: Routes, identity: ServerIdentity) -> None:
    @routes.route("/v1/server", methods=["GET"], name="server")
    async def server(request: IRequest) -> bytes:
        return json_response(request, await identity.json())
