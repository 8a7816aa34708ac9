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
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench.relay import percentile  # noqa: E402
from kezchat.testing.hostile import ChatServer, Client, Holder, connect  # noqa: E402

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
