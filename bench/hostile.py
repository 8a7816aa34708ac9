"""
Hostile-load benchmark (issue 8): what three attacks cost the chat-server
in memory and in the latency of everyone else's requests.

    .venv/bin/python bench/hostile.py                  # all three, ~1-2 minutes
    .venv/bin/python bench/hostile.py --source DIR     # run the server from another checkout

The attacks, each against a fresh `twistd -r asyncio -n kezchat` process
(as shipped, `--send-limit 0` so the set-up can fill an inbox quickly):

  resume   an inbox of 500 × 250 KiB messages; 10 streams resume from 0
           (`Last-Event-ID: 0`) and never read, while 8 clients at a time
           page it with `GET ?limit=500` (3 rounds)
  fan-out  2,000 streams on one handle, then one 250 KiB message to it
  slowloris 500 connections that send a request head one header line
           every 2 s and never finish it, held 35 s (past the server's
           30 s deadline)

For each: the server's RSS when idle (just before the attack), its peak
during the attack (sampled every 20 ms and from the kernel's VmHWM, reset
before the attack through /proc/<pid>/clear_refs) and after the attack
ends; and the p50/p99 latency of `GET /v1/healthz`, probed every 20 ms on
a connection of its own, idle and during the attack.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench.relay import free_port, percentile  # noqa: E402

MESSAGE = 250 * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default=os.path.dirname(HERE),
                        help="checkout whose kezchat the server runs (default: this one)")
    parser.add_argument("--attacks", nargs="+", default=["resume", "fanout", "slowloris"])
    parser.add_argument("--no-stream-caps", action="store_true",
                        help="run the server with its per-handle and per-IP stream caps off"
                             " (to measure the fan-out itself)")
    parser.add_argument("--hold", type=float, default=6.0, help="seconds each attack is held")
    parser.add_argument("--fan-streams", type=int, default=2000)
    parser.add_argument("--slowloris", type=int, default=500)
    parser.add_argument("--slowloris-hold", type=float, default=35.0,
                        help="seconds the slow heads are held (the server's deadline is 30 s)")
    args = parser.parse_args()

    from twisted.internet import reactor
    from twisted.internet.defer import ensureDeferred

    rows: list[tuple[str, ...]] = []

    def go() -> None:
        d = ensureDeferred(run_all(reactor, args, rows))
        d.addErrback(lambda f: f.printTraceback())
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(go)
    reactor.run()
    header = ("attack", "idle RSS", "peak RSS", "RSS after", "healthz p50/p99 idle",
              "healthz p50/p99 attack", "notes")
    width = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print()
    caps = " (stream caps off)" if args.no_stream_caps else ""
    print(f"server from {os.path.abspath(args.source)}{caps}")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, width, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in width) + "|")
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, width, strict=True)) + " |")


async def run_all(reactor, args, rows) -> None:
    for attack in args.attacks:
        env = {}
        if args.no_stream_caps:
            env = {"KEZ_CHAT_MAX_STREAMS_PER_HANDLE": "0", "KEZ_CHAT_MAX_STREAMS_PER_IP": "0"}
        server = ChatServer(reactor, args.source, env)
        try:
            await server.start()
            rows.append(await ATTACKS[attack](reactor, server, args))
        except Exception as e:  # a crashed server is a result too
            rows.append((attack, "-", "-", "-", "-", "-", f"failed: {e!r}"[:200]))
        finally:
            await server.stop()


class ChatServer:
    """
    `twistd -r asyncio -n kezchat` in a process of its own, on a fresh
    database, with the fd limit raised.
    """

    def __init__(self, reactor, source: str, env: dict[str, str] | None = None) -> None:
        self.reactor = reactor
        self.env = env or {}
        self.source = os.path.abspath(source)
        self.workdir = tempfile.mkdtemp(prefix="kezchat-hostile-")
        self.port = free_port()
        self.process = None
        self.output = b""

    async def start(self) -> None:
        from twisted.internet.protocol import ProcessProtocol

        from kezchat.testing.rawhttp import wait_until

        server = self

        class Output(ProcessProtocol):
            def outReceived(self, data: bytes) -> None:
                server.output = (server.output + data)[-65536:]

            errReceived = outReceived

            def processEnded(self, reason) -> None:
                server.process = None

        launcher = (
            "import resource, sys\n"
            "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))\n"
            "from twisted.scripts.twistd import run\n"
            "sys.argv = ['twistd'] + sys.argv[1:]\n"
            "run()\n"
        )
        self.process = self.reactor.spawnProcess(
            Output(), sys.executable,
            [sys.executable, "-c", launcher, "-r", "asyncio", "-n", "--pidfile=", "kezchat",
             "--listen", f"tcp:{self.port}:interface=127.0.0.1:backlog=4096",
             "--db", os.path.join(self.workdir, "bench.db"),
             "--send-limit", "0", "--register-limit", "0"],
            env={**os.environ, **self.env, "PYTHONPATH": self.source},
            path=self.workdir,
        )
        self.pid = self.process.pid
        await wait_until(self.reactor, "127.0.0.1", self.port)

    async def stop(self) -> None:
        from twisted.internet.task import deferLater

        if self.process is not None:
            self.process.signalProcess("TERM")
            for _ in range(100):
                if self.process is None:
                    break
                await deferLater(self.reactor, 0.1, lambda: None)
            if self.process is not None:
                self.process.signalProcess("KILL")
        shutil.rmtree(self.workdir, ignore_errors=True)

    def status(self, field: str) -> int:
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def rss_kib(self) -> int:
        return self.status("VmRSS")

    def reset_peak(self) -> None:
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass


class Watch:
    """
    Samples the server's RSS and probes healthz while an attack runs.
    """

    def __init__(self, reactor, server: ChatServer) -> None:
        self.reactor = reactor
        self.server = server
        self.peak = 0
        self.latencies: list[float] = []
        self.failures = 0
        self._running = False

    def start(self) -> None:
        from twisted.internet.defer import ensureDeferred, gatherResults

        self.server.reset_peak()
        self.peak = self.server.rss_kib()
        self._running = True
        self._done = gatherResults([ensureDeferred(self._sample()), ensureDeferred(self._probe())])

    async def stop(self) -> None:
        self._running = False
        await self._done
        self.peak = max(self.peak, self.server.status("VmHWM"))

    async def run(self, seconds: float) -> None:
        from twisted.internet.task import deferLater

        self.start()
        await deferLater(self.reactor, seconds, lambda: None)
        await self.stop()

    async def _sample(self) -> None:
        from twisted.internet.task import deferLater

        while self._running:
            self.peak = max(self.peak, self.server.rss_kib())
            await deferLater(self.reactor, 0.02, lambda: None)

    async def _probe(self) -> None:
        from twisted.internet.task import deferLater

        from kezchat.testing.rawhttp import connect_many

        raw = b"GET /v1/healthz HTTP/1.1\r\nHost: bench\r\n\r\n"
        pool = None
        while self._running:
            try:
                if pool is None:
                    pool = await connect_many(self.reactor, "127.0.0.1", self.server.port, 1)
                start = time.perf_counter()
                d = pool.request(raw)
                d.addTimeout(10, self.reactor)
                status, _ = await d
                self.latencies.append(time.perf_counter() - start)
                if status != 200:
                    self.failures += 1
            except Exception:
                self.failures += 1
                self.latencies.append(10.0)
                pool = None
            await deferLater(self.reactor, 0.02, lambda: None)
        if pool is not None:
            await pool.close()

    def latency(self) -> str:
        lat = [x * 1e3 for x in self.latencies]
        text = f"{percentile(lat, .5):.1f} / {percentile(lat, .99):.1f} ms"
        return text + (f" ({self.failures} failed)" if self.failures else "")


def mib(kib: int) -> str:
    return f"{kib / 1024:.0f} MiB"


# -- signing ---------------------------------------------------------------------------


class Client:
    """
    Registered users and their signed requests, as raw HTTP bytes.
    """

    def __init__(self, reactor, server: ChatServer) -> None:
        self.reactor = reactor
        self.server = server

    async def register(self, pool, handle: str):
        from kezchat.identity.keys import KeyPair
        from kezchat.protocol.registration import REGISTRATION_TAG, REGISTRATION_TYPE
        from kezchat.timeutil import format_rfc3339

        key = KeyPair.generate()
        payload = {"type": REGISTRATION_TYPE, "version": 1, "handle": handle,
                   "primary": key.primary, "server": "kez.lat",
                   "created_at": format_rfc3339(time.time())}
        body = json.dumps({"kez": REGISTRATION_TAG, "payload": payload,
                           "signature": {"alg": "ed25519-sha512-jcs", "key": key.primary,
                                         "sig": key.sign_jcs(payload)}}).encode()
        status, answer = await pool.request(post(b"/v1/register", body, {}))
        if status != 201:
            raise RuntimeError(f"registering {handle}: {status} {answer[:200]!r}")
        return key

    @staticmethod
    def message(key, sender: str, to: str, i: int, size: int) -> bytes:
        from kezchat.protocol.auth import body_digest, sign_request

        body = json.dumps({"to": to, "envelope": {"i": i, "ct": "x" * size}}).encode()
        auth = sign_request(key, "POST", "/v1/messages", [body_digest(body)], int(time.time()))
        return post(b"/v1/messages", body, {"X-KEZ-Sender": sender, "X-KEZ-Auth": auth})

    @staticmethod
    def stream(key, handle: str, last_event_id: int | None = None) -> bytes:
        from kezchat.protocol.auth import sign_request

        auth = sign_request(key, "GET", f"/v1/inbox/{handle}/stream", [], int(time.time()))
        extra = f"Last-Event-ID: {last_event_id}\r\n" if last_event_id is not None else ""
        return (f"GET /v1/inbox/{handle}/stream?auth={auth} HTTP/1.1\r\nHost: bench\r\n"
                f"Accept: text/event-stream\r\n{extra}\r\n").encode()

    @staticmethod
    def inbox(key, handle: str, since: int, limit: int) -> bytes:
        from kezchat.protocol.auth import sign_request

        auth = sign_request(key, "GET", f"/v1/inbox/{handle}", [f"since={since}"],
                            int(time.time()))
        return (f"GET /v1/inbox/{handle}?since={since}&limit={limit} HTTP/1.1\r\n"
                f"Host: bench\r\nX-KEZ-Auth: {auth}\r\n\r\n").encode()


def post(path: bytes, body: bytes, headers: dict[str, str]) -> bytes:
    head = b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items())
    return (b"POST " + path + b" HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json"
            b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n" + head + b"\r\n" + body)


# -- raw connections the attacks hold --------------------------------------------------


def _holder_class():
    from twisted.internet.defer import Deferred
    from twisted.internet.protocol import Protocol

    class Holder(Protocol):
        """
        Sends a request, then reads nothing (C{read=False}) or reads and
        counts what comes; C{done} fires when a response with a
        Content-Length is complete or the connection ends.
        """

        def __init__(self, raw: bytes, read: bool = True) -> None:
            self.raw = raw
            self.read = read
            self.received = 0
            self.head = b""
            self.expected: int | None = None
            self.closed = False
            self.first: Deferred = Deferred()
            self.done: Deferred = Deferred()

        def connectionMade(self) -> None:
            self.transport.write(self.raw)
            if not self.read:
                self.transport.pauseProducing()

        def dataReceived(self, data: bytes) -> None:
            self.received += len(data)
            if self.expected is None and len(self.head) < 16384:
                self.head += data[:16384]
                end = self.head.find(b"\r\n\r\n")
                if end >= 0:
                    self.expected = -1
                    for line in self.head[:end].split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            self.expected = end + 4 + int(value)
            if not self.first.called:
                self.first.callback(self)
            if self.expected is not None and 0 <= self.expected <= self.received:
                self._finish()

        def connectionLost(self, reason) -> None:
            self.closed = True
            if not self.first.called:
                self.first.callback(self)
            self._finish()

        def _finish(self) -> None:
            if not self.done.called:
                self.done.callback(self)

        def status(self) -> int:
            try:
                return int(self.head.split(b" ", 2)[1])
            except (IndexError, ValueError):
                return 0

    return Holder


async def connect(reactor, port: int, protocol):
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    return await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), protocol)


# -- the attacks -----------------------------------------------------------------------


async def idle(reactor, server: ChatServer, seconds: float = 3.0) -> Watch:
    watch = Watch(reactor, server)
    await watch.run(seconds)
    return watch


async def resume_attack(reactor, server: ChatServer, args) -> tuple[str, ...]:
    from twisted.internet.defer import gatherResults
    from twisted.internet.task import deferLater

    from kezchat.testing.rawhttp import connect_many

    client = Client(reactor, server)
    pool = await connect_many(reactor, "127.0.0.1", server.port, 8)
    victim = await client.register(pool, "victim")
    sender = await client.register(pool, "sender")
    messages = [client.message(sender, "sender", "victim", i, MESSAGE) for i in range(500)]
    statuses = await pool.blast(messages, lambda stamp: None)
    stored = sum(1 for s in statuses if s == 201)
    del messages
    await pool.close()
    calm = await idle(reactor, server)
    idle_rss = server.rss_kib()

    Holder = _holder_class()
    streams = []
    for _ in range(10):
        streams.append(await connect(reactor, server.port,
                                     Holder(client.stream(victim, "victim", 0), read=False)))
    pages: list[int] = []

    async def page_rounds() -> None:
        for _round in range(3):
            readers = [Holder(client.inbox(victim, "victim", 0, 500), read=True)
                       for _ in range(8)]
            for reader in readers:
                await connect(reactor, server.port, reader)
            await gatherResults([r.done for r in readers])
            pages.extend(r.received for r in readers)
            for r in readers:
                r.transport.loseConnection()

    watch = Watch(reactor, server)
    watch.start()
    began = time.perf_counter()
    await page_rounds()
    await deferLater(reactor, max(0.0, args.hold - (time.perf_counter() - began)), lambda: None)
    await watch.stop()
    for s in streams:
        s.transport.abortConnection()
    await deferLater(reactor, 2.0, lambda: None)
    after = server.rss_kib()
    notes = (f"{stored}/500 stored; 10 non-reading resumes; {len(pages)} pages of "
             f"{max(pages, default=0) / 2**20:.1f} MiB max")
    return ("resume", mib(idle_rss), mib(watch.peak), mib(after), calm.latency(),
            watch.latency(), notes)


async def fanout_attack(reactor, server: ChatServer, args) -> tuple[str, ...]:
    from twisted.internet.defer import gatherResults
    from twisted.internet.task import deferLater

    from kezchat.testing.rawhttp import connect_many

    client = Client(reactor, server)
    pool = await connect_many(reactor, "127.0.0.1", server.port, 2)
    target = await client.register(pool, "target")
    sender = await client.register(pool, "sender")
    calm = await idle(reactor, server)
    idle_rss = server.rss_kib()

    Holder = _holder_class()
    streams = []
    for start in range(0, args.fan_streams, 100):
        batch = [Holder(client.stream(target, "target")) for _ in
                 range(min(100, args.fan_streams - start))]
        for s in batch:
            await connect(reactor, server.port, s)
        await gatherResults([s.first for s in batch])
        streams.extend(batch)
    opened = [s for s in streams if s.status() == 200]
    refused = len(streams) - len(opened)
    base = {id(s): s.received for s in opened}
    watch = Watch(reactor, server)
    watch.start()
    start = time.perf_counter()
    status, _ = await pool.request(client.message(sender, "sender", "target", 0, MESSAGE))
    reached, took = 0, float("nan")
    deadline = start + args.hold
    while time.perf_counter() < deadline:
        reached = sum(1 for s in opened if s.received - base[id(s)] >= MESSAGE)
        if reached == len(opened):
            took = time.perf_counter() - start
            break
        await deferLater(reactor, 0.01, lambda: None)
    await deferLater(reactor, max(0.0, deadline - time.perf_counter()), lambda: None)
    await watch.stop()
    await pool.close()
    for s in streams:
        s.transport.abortConnection()
    await deferLater(reactor, 2.0, lambda: None)
    after = server.rss_kib()
    notes = (f"{len(opened)} streams open, {refused} refused; POST {status}; 250 KiB reached "
             f"{reached}/{len(opened)}" + (f" in {took * 1e3:.0f} ms" if took == took else ""))
    return ("fan-out", mib(idle_rss), mib(watch.peak), mib(after), calm.latency(),
            watch.latency(), notes)


async def slowloris_attack(reactor, server: ChatServer, args) -> tuple[str, ...]:
    from twisted.internet.task import LoopingCall, deferLater

    calm = await idle(reactor, server)
    idle_rss = server.rss_kib()
    Holder = _holder_class()
    conns = []
    for _ in range(args.slowloris):
        conns.append(await connect(reactor, server.port,
                                   Holder(b"GET /v1/healthz HTTP/1.1\r\nHost: bench\r\n")))
    n = [0]

    def dribble() -> None:
        n[0] += 1
        for c in conns:
            if not c.closed:
                c.transport.write(b"X-Slow-%d: %s\r\n" % (n[0], b"y" * 100))

    trickle = LoopingCall(dribble)
    trickle.clock = reactor
    trickle.start(2.0, now=False)
    watch = Watch(reactor, server)
    await watch.run(args.slowloris_hold)
    trickle.stop()
    still = sum(1 for c in conns if not c.closed)
    for c in conns:
        c.transport.abortConnection()
    await deferLater(reactor, 2.0, lambda: None)
    after = server.rss_kib()
    notes = f"{args.slowloris} slow heads, {still} still open at the end of the hold"
    return ("slowloris", mib(idle_rss), mib(watch.peak), mib(after), calm.latency(),
            watch.latency(), notes)


ATTACKS = {"resume": resume_attack, "fanout": fanout_attack, "slowloris": slowloris_attack}


if __name__ == "__main__":
    main()
