"""
Routes of federation.

    GET /v1/server                  this server's domain and its server key
    POST /v1/federation/messages    a message from another server (signed by it)
"""

from __future__ import annotations

from twisted.web.iweb import IRequest

from kezchat.federation.identity import ServerIdentity
from kezchat.federation.inbound import Inbound, accepted_json
from kezchat.federation.outbound import DELIVERY_PATH
from kezchat.federation.s2s import HEADER
from kezchat.http.errors import json_response, read_body
from kezchat.http.routing import Routes
from kezchat.relay.sendrequest import MAX_MESSAGE_BYTES

#: a delivery: one message (the cap of POST /v1/messages) and its addressing
DELIVERY_CAP = MAX_MESSAGE_BYTES + 4096


def install(routes: Routes, identity: ServerIdentity, inbound: Inbound) -> None:
    @routes.route(DELIVERY_PATH, methods=["POST"], name="federation_messages",
                  body_cap=DELIVERY_CAP)
    async def deliver(request: IRequest) -> bytes:
        raw = read_body(request, DELIVERY_CAP)
        accepted = await inbound.receive(request.getHeader(HEADER.encode()), raw)
        return json_response(request, accepted_json(accepted), 200 if accepted.duplicate else 201)

    @routes.route("/v1/server", methods=["GET"], name="server")
    async def server(request: IRequest) -> bytes:
        return json_response(request, await identity.json())
