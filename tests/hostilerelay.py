"""
A hostile relay for tests: a man-in-the-middle HTTP proxy between a real
kezchat server and a real client (the CLI process, the web app in
Chromium, the example bot).

It passes every request through unchanged except the two ways a client
receives messages, where it applies the test's I{rewriters} to each item:

  - C{GET /v1/inbox/<h>} JSON pages (the C{messages} list);
  - the SSE stream C{GET /v1/inbox/<h>/stream} (each C{event: message}).

A rewriter is a callable taking one item (a fresh copy: change it freely)
and returning the list of items to deliver in its place: C{[item]} passes
it on (changed or not), C{[]} hides it, C{[item, extra]} adds an injected
or replayed item after it. The rewriters run in order, each over the
output of the previous one. L{HostileRelay.push} additionally writes an
item (or raw bytes, L{HostileRelay.push_raw}) to every open stream at
once, for attacks that need no genuine message to ride on.

Usage::

    relay = await HostileRelay.start(case, upstream=server.url)
    relay.rewriters.append(relabel("alice@kez.lat", alice_primary))
    ... point the client at relay.url ...

Ready-made rewriters: L{relabel}, L{corrupt_signature}, L{Replayer};
L{item} builds a relay item around an envelope a test sealed itself, and
L{seal_raw} seals plaintext bytes no honest client would send
(duplicate-key JSON).
"""

from __future__ import annotations

import copy
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from kezchat.e2e.envelope import derive, header_of
from kezchat.identity.jcs import canonical_json
from kezchat.identity.keys import KeyPair
from kezchat.manifests.sealing import b64url_encode
from kezchat.timeutil import format_rfc3339

Item = dict[str, Any]
#: takes one relay item, returns the items to deliver in its place
Rewriter = Callable[[Item], list[Item]]

_INBOX = re.compile(rb"^/v1/inbox/[^/?]+$")
_STREAM = re.compile(rb"^/v1/inbox/[^/?]+/stream$")
#: headers that describe one hop, not the message: never copied across
_HOP = {
    b"connection",
    b"keep-alive",
    b"transfer-encoding",
    b"content-length",
    b"host",
    b"accept-encoding",
    b"te",
    b"upgrade",
    b"proxy-connection",
}


def item(
    envelope: dict[str, Any],
    seq: int,
    sender: str,
    sender_primary: str | None = None,
    created_at: str = "2026-01-01T00:00:00Z",
) -> Item:
    """
    A relay item as the server would deliver it, around C{envelope}.
    """
    return {
        "seq": seq,
        "from": sender,
        "from_primary": sender_primary or envelope.get("from"),
        "envelope": envelope,
        "created_at": created_at,
    }


def seal_raw(
    sender: KeyPair, recipient_primary: str, plaintext: bytes, ts: str | None = None
) -> dict[str, Any]:
    """
    A genuine envelope from C{sender} whose plaintext is exactly the bytes
    C{plaintext} (which no well-behaved client would send: a repeated key,
    say C{b'{"type":"text","text":"a","text":"b"}'}, or not JSON at all).
    """
    salt = os.urandom(16)
    envelope: dict[str, Any] = {
        "v": 1,
        "from": sender.primary,
        "to": recipient_primary,
        "ts": ts or format_rfc3339(time.time()),
        "salt": b64url_encode(salt),
    }
    secrets = derive(sender, recipient_primary, salt)
    ct = ChaCha20Poly1305(secrets.key).encrypt(
        secrets.nonce, plaintext, canonical_json(header_of(envelope))
    )
    envelope["ct"] = b64url_encode(ct)
    envelope["sig"] = sender.sign_jcs(envelope)
    return envelope


def relabel(
    sender: str, sender_primary: str | None = None, when: Callable[[Item], bool] = lambda i: True
) -> Rewriter:
    """
    Rewrite C{from} (and C{from_primary} if given) of the items C{when}
    selects: a server claiming someone else sent them.
    """

    def rewrite(i: Item) -> list[Item]:
        if when(i):
            i["from"] = sender
            if sender_primary is not None:
                i["from_primary"] = sender_primary
        return [i]

    return rewrite


def corrupt_signature(when: Callable[[Item], bool] = lambda i: True) -> Rewriter:
    """
    Flip the last hex digit of the envelope's C{sig} in the selected items.
    """

    def rewrite(i: Item) -> list[Item]:
        envelope = i.get("envelope")
        if when(i) and isinstance(envelope, dict) and isinstance(envelope.get("sig"), str):
            sig = envelope["sig"]
            envelope["sig"] = sig[:-1] + ("0" if sig[-1:] != "0" else "1")
        return [i]

    return rewrite


@dataclass
class Replayer:
    """
    Remembers every item it sees; after each item C{when} selects, it
    delivers the first remembered item again under C{seq + offset} (a
    replay of an old envelope under a new seq).
    """

    when: Callable[[Item], bool] = lambda i: True
    offset: int = 1000
    seen: list[Item] = field(default_factory=list)

    def __call__(self, i: Item) -> list[Item]:
        out = [i]
        if self.seen and self.when(i):
            again = copy.deepcopy(self.seen[0])
            again["seq"] = i["seq"] + self.offset
            out.append(again)
        self.seen.append(copy.deepcopy(i))
        return out


def _event(i: Item) -> bytes:
    data = json.dumps(i, separators=(",", ":")).encode()
    return b"id: %d\nevent: message\ndata: %s\n\n" % (int(i.get("seq", 0)), data)


