"""
The hot paths beside Klein, over real sockets: C{POST /v1/messages} served
by L{kezchat.http.fastpath}, and SSE events written straight to the
socket by L{kezchat.http.framewriter}.
"""

from __future__ import annotations

import json
import re
import socket

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from kezchat.protocol.auth import body_digest, sign_request
from tests.relaysupport import message_request, now, send, stream_auth
from tests.support import http_client, json_of, register, start_server


def _dechunk(body: bytes) -> bytes:
    """
    A chunked body decoded, insisting that every chunk is well formed.
    """
    out, rest = b"", body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        chunk, crlf, rest = rest[:size], rest[size : size + 2], rest[size + 2 :]
        assert len(chunk) == size and crlf == b"\r\n", (size_line, chunk[:40], crlf)
        out += chunk
    return out


class FastPathTests(TestCase):
    timeout = 60

    async def setUp(self) -> None:
        self.server = await start_server(self, sse_ping_seconds=30)
        self.url = self.server.url
        self.client = http_client(self)
        self.alice, _ = await register(self.client, self.url, "alice")
        self.bob, _ = await register(self.client, self.url, "bob")
        self._received: dict[socket.socket, bytes] = {}

    async def test_send_is_counted_as_the_send_route(self) -> None:
        """
        A message sent through the fast path is counted and timed under
        the C{send} route, as under Klein.
        """
        code, _ = await send(self.client, self.url, self.alice, "alice", "bob", {"n": 1})
        self.assertEqual(code, 201)
        metrics = (await (await self.client.get(f"{self.url}/metrics")).content()).decode()
        self.assertRegex(
            metrics, r'http_requests_total\{method="POST",route="send",status="201"\} 1\.0'
        )
        self.assertRegex(metrics, r'http_request_seconds_count\{route="send"\} 1\.0')

    async def test_other_methods_and_paths_still_reach_klein(self) -> None:
        """
        The fast path takes one method on one exact path; Klein still
        answers the rest of that path's space as before.
        """
        response = await self.client.get(f"{self.url}/v1/messages")
        body = await json_of(response)
        self.assertEqual((response.code, body["error"]["code"]), (405, "method_not_allowed"))
        self.assertEqual(response.headers.getRawHeaders(b"allow"), [b"POST"])
        raw, headers = message_request(self.alice, "alice", "bob", {"n": 2})
        response = await self.client.post(f"{self.url}/v1/messages/", data=raw, headers=headers)
        body = await json_of(response)
        self.assertEqual((response.code, body["error"]["code"]), (404, "not_found"))

    async def test_errors_have_the_api_shape(self) -> None:
        """
        Refusals from the fast path carry the API's error JSON, and a
        refused body is not stored.
        """
        raw = json.dumps({"to": "bob", "envelope": "not an object"}).encode()
        headers = {
            "Content-Type": "application/json",
            "X-KEZ-Sender": "alice",
            "X-KEZ-Auth": sign_request(
                self.alice, "POST", "/v1/messages", [body_digest(raw)], now()
            ),
        }
        response = await self.client.post(f"{self.url}/v1/messages", data=raw, headers=headers)
        body = await json_of(response)
        self.assertEqual(response.code, 400)
        self.assertEqual(set(body), {"error"})
        self.assertEqual(body["error"]["code"], "bad_request")
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/json"])

    async def _raw_stream(self, version: bytes, rcvbuf: int | None = None) -> socket.socket:
        auth = stream_auth(self.bob, "bob")
        sock = socket.socket()
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        port = int(self.url.rsplit(":", 1)[1])
        try:
            sock.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        self.addCleanup(sock.close)
        await deferLater(reactor, 0.05, lambda: None)
        sock.sendall(
            b"GET /v1/inbox/bob/stream?auth=" + auth.encode() + b" " + version + b"\r\n"
            b"Host: test\r\n\r\n"
        )
        return sock

    async def _read_until(self, sock: socket.socket, done, seconds: float = 20.0) -> bytes:
        """
        Everything read from C{sock} so far, once C{done} says it is enough.
        """
        data = self._received.get(sock, b"")
        for _ in range(int(seconds / 0.02)):
            try:
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return data
                    data += chunk
                    self._received[sock] = data
            except BlockingIOError:
                pass
            if done(data):
                return data
            await deferLater(reactor, 0.02, lambda: None)
        self.fail(f"timed out; got {len(data)} bytes")

    async def test_events_stay_ordered_and_framed_through_a_full_socket(self) -> None:
        """
        A reader that does not read while 300 events of 2 KiB are sent
        fills the kernel's buffers, so the direct writes go partly through
        and the rest is queued by Twisted: every event still arrives once,
        in order, in well-formed chunks.
        """
        sock = await self._raw_stream(b"HTTP/1.1", rcvbuf=4096)
        await self._read_until(sock, lambda data: b"retry: 3000" in data)
        for i in range(300):
            code, _ = await send(
                self.client, self.url, self.alice, "alice", "bob", {"i": i, "pad": "x" * 2048}
            )
            self.assertEqual(code, 201)
        data = await self._read_until(sock, lambda data: data.count(b"\nevent: message\n") >= 300)
        head, _, body = data.partition(b"\r\n\r\n")
        self.assertIn(b"transfer-encoding: chunked", head.lower(), head)
        text = _dechunk(body)
        ids = [int(m) for m in re.findall(rb"^id: (\d+)$", text, re.M)]
        self.assertEqual(ids, list(range(1, 301)))
        items = [json.loads(m) for m in re.findall(rb"^data: (.*)$", text, re.M)]
        envelopes = [item["envelope"]["i"] for item in items]
        self.assertEqual(envelopes, list(range(300)))

    async def test_http10_stream_is_not_chunked(self) -> None:
        """
        An HTTP/1.0 stream has no chunked framing; its events are written
        the ordinary way, unframed.
        """
        sock = await self._raw_stream(b"HTTP/1.0")
        await self._read_until(sock, lambda data: b"retry: 3000" in data)
        for i in range(3):
            await send(self.client, self.url, self.alice, "alice", "bob", {"i": i})
        data = await self._read_until(sock, lambda data: data.count(b"\nevent: message\n") >= 3)
        _, _, body = data.partition(b"\r\n\r\n")
        self.assertTrue(body.startswith(b"retry: 3000\n\n"), body[:40])
        self.assertNotIn(b"transfer-encoding", data.partition(b"\r\n\r\n")[0].lower())
        self.assertEqual(re.findall(rb"^id: (\d+)$", body, re.M), [b"1", b"2", b"3"])

    async def test_pings_keep_their_place_among_events(self) -> None:
        """
        A ping goes out the way events do (straight to the socket when
        nothing is queued, else behind what is): with a reader that does
        not read, so that later writes queue, a tick between the 50th and
        the 51st event puts one well-formed ping exactly there.
        """
        sock = await self._raw_stream(b"HTTP/1.1", rcvbuf=4096)
        await self._read_until(sock, lambda data: b"retry: 3000" in data)
        hub = self.server.parts.hub
        for i in range(100):
            if i == 50:
                hub._tick()
            code, _ = await send(
                self.client, self.url, self.alice, "alice", "bob", {"i": i, "pad": "x" * 2048}
            )
            self.assertEqual(code, 201)
        data = await self._read_until(sock, lambda data: data.count(b"\nevent: message\n") >= 100)
        text = _dechunk(data.partition(b"\r\n\r\n")[2])
        self.assertEqual(text.count(b": ping\n\n"), 1)
        before, _, after = text.partition(b": ping\n\n")
        self.assertEqual(re.findall(rb"^id: (\d+)$", before, re.M)[-1], b"50")
        self.assertEqual(re.findall(rb"^id: (\d+)$", after, re.M)[0], b"51")
        ids = [int(m) for m in re.findall(rb"^id: (\d+)$", text, re.M)]
        self.assertEqual(ids, list(range(1, 101)))
