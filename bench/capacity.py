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
import base64
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

from bench.relay import SERVER, free_port, percentile, stream_request  # noqa: E402


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
    parser.add_argument("--server-reactor", default=None, choices=("epoll", "asyncio"),
                        help="default: epoll on SQLite, asyncio with NATS (which needs it)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--backend", default="sqlite", choices=("sqlite", "pg"),
                        help="pg: a throwaway durable PostgreSQL cluster and a nats-server"
                             " from deploy/nats.conf, shared by --instances processes")
    parser.add_argument("--instances", default="1",
                        help="comma-separated instance counts (pg only): the population is"
                             " registered once, then measured with each count in turn")
    parser.add_argument("--pool", type=int, default=10, help="PostgreSQL pool per instance")
    parser.add_argument("--pg-dir", help="reuse a running throwaway cluster (the directory"
                        " kezchat.testing.pgsupport made) instead of starting one")
    parser.add_argument("--pg-database", help="with --pg-dir: a database whose --users users"
                        " this bench registered already (keys and names are deterministic):"
                        " skips registering them again")
    args = parser.parse_args()
    if args.server_reactor is None:
        args.server_reactor = "asyncio" if args.backend == "pg" else "epoll"
    args.instance_counts = [int(n) for n in args.instances.split(",")]
    if args.backend == "sqlite" and args.instance_counts != [1]:
        raise SystemExit("SQLite is one process: --instances needs --backend pg")

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
        backing = await Backing.start(args)
        try:
            for users in sizes:
                async for row in one_population(reactor, args, pattern, users, backing):
                    rows.append(row)
        finally:
            backing.stop()

    def go() -> None:
        d = ensureDeferred(everything())
        d.addErrback(lambda f: f.printTraceback())
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(go)
    reactor.run()
    print()
    print(f"pattern: {pattern.describe()}")
    backend = ("SQLite" if args.backend == "sqlite"
               else "PostgreSQL (durable: fsync, synchronous_commit) + nats-server")
    print(f"server: twistd -r {args.server_reactor} kezchat, {backend},"
          f" {args.seconds:g} s at peak; load average {os.getloadavg()[0]:.1f} at the end")
    print_table(rows)


class Backing:
    """
    What the instances share: nothing on SQLite; on PostgreSQL, the
    cluster and a nats-server.
    """

    def __init__(self, pg=None, nats=None, workdir: str | None = None) -> None:
        self.pg = pg
        self.nats = nats
        self.workdir = workdir

    @classmethod
    async def start(cls, args: argparse.Namespace) -> Backing:
        if args.backend == "sqlite":
            return cls()
        from pathlib import Path

        from kezchat.testing.natsserver import NatsServer
        from kezchat.testing.pgsupport import PostgresCluster, find_bin_dir

        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise SystemExit("PostgreSQL is not installed (apt-get install postgresql)")
        workdir = tempfile.mkdtemp(prefix="kezchat-capacity-backing-")
        pg = PostgresCluster(bin_dir, settings={"fsync": "on", "synchronous_commit": "on",
                                                "max_connections": "100"})
        if args.pg_dir:
            shutil.rmtree(pg.directory, ignore_errors=True)
            pg.directory = Path(args.pg_dir)
            pg.data, pg.sockets = pg.directory / "data", pg.directory / "sockets"
            pg.log_path = pg.directory / "postgres.log"
            pg.running = True
        else:
            pg.start()
        nats = NatsServer(Path(workdir) / "nats")
        nats.start()
        return cls(pg, nats, workdir)

    def stop(self) -> None:
        if self.nats is not None:
            self.nats.stop()
        if self.pg is not None:
            self.pg.stop()
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def server_args(self) -> list[str]:
        if self.nats is None:
            return []
        return ["--nats-url", self.nats.url, "--nats-seed", str(self.nats.callout_seed_path),
                "--callout-issuer-seed", str(self.nats.issuer_seed_path)]

    def cpu_seconds(self) -> float:
        if self.pg is None:
            return 0.0
        from bench.scaleout import backing_cpu

        return backing_cpu(self.pg, self.nats)

    def nats_rss_mib(self) -> float:
        if self.nats is None or self.nats.process is None:
            return 0.0
        return rss_mib(self.nats.process.pid)

    def jetstream_bytes(self) -> int:
        if self.nats is None:
            return 0
        return directory_bytes(str(self.nats.store_dir))

    async def database_bytes(self, name: str) -> int:
        import asyncpg

        from kezchat.compat.aio import deferred_from_coroutine

        async def size() -> int:
            conn = await asyncpg.connect(self.pg.url(name))
            try:
                return int(await conn.fetchval("SELECT pg_database_size(current_database())"))
            finally:
                await conn.close()

        return await deferred_from_coroutine(size())


def rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def directory_bytes(path: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def print_table(rows: list[dict]) -> None:
    header = (
        "users",
        "instances",
        "streams",
        "peak msg/s",
        "sent",
        "delivered/expected",
        "kezchat CPU cores idle→peak",
        "CPU µs/msg",
        "PG+NATS CPU cores at peak",
        "PG+NATS µs/msg",
        "kezchat RSS MiB idle→streams→peak",
        "KiB/stream",
        "NATS RSS MiB",
        "DB MiB after registration",
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
                    f"{r['instances']}",
                    f"{r['streams']:,}",
                    f"{r['rate']:.1f}",
                    f"{r['sent']:,}",
                    f"{r['delivered']:,}/{r['expected']:,}",
                    f"{r['idle_cores']:.3f}→{r['cores']:.3f}",
                    f"{r['cpu_per_msg_us']:,.0f}",
                    f"{r['backing_cores']:.3f}",
                    f"{r['backing_per_msg_us']:,.0f}",
                    f"{r['rss_idle']:.0f}→{r['rss_streams']:.0f}→{r['rss_peak']:.0f}",
                    f"{r['kib_per_stream']:.1f}",
                    f"{r['nats_rss']:.0f}",
                    f"{r['db_registered_mib']:,.1f}",
                    f"{r['db_per_msg']:,.0f}",
                    f"{r['db_per_user_day'] / 1024:,.1f}",
                    f"{r['db_mib']:,.1f}",
                    f"{r['health_idle'][0]:.2f}/{r['health_idle'][1]:.2f}",
                    f"{r['health_peak'][0]:.2f}/{r['health_peak'][1]:.2f}",
                ]
            )
            + " |"
        )


class Instances:
    """
    C{count} chat-server processes over one database.
    """

    def __init__(self, reactor, args: argparse.Namespace, count: int, db_arg: str,
                 extra: list[str], workdir: str) -> None:
        from kezchat.testing.processes import TailOutput, spawn_twistd

        self.ports = [free_port() for _ in range(count)]
        self.servers = [TailOutput() for _ in range(count)]
        self.processes = [
            spawn_twistd(
                reactor,
                server,
                [
                    "-r", args.server_reactor, "-n",
                    "--pidfile=", "kezchat",
                    "--listen", f"tcp:{port}:interface=127.0.0.1:backlog=4096",
                    "--db", db_arg, "--send-limit", "0", "--register-limit", "0",
                    "--max-streams-per-handle", "0", "--max-streams-per-ip", "0", *extra,
                ],
                env={**os.environ, "PYTHONPATH": os.path.dirname(HERE)},
                path=workdir,
            )
            for port, server in zip(self.ports, self.servers, strict=True)
        ]

    def cpu_seconds(self) -> float:
        from bench.scaleout import process_cpu

        return sum(process_cpu(p.pid) for p in self.processes)

    def rss_mib(self) -> float:
        return sum(rss_mib(p.pid) for p in self.processes)

    async def stop(self) -> None:
        for process in self.processes:
            try:
                process.signalProcess("TERM")
            except Exception:
                pass
        for server in self.servers:
            await server.ended

    def output(self) -> str:
        return "".join(s.output.decode(errors="replace")[-3000:] for s in self.servers)