class _Proxy(Resource):
    isLeaf = True

    def __init__(self, relay: HostileRelay) -> None:
        super().__init__()
        self.relay = relay

    def render(self, request: Request) -> Any:
        Deferred.fromCoroutine(self.relay._forward(request)).addErrback(
            self.relay._failed, request
        )
        return NOT_DONE_YET


class _StreamPump(Protocol):
    """
    Copies an upstream event stream to the client, event by event,
    through the rewriters.
    """

    def __init__(self, relay: HostileRelay, request: Request) -> None:
        self.relay = relay
        self.request = request
        self.buffer = b""
        self.done: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data.replace(b"\r\n", b"\n")
        while b"\n\n" in self.buffer:
            block, self.buffer = self.buffer.split(b"\n\n", 1)
            self.request.write(self.relay._rewrite_event(block))

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self.done.called:
            self.done.callback(None)


class HostileRelay:
    """
    The proxy. Construct with L{start}; it stops when the test ends.

    @ivar url: the base URL clients use instead of the server's.
    @ivar rewriters: applied, in order, to each delivered item.
    @ivar delivered: every item the relay delivered (after rewriting), for
        assertions about what the client was shown.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/").encode()
        self.rewriters: list[Rewriter] = []
        self.delivered: list[Item] = []
        self.url = ""
        self.agent = Agent(reactor)
        self._streams: list[Request] = []
        self._stream_waiters: list[Deferred[None]] = []

    @classmethod
    async def start(cls, case: TestCase, upstream: str) -> HostileRelay:
        relay = cls(upstream)
        port = reactor.listenTCP(0, Site(_Proxy(relay)), interface="127.0.0.1")
        case.addCleanup(relay._stop, port)
        relay.url = f"http://127.0.0.1:{port.getHost().port}"
        return relay

    async def _stop(self, port: Any) -> None:
        for request in list(self._streams):
            request.loseConnection()
        await port.stopListening()

    # -- what a test does ------------------------------------------------

    def apply(self, i: Item) -> list[Item]:
        """
        C{i} through every rewriter (what a client will receive for it).
        """
        items = [copy.deepcopy(i)]
        for rewriter in self.rewriters:
            items = [out for one in items for out in rewriter(one)]
        self.delivered.extend(copy.deepcopy(items))
        return items

    def push(self, i: Item) -> int:
        """
        Deliver C{i} (not rewritten) on every open stream now; returns how
        many streams got it.
        """
        self.delivered.append(copy.deepcopy(i))
        return self.push_raw(_event(i))

    def push_raw(self, data: bytes) -> int:
        """
        Write C{data} as it is on every open stream (a malformed or
        enormous event, say); returns how many streams got it.
        """
        for request in self._streams:
            request.write(data)
        return len(self._streams)

    def stream_open(self) -> Deferred[None]:
        """
        Fires once at least one client stream is open through the relay.
        """
        d: Deferred[None] = Deferred()
        if self._streams:
            d.callback(None)
        else:
            self._stream_waiters.append(d)
        return d

    # -- the proxying ------------------------------------------------------

    def _rewrite_event(self, block: bytes) -> bytes:
        lines = block.split(b"\n")
        if b"event: message" not in lines:
            return block + b"\n\n"
        data = b"\n".join(line[6:] for line in lines if line.startswith(b"data: "))
        try:
            original = json.loads(data)
        except ValueError:
            return block + b"\n\n"
        return b"".join(_event(i) for i in self.apply(original))

    def _rewrite_page(self, body: bytes) -> bytes:
        try:
            page = json.loads(body)
            items = page["messages"]
        except (ValueError, KeyError, TypeError):
            return body
        page["messages"] = [out for i in items for out in self.apply(i)]
        return json.dumps(page, separators=(",", ":")).encode()

    async def _forward(self, request: Request) -> None:
        path = request.path
        headers = Headers()
        for name, values in request.requestHeaders.getAllRawHeaders():
            if name.lower() not in _HOP:
                headers.setRawHeaders(name, values)
        body = request.content.read() if request.content is not None else b""
        producer = FileBodyProducer(BytesIO(body)) if body else None
        response = await self.agent.request(
            request.method, self.upstream + request.uri, headers, producer
        )
        request.setResponseCode(response.code, response.phrase)
        for name, values in response.headers.getAllRawHeaders():
            if name.lower() not in _HOP:
                request.responseHeaders.setRawHeaders(name, values)
        get = request.method == b"GET" and response.code == 200
        if get and _STREAM.match(path):
            pump = _StreamPump(self, request)
            self._streams.append(request)
            waiters, self._stream_waiters = self._stream_waiters, []
            for d in waiters:
                d.callback(None)
            gone: Deferred[None] = request.notifyFinish()
            gone.addErrback(lambda _: None)
            response.deliverBody(pump)
            gone.addCallback(lambda _: pump.transport and pump.transport.stopProducing())
            await pump.done
            if request in self._streams:
                self._streams.remove(request)
            if not gone.called:
                request.finish()
            return
        content = await readBody(response)
        if get and _INBOX.match(path):
            content = self._rewrite_page(content)
        request.responseHeaders.setRawHeaders(b"content-length", [str(len(content)).encode()])
        request.write(content)
        request.finish()

    def _failed(self, failure: Failure, request: Request) -> None:
        if request in self._streams:
            self._streams.remove(request)
        if not request.finished and not request._disconnected:
            request.setResponseCode(502)
            request.write(f"hostile relay: {failure.getErrorMessage()}".encode())
            request.finish()
