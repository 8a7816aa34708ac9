"""
Routes of the relay (SPEC §3.2, §3.3): send, list, acknowledge, stream.
"""

from __future__ import annotations

from typing import cast

from twisted.web.iweb import IRequest
from twisted.web.server import Request

from kezchat.errors import KezError
from kezchat.http.clientip import ClientAddress
from kezchat.http.errors import json_bytes, json_response
from kezchat.http.fastpath import FastRoute
from kezchat.http.routedata import route_data
from kezchat.http.routing import Routes
from kezchat.http.send import MESSAGE_CAP, send_message
from kezchat.http.sse import StreamHub
from kezchat.protocol.auth import parse_expiry
from kezchat.relay.items import inbox_page
from kezchat.relay.relay import DEFAULT_PAGE, Relay, parse_cursor

__all__ = ["MESSAGE_CAP", "install"]


def _arg(request: IRequest, name: bytes) -> bytes | None:
    # IRequest.args is a zope Attribute (Any); Twisted fills it with lists of bytes
    values: list[bytes] | None = request.args.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise KezError("bad_request", f"{name.decode()} given more than once")
    return values[0]


def _cursor(request: IRequest, name: str) -> int | None:
    value = _arg(request, name.encode())
    return None if value is None else parse_cursor(value, name)


def _cursor_or(request: IRequest, name: str, default: int) -> int:
    value = _cursor(request, name)
    return default if value is None else value


def install(
    routes: Routes, relay: Relay, hub: StreamHub, client_address: ClientAddress | None = None
) -> None:
    client_address = client_address or ClientAddress()

    @routes.route("/v1/messages", methods=["POST"], name="send", body_cap=MESSAGE_CAP)
    async def send(request: IRequest) -> bytes:
        return await send_message(relay, request)

    # the hot route: the same handler, served ahead of Klein
    routes.fast.add(
        b"POST",
        (b"v1", b"messages"),
        FastRoute("send", lambda request: send_message(relay, request), routes.render_failure),
    )

    @routes.route("/v1/inbox/<h>", methods=["GET"], name="inbox")
    async def inbox(request: IRequest, h: str) -> bytes:
        since = _cursor_or(request, "since", 0)
        limit = _cursor_or(request, "limit", DEFAULT_PAGE)
        owner = await relay.authenticate(
            h, request.getHeader(b"x-kez-auth"), "GET", f"/v1/inbox/{h}", [f"since={since}"]
        )
        messages = await relay.inbox(owner, since, limit)
        # read after the page: "last" is never below the page's own seqs
        last = await relay.last_seq(owner)
        # a page stops at its limit or at INBOX_PAGE_BYTES of envelopes,
        # whichever comes first; "next" is where the client goes on, and
        # "last" says how far the inbox goes (restore progress)
        return json_bytes(request, inbox_page(messages, since, last))

    @routes.route("/v1/inbox/<h>", methods=["DELETE"], name="acknowledge")
    async def acknowledge(request: IRequest, h: str) -> bytes:
        upto = _cursor(request, "upto")
        if upto is None:
            raise KezError("bad_request", "upto=<seq> is required")
        owner = await relay.authenticate(
            h, request.getHeader(b"x-kez-auth"), "DELETE", f"/v1/inbox/{h}", [f"upto={upto}"]
        )
        deleted = await relay.acknowledge(owner, upto)
        return json_response(request, {"deleted": deleted})

    @routes.route("/v1/inbox/<h>/stream", methods=["GET"], name="stream")
    async def stream(request: IRequest, h: str) -> bytes:
        auth = _arg(request, b"auth")
        if auth is None:
            raise KezError(
                "bad_request", "auth=<ts>:<sig> is required (EventSource sets no headers)"
            )
        last_event_id = request.getHeader(b"last-event-id")
        resume: int | None
        if last_event_id is not None:
            resume = parse_cursor(last_event_id.strip(), "Last-Event-ID")
        else:
            resume = _cursor(request, "since")
        # with exp the URL stays valid (up to a day), so a standard
        # EventSource can reconnect with it by itself
        expires = parse_expiry(_arg(request, b"exp"))
        owner = await relay.authenticate(
            h, auth, "GET", f"/v1/inbox/{h}/stream", expires=expires
        )
        route_data(request).streaming = True
        return await hub.open(
            cast(Request, request), owner.fqhn, resume, client_address(request)
        )
