"""
Capacity model: what does a server for N users cost?

Simulates N registered users with a stated daily pattern and measures, on
a real chat-server process, what that population costs at its daily peak:

- every user registered for real (the database holds N records);
- the online share of them holding SSE streams, for real (idle streams
  dominate a chat server's memory);
- the peak message rate of the population, for real, for a bounded time:
  texts, inline attachments and P2P offers in the stated shares, each
  from a random online user to a random user (online recipients get it
  on their streams);
- meanwhile a person's health check every 100 ms (its latency is what a
  user waiting for a page feels).

It prints one row per N: server CPU (cores busy at the peak), RSS and its
part per stream, database bytes per message and per user-day, database
size, delivered/sent, and healthz p50/p99 — beside the same run's idle
healthz latency as the baseline. docs/capacity.md turns these rows into
sizing for 1k / 100k / 1M users.

    .venv/bin/python bench/capacity.py                       # 1k, 10k, 100k users
    .venv/bin/python bench/capacity.py --users 1000 --seconds 20   # a quick look

Everything runs on loopback and stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench.relay import free_port, percentile, stream_request  # noqa: E402


@dataclass(frozen=True)
class Pattern:
    """
    The stated daily pattern of one user, and how the day peaks.
    """

    online: float  # share of users online at the daily peak
    streams: float  # SSE streams per online user (tabs, devices)
    messages: float  # messages sent per user per day
    peak: float  # peak message rate / the day's average rate
    attachment_share: float  # share of messages that carry an inline attachment
    attachment_kib: int  # size of an inline attachment's envelope
    p2p_share: float  # share of messages that are P2P file offers
    text_bytes: int  # size of a text message's envelope

    def peak_rate(self, users: int) -> float:
        return users * self.messages * self.peak / 86400.0

    def describe(self) -> str:
        return (
            f"online at peak {self.online:.0%}, {self.streams:g} streams per online user, "
            f"{self.messages:g} messages per user per day, peak {self.peak:g}× the average; "
            f"{self.attachment_share:.0%} inline attachments of {self.attachment_kib} KiB, "
            f"{self.p2p_share:.0%} P2P offers, texts of {self.text_bytes} B"
        )


def envelope_size(pattern: Pattern, rng: random.Random) -> tuple[str, int]:
    draw = rng.random()
    if draw < pattern.attachment_share:
        return "attachment", pattern.attachment_kib * 1024
    if draw < pattern.attachment_share + pattern.p2p_share:
        return "p2p offer", 1200  # a sealed file_share: ticket, key, digest, name
    return "text", pattern.text_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", default="1000,10000,100000", help="comma-separated N")
    parser.add_argument("--seconds", type=float, default=60.0, help="peak load per row")
    parser.add_argument("--online", type=float, default=0.10)
    parser.add_argument("--streams", type=float, default=1.5)
    parser.add_argument("--messages", type=float, default=40.0)
    parser.add_argument("--peak", type=float, default=3.0)
    parser.add_argument("--attachment-share", type=float, default=0.05)
    parser.add_argument("--attachment-kib", type=int, default=60)
    parser.add_argument("--p2p-share", type=float, default=0.01)
    parser.add_argument("--text-bytes", type=int, default=600)
    parser.add_argument("--server-reactor", default="epoll", choices=("epoll", "asyncio"))
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    pattern = Pattern(
        online=args.online,
        streams=args.streams,
        messages=args.messages,
        peak=args.peak,
        attachment_share=args.attachment_share,
        attachment_kib=args.attachment_kib,
        p2p_share=args.p2p_share,
        text_bytes=args.text_bytes,
    )
    sizes = [int(n) for n in args.users.split(",")]

    from twisted.internet import asyncioreactor

    asyncioreactor.install()
    from twisted.internet import reactor
    from twisted.internet.defer import ensureDeferred

    rows: list[dict] = []

    async def everything() -> None:
        for users in sizes:
            rows.append(await one_population(reactor, args, pattern, users))

    def go() -> None:
        d = ensureDeferred(everything())
        d.addErrback(lambda f: f.printTraceback())
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(go)
    reactor.run()
    print()
    print(f"pattern: {pattern.describe()}")
    print(f"server: twistd -r {args.server_reactor} kezchat, SQLite, {args.seconds:g} s at peak")
    print_table(rows)


def print_table(rows: list[dict]) -> None:
    header = (
        "users",
        "streams",
        "peak msg/s",
        "sent",
        "delivered/expected",
        "CPU cores idle→peak",
        "CPU µs/msg",
        "RSS MiB idle→streams→peak",
        "KiB/stream",
        "DB B/msg",
        "DB KiB/user-day",
        "DB MiB",
        "healthz p50/p99 ms idle",
        "at peak",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print(
            "| "
            + " | ".join(
                [
                    f"{r['users']:,}",
                    f"{r['streams']:,}",
                    f"{r['rate']:.1f}",
                    f"{r['sent']:,}",
                    f"{r['delivered']:,}/{r['expected']:,}",
                    f"{r['idle_cores']:.3f}→{r['cores']:.3f}",
                    f"{r['cpu_per_msg_us']:,.0f}",
                    f"{r['rss_idle']:.0f}→{r['rss_streams']:.0f}→{r['rss_peak']:.0f}",
                    f"{r['kib_per_stream']:.1f}",
                    f"{r['db_per_msg']:,.0f}",
                    f"{r['db_per_user_day'] / 1024:,.1f}",
                    f"{r['db_mib']:,.1f}",
                    f"{r['health_idle'][0]:.2f}/{r['health_idle'][1]:.2f}",
                    f"{r['health_peak'][0]:.2f}/{r['health_peak'][1]:.2f}",
                ]
            )
            + " |"
        )


async def one_population(reactor, args: argparse.Namespace, pattern: Pattern, users: int) -> dict:
    from twisted.internet.defer import Deferred, gatherResults
    from twisted.internet.protocol import ProcessProtocol
    from twisted.internet.task import deferLater

    from kezchat.identity.keys import KeyPair
    from kezchat.protocol.auth import body_digest, sign_request
    from kezchat.protocol.registration import signed_registration
    from kezchat.testing.rawhttp import connect_many, open_streams, wait_until

    rng = random.Random(users)
    workdir = tempfile.mkdtemp(prefix="kezchat-capacity-")
    port = free_port()
    db = os.path.join(workdir, "capacity.db")

    class Server(ProcessProtocol):
        def __init__(self) -> None:
            self.output = b""
            self.ended: Deferred = Deferred()

        def processEnded(self, reason: object) -> None:
            self.ended.callback(None)

        def outReceived(self, data: bytes) -> None:
            self.output = (self.output + data)[-65536:]

        errReceived = outReceived

    launcher = (
        "import resource, sys\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))\n"
        "from twisted.scripts.twistd import run\n"
        "sys.argv = ['twistd'] + sys.argv[1:]\n"
        "run()\n"
    )
    server = Server()
    process = reactor.spawnProcess(
        server,
        sys.executable,
        [
            sys.executable, "-c", launcher, "-r", args.server_reactor, "-n", "--pidfile=",
            "kezchat", "--listen", f"tcp:{port}:interface=127.0.0.1:backlog=4096",
            "--db", db, "--send-limit", "0", "--register-limit", "0",
            "--max-streams-per-handle", "0", "--max-streams-per-ip", "0",
        ],
        env={**os.environ, "PYTHONPATH": os.path.dirname(HERE)},
        path=workdir,
    )

    def cpu_seconds() -> float:
        with open(f"/proc/{process.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mib() -> float:
        with open(f"/proc/{process.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def db_bytes() -> int:
        """
        The database file's size once its write-ahead log is folded in (a
        checkpoint from a connection of our own, which SQLite allows while
        the server writes): what the messages cost on disk for good.
        """
        import sqlite3

        conn = sqlite3.connect(db, timeout=10)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
        return os.path.getsize(db)

    def post(path: bytes, body: bytes, headers: dict[str, str]) -> bytes:
        head = b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items())
        return (
            b"POST " + path + b" HTTP/1.1\r\nHost: capacity\r\nContent-Type: application/json"
            b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n" + head + b"\r\n" + body
        )

    health_raw = b"GET /v1/healthz HTTP/1.1\r\nHost: capacity\r\n\r\n"

    try:
        await wait_until(reactor, "127.0.0.1", port)
        pool = await connect_many(reactor, "127.0.0.1", port, args.connections)
        probe = await connect_many(reactor, "127.0.0.1", port, 1)

        # -- the population: every user registered for real
        t0 = time.monotonic()
        keys = [KeyPair(i.to_bytes(4, "big") * 8) for i in range(users)]
        names = [f"user{i}" for i in range(users)]
        queue = list(range(users))

        async def register_worker() -> None:
            while queue:
                i = queue.pop()
                body = json.dumps(signed_registration(keys[i], names[i], "kez.lat")).encode()
                status, answer = await pool.request(post(b"/v1/register", body, {}))
                if status != 201:
                    raise RuntimeError(f"registration {i}: {status} {answer[:200]!r}")

        await gatherResults(
            [ensure(register_worker()) for _ in range(args.connections)]
        )
        print(f"{users:,} users registered in {time.monotonic() - t0:.0f} s", file=sys.stderr)

        async def healthz_series(seconds: float) -> list[float]:
            latencies = []
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                start = time.perf_counter()
                await probe.request(health_raw)
                latencies.append((time.perf_counter() - start) * 1000)
                await deferLater(reactor, 0.1, lambda: None)
            return latencies

        await deferLater(reactor, 1.0, lambda: None)
        health_idle = await healthz_series(5.0)
        rss_idle = rss_mib()

        # -- the online share holds streams
        online_count = max(2, round(users * pattern.online))
        online = rng.sample(range(users), online_count)
        stream_count = max(online_count, round(online_count * pattern.streams))
        owners = [online[i % online_count] for i in range(stream_count)]
        requests = [stream_request(keys[i], names[i]) for i in owners]
        t0 = time.monotonic()
        streams = await open_streams(reactor, "127.0.0.1", port, requests, batch=200)
        print(f"{stream_count:,} streams open in {time.monotonic() - t0:.0f} s", file=sys.stderr)
        streams_per_user: dict[int, int] = {}
        for i in owners:
            streams_per_user[i] = streams_per_user.get(i, 0) + 1
        await deferLater(reactor, 2.0, lambda: None)
        rss_streams = rss_mib()
        cpu_idle_start, idle_start = cpu_seconds(), time.monotonic()
        await deferLater(reactor, 10.0, lambda: None)
        idle_cores = (cpu_seconds() - cpu_idle_start) / (time.monotonic() - idle_start)

        # -- the peak: messages at the population's peak rate
        rate = pattern.peak_rate(users)
        count = max(1, int(rate * args.seconds))
        messages = []
        expected = 0
        kinds: dict[str, int] = {}
        for n in range(count):
            sender = rng.choice(online)
            recipient = rng.randrange(users)
            kind, size = envelope_size(pattern, rng)
            kinds[kind] = kinds.get(kind, 0) + 1
            envelope = {"i": n, "ct": "x" * size}
            body = json.dumps({"to": names[recipient], "envelope": envelope}).encode()
            # the recipient's streams get it, and the sender's own streams
            # get the sender's copy (one item when writing to oneself)
            expected += streams_per_user.get(recipient, 0)
            if sender != recipient:
                expected += streams_per_user.get(sender, 0)
            messages.append((sender, body))
        db_before = db_bytes()
        cpu_before = cpu_seconds()
        started = time.monotonic()
        health_task = ensure(healthz_series(args.seconds))
        statuses: list[int] = []
        rss_peak = rss_streams

        async def pace() -> None:
            nonlocal rss_peak
            interval = 1.0 / rate
            pending = []
            for n, (sender, body) in enumerate(messages):
                due = started + n * interval
                wait = due - time.monotonic()
                if wait > 0:
                    await deferLater(reactor, wait, lambda: None)
                auth = sign_request(
                    keys[sender], "POST", "/v1/messages", [body_digest(body)], int(time.time())
                )
                raw = post(
                    b"/v1/messages", body, {"X-KEZ-Sender": names[sender], "X-KEZ-Auth": auth}
                )
                pending.append(pool.request(raw).addCallback(lambda r: statuses.append(r[0])))
                if n % 50 == 0:
                    rss_peak = max(rss_peak, rss_mib())
            await gatherResults(pending)

        await pace()
        health_peak = await health_task
        await deferLater(reactor, 2.0, lambda: None)
        elapsed = time.monotonic() - started
        cpu = cpu_seconds() - cpu_before
        rss_peak = max(rss_peak, rss_mib())
        stored = sum(1 for s in statuses if s == 201)
        delivered = sum(s.delivered for s in streams)
        db_growth = db_bytes() - db_before
        db_per_msg = db_growth / max(1, stored)
        row = {
            "users": users,
            "streams": stream_count,
            "rate": rate,
            "sent": stored,
            "delivered": delivered,
            "expected": expected,
            "cores": cpu / elapsed,
            "idle_cores": idle_cores,
            "cpu_per_msg_us": cpu / max(1, stored) * 1e6,
            "rss_idle": rss_idle,
            "rss_streams": rss_streams,
            "rss_peak": rss_peak,
            "kib_per_stream": (rss_streams - rss_idle) * 1024 / stream_count,
            "db_per_msg": db_per_msg,
            "db_per_user_day": db_per_msg * pattern.messages,
            "db_mib": db_bytes() / 2**20,
            "health_idle": (percentile(health_idle, 0.5), percentile(health_idle, 0.99)),
            "health_peak": (percentile(health_peak, 0.5), percentile(health_peak, 0.99)),
            "kinds": kinds,
        }
        if stored != count:
            print(f"warning: {count - stored} of {count} sends not stored", file=sys.stderr)
        print(json.dumps({k: v for k, v in row.items()}), file=sys.stderr)
        for stream in streams:
            stream.close()
        await pool.close()
        await probe.close()
        return row
    finally:
        process.signalProcess("TERM")
        await server.ended
        shutil.rmtree(workdir, ignore_errors=True)


def ensure(coro):
    from twisted.internet.defer import ensureDeferred

    return ensureDeferred(coro)


if __name__ == "__main__":
    main()