async def one_population(reactor, args: argparse.Namespace, pattern: Pattern, users: int,
                         backing: Backing):
    """
    The rows of one population: registered once, then measured with each
    instance count in turn (the same database; the messages of an earlier
    count stay in it, as they would on a server).
    """
    from twisted.internet.defer import gatherResults
    from twisted.internet.task import deferLater

    from bench.scaleout import wait_healthy
    from kezchat.compat.aio import deferred_from_coroutine
    from kezchat.identity.keys import KeyPair
    from kezchat.protocol.registration import signed_registration
    from kezchat.testing.rawhttp import Pool, connect_many, wait_until

    rng = random.Random(users)
    workdir = tempfile.mkdtemp(prefix="kezchat-capacity-")
    reused = False
    if backing.pg is None:
        db = os.path.join(workdir, "capacity.db")
        db_arg, pg_name = db, None
    elif args.pg_database:
        pg_name, reused = args.pg_database, True
        db_arg = backing.pg.url(pg_name, pool_max_size=str(args.pool))
    else:
        pg_name = await deferred_from_coroutine(
            backing.pg.create_database(f"capacity_{users}_{int(time.time())}"))
        db_arg = backing.pg.url(pg_name, pool_max_size=str(args.pool))

    async def db_bytes() -> int:
        """
        On SQLite: the database file's size once its write-ahead log is
        folded in (a checkpoint from a connection of our own, which SQLite
        allows while the server writes): what the messages cost on disk
        for good. On PostgreSQL: pg_database_size (tables and indexes;
        the WAL is recycled).
        """
        if pg_name is not None:
            return await backing.database_bytes(pg_name)
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
            b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n" + head + b"\r\n"
            + body
        )

    health_raw = b"GET /v1/healthz HTTP/1.1\r\nHost: capacity\r\n\r\n"
    keys = [KeyPair(i.to_bytes(4, "big") * 8) for i in range(users)]
    names = [f"user{i}" for i in range(users)]
    registered_bytes = 0

    try:
        for number, count in enumerate(args.instance_counts):
            instances = Instances(reactor, args, count, db_arg, backing.server_args(), workdir)
            try:
                for port in instances.ports:
                    await wait_until(reactor, "127.0.0.1", port)
                    await wait_healthy(reactor, port, backing.nats is not None)
                # the load balancer's part: connections spread over the instances
                connections = []
                for n in range(args.connections):
                    connections += (await connect_many(
                        reactor, "127.0.0.1", instances.ports[n % count], 1)).connections
                pool = Pool(connections)

                if number == 0 and not reused:
                    # -- the population: every user registered for real
                    t0 = time.monotonic()
                    queue = list(range(users))

                    async def register_worker(queue=queue, pool=pool) -> None:
                        while queue:
                            i = queue.pop()
                            body = json.dumps(
                                signed_registration(keys[i], names[i], "kez.lat")).encode()
                            status, answer = await pool.request(post(b"/v1/register", body, {}))
                            if status != 201:
                                raise RuntimeError(
                                    f"registration {i}: {status} {answer[:200]!r}")

                    await gatherResults(
                        [ensure(register_worker()) for _ in range(args.connections)]
                    )
                    took = time.monotonic() - t0
                    print(f"{users:,} users registered in {took:.0f} s"
                          f" ({users / took:.0f}/s)", file=sys.stderr)
                if number == 0:
                    registered_bytes = await db_bytes()
                # opened now: an idle keep-alive connection is cut after
                # 60 s, and registering 100,000 users takes minutes
                probe = await connect_many(reactor, "127.0.0.1", instances.ports[0], 1)
                row = await measure(
                    reactor, args, pattern, users, rng, keys, names, instances, pool, probe,
                    backing, db_bytes, post, health_raw)
                row["db_registered_mib"] = registered_bytes / 2**20
                print(json.dumps(row), file=sys.stderr, flush=True)
                await pool.close()
                await probe.close()
                yield row
            except Exception:
                sys.stderr.write(instances.output())
                raise
            finally:
                await instances.stop()
                await deferLater(reactor, 1.0, lambda: None)
    finally:
        if pg_name is not None:
            await deferred_from_coroutine(backing.pg.drop_database(pg_name))
        shutil.rmtree(workdir, ignore_errors=True)


async def measure(reactor, args, pattern: Pattern, users: int, rng: random.Random, keys, names,
                  instances: Instances, pool, probe, backing: Backing, db_bytes, post,
                  health_raw: bytes) -> dict:
    """
    One row: idle, then the online share's streams, then the peak.
    """
    from twisted.internet.defer import gatherResults
    from twisted.internet.task import deferLater

    from kezchat.protocol.auth import body_digest, sign_request
    from kezchat.testing.rawhttp import open_streams

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
    rss_idle = instances.rss_mib()

    # -- the online share holds streams, spread over the instances
    online_count = max(2, round(users * pattern.online))
    online = rng.sample(range(users), online_count)
    stream_count = max(online_count, round(online_count * pattern.streams))
    owners = [online[i % online_count] for i in range(stream_count)]
    t0 = time.monotonic()
    streams = []
    count = len(instances.ports)
    for k, port in enumerate(instances.ports):
        requests = [stream_request(keys[i], names[i]) for i in owners[k::count]]
        streams += await open_streams(reactor, "127.0.0.1", port, requests, batch=200)
    opened = sum(1 for s in streams if s.open)
    print(f"{opened:,} of {stream_count:,} streams open in {time.monotonic() - t0:.0f} s",
          file=sys.stderr)
    streams_per_user: dict[int, int] = {}
    for i in owners:
        streams_per_user[i] = streams_per_user.get(i, 0) + 1
    await deferLater(reactor, 2.0, lambda: None)
    rss_streams = instances.rss_mib()
    cpu_idle_start, idle_start = instances.cpu_seconds(), time.monotonic()
    await deferLater(reactor, 10.0, lambda: None)
    idle_cores = (instances.cpu_seconds() - cpu_idle_start) / (time.monotonic() - idle_start)

    # -- the peak: messages at the population's peak rate
    rate = pattern.peak_rate(users)
    total = max(1, int(rate * args.seconds))
    messages = []
    expected = 0
    noise = base64.b64encode(
        os.urandom(pattern.attachment_kib * 1024 * 3 // 4 + 3)).decode()
    for n in range(total):
        sender = rng.choice(online)
        recipient = rng.randrange(users)
        _kind, size = envelope_size(pattern, rng)
        # ciphertext does not compress (PostgreSQL compresses large
        # values: a run of "x" would cost it almost nothing on disk)
        envelope = {"i": n, "ct": noise[:size]}
        body = json.dumps({"to": names[recipient], "envelope": envelope}).encode()
        # the recipient's streams get it, and the sender's own streams
        # get the sender's copy (one item when writing to oneself)
        expected += streams_per_user.get(recipient, 0)
        if sender != recipient:
            expected += streams_per_user.get(sender, 0)
        messages.append((sender, body))
    delivered_before = sum(s.delivered for s in streams)
    db_before = await db_bytes()
    cpu_before, backing_before = instances.cpu_seconds(), backing.cpu_seconds()
    started = time.monotonic()
    health_task = ensure(healthz_series(args.seconds))
    statuses: list[int] = []
    rss_peak = rss_streams

    interval = 1.0 / rate
    pending = []
    for n, (sender, body) in enumerate(messages):
        due = started + n * interval
        wait = due - time.monotonic()
        if wait > 0:
            await deferLater(reactor, wait, lambda: None)
        auth = sign_request(
            keys[sender], "POST", "/v1/messages", [body_digest(body)], int(time.time()), SERVER
        )
        raw = post(b"/v1/messages", body, {"X-KEZ-Sender": names[sender], "X-KEZ-Auth": auth})
        pending.append(pool.request(raw).addCallback(lambda r: statuses.append(r[0])))
        if n % 50 == 0:
            rss_peak = max(rss_peak, instances.rss_mib())
    await gatherResults(pending)
    health_peak = await health_task
    await deferLater(reactor, 2.0, lambda: None)
    elapsed = time.monotonic() - started
    cpu = instances.cpu_seconds() - cpu_before
    backing_cpu = backing.cpu_seconds() - backing_before
    rss_peak = max(rss_peak, instances.rss_mib())
    stored = sum(1 for s in statuses if s == 201)
    delivered = sum(s.delivered for s in streams) - delivered_before
    db_after = await db_bytes()
    db_per_msg = (db_after - db_before) / max(1, stored)
    if stored != total:
        print(f"warning: {total - stored} of {total} sends not stored", file=sys.stderr)
    for stream in streams:
        stream.close()
    return {
        "users": users,
        "instances": count,
        "streams": opened,
        "rate": rate,
        "sent": stored,
        "delivered": delivered,
        "expected": expected,
        "cores": cpu / elapsed,
        "idle_cores": idle_cores,
        "cpu_per_msg_us": cpu / max(1, stored) * 1e6,
        "backing_cores": backing_cpu / elapsed,
        "backing_per_msg_us": backing_cpu / max(1, stored) * 1e6,
        "rss_idle": rss_idle,
        "rss_streams": rss_streams,
        "rss_peak": rss_peak,
        "kib_per_stream": (rss_streams - rss_idle) * 1024 / max(1, opened),
        "nats_rss": backing.nats_rss_mib(),
        "jetstream_mib": backing.jetstream_bytes() / 2**20,
        "db_per_msg": db_per_msg,
        "db_per_user_day": db_per_msg * pattern.messages,
        "db_mib": db_after / 2**20,
        "health_idle": (percentile(health_idle, 0.5), percentile(health_idle, 0.99)),
        "health_peak": (percentile(health_peak, 0.5), percentile(health_peak, 0.99)),
    }


def ensure(coro):
    from twisted.internet.defer import ensureDeferred

    return ensureDeferred(coro)


if __name__ == "__main__":
    main()
