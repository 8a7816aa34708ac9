"""
Scale-out benchmark (issue 14): sustained messages per second and
POST→SSE latency with 1, 2 and 3 chat-server processes on one PostgreSQL
database and one nats-server, beside the single-process SQLite default,
all from the same run.

    .venv/bin/python bench/scaleout.py            # ~2 minutes
    .venv/bin/python bench/scaleout.py --quick    # ~1 minute

Everything runs on loopback and stops by itself: a throwaway PostgreSQL
cluster (Debian's postgresql package, durable settings: fsync and
synchronous_commit on), a nats-server from deploy/nats.conf, and
`twistd -r asyncio -n kezchat` processes. The load comes from this
process through kezchat/testing/rawhttp.py, requests signed before the clock
starts and spread round-robin over every instance's connections, as a
load balancer without sticky sessions would; each recipient's SSE stream
sits on one instance, so with several instances most messages cross
instances through NATS before they reach their stream.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from bench.relay import (  # noqa: E402
    SERVER,
    free_port,
    percentile,
    print_table,
    stream_request,
)

RUNS = itertools.count()


def run_twisted(args: argparse.Namespace) -> None:
    # asyncpg (creating the databases) is asyncio, as in the servers
    from twisted.internet import asyncioreactor

    asyncioreactor.install()
    from twisted.internet import reactor
    from twisted.internet.defer import ensureDeferred

    def go() -> None:
        d = ensureDeferred(benchmark(reactor, args))
        d.addErrback(lambda f: f.printTraceback())
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(go)
    reactor.run()


def process_cpu(pid: int) -> float:
    """
    User + system CPU seconds of one process (0 if it is gone).
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def backing_cpu(pg, nats) -> float:
    """
    CPU seconds of the PostgreSQL server (postmaster and every backend)
    and of nats-server: what the database and broker cost beside kezchat.
    """
    total = process_cpu(nats.process.pid) if nats.process is not None else 0.0
    try:
        postmaster = int((pg.data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return total
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == postmaster:
            total += process_cpu(int(entry))
    return total + process_cpu(postmaster)


class Instances:
    """
    The chat-server processes of one setup.
    """

    def __init__(self, reactor, count: int, db_args, extra: list[str], workdir: str,
                 code: str = ROOT) -> None:
        from kezchat.testing.processes import TailOutput, spawn_twistd

        self.ports = [free_port() for _ in range(count)]
        self.outputs = [TailOutput() for _ in range(count)]
        self.processes = []
        for n, (port, output) in enumerate(zip(self.ports, self.outputs, strict=True)):
            self.processes.append(spawn_twistd(
                reactor, output,
                ["-r", "asyncio", "-n", "--pidfile=", "kezchat",
                 "--listen", f"tcp:{port}:interface=127.0.0.1:backlog=4096",
                 *db_args(n), "--send-limit", "0", "--register-limit", "0", *extra],
                env={**os.environ, "PYTHONPATH": code},
                path=workdir,
            ))

    def cpu_seconds(self) -> float:
        return sum(self.each_cpu())

    def each_cpu(self) -> list[float]:
        return [process_cpu(process.pid) for process in self.processes]

    def stop(self) -> None:
        for process in self.processes:
            try:
                process.signalProcess("TERM")
            except Exception:
                pass


async def wait_healthy(reactor, port: int, want_nats: bool, timeout: float = 60.0) -> None:
    import treq
    from twisted.internet.task import deferLater

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            response = await treq.get(f"http://127.0.0.1:{port}/v1/healthz", persistent=False)
            body = json.loads(await response.content())
            if not want_nats or body.get("nats") == "connected":
                return
        except Exception:
            pass
        await deferLater(reactor, 0.2, lambda: None)
    raise RuntimeError(f"instance on port {port} did not come up")


async def one_setup(reactor, args, label: str, count: int, db_args, extra: list[str],
                    want_nats: bool, workdir: str, backing,
                    code: str = ROOT) -> list[tuple[str, ...]]:
    from twisted.internet.task import deferLater

    from kezchat.identity.keys import KeyPair
    from kezchat.protocol.auth import body_digest, sign_request
    from kezchat.protocol.registration import signed_registration
    from kezchat.testing.rawhttp import Pool, connect_many, open_streams

    instances = Instances(reactor, count, db_args, extra, workdir, code)
    try:
        for port in instances.ports:
            await wait_healthy(reactor, port, want_nats)

        def post(path: bytes, body: bytes, headers: dict[str, str]) -> bytes:
            head = b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items())
            return (b"POST " + path + b" HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json"
                    b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n" + head + b"\r\n"
                    + body)

        def registration(key: KeyPair, handle: str) -> bytes:
            body = json.dumps(signed_registration(key, handle, "kez.lat")).encode()
            return post(b"/v1/register", body, {})

        sender = KeyPair.generate()
        recipients = [(KeyPair.generate(), f"r{n:03d}") for n in range(args.recipients)]
        setup_pool = await connect_many(reactor, "127.0.0.1", instances.ports[0], 4)
        for key, handle in [(sender, "sender"), *recipients]:
            status, body = await setup_pool.request(registration(key, handle))
            assert status == 201, (status, body)
        await setup_pool.close()

        def message(i: int) -> bytes:
            to = recipients[i % len(recipients)][1]
            body = json.dumps({"to": to, "envelope": {"i": i, "ct": "x" * args.payload}}).encode()
            auth = sign_request(sender, "POST", "/v1/messages", [body_digest(body)],
                                int(time.time()), SERVER)
            return post(b"/v1/messages", body, {"X-KEZ-Sender": "sender", "X-KEZ-Auth": auth})

        # each recipient's stream on one instance, round-robin
        streams = []
        for n, (key, handle) in enumerate(recipients):
            port = instances.ports[n % count]
            [stream] = await open_streams(reactor, "127.0.0.1", port, [stream_request(key, handle)])
            streams.append(stream)
        sent_at: dict[int, float] = {}
        for stream in streams:
            stream.sent_at = sent_at

        def mark(i: int) -> None:
            sent_at[i] = time.perf_counter()

        def delivered() -> int:
            return sum(s.delivered for s in streams)

        async def until_delivered(total: int, timeout: float = 120.0) -> None:
            deadline = time.perf_counter() + timeout
            while delivered() < total:
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"only {delivered()} of {total} messages arrived")
                await deferLater(reactor, 0.01, lambda: None)

        connections = []
        for n in range(args.connections):
            connections += (await connect_many(
                reactor, "127.0.0.1",
                instances.ports[0 if args.post_to == "first" else n % count], 1)).connections
        pool = Pool(connections)

        import gc

        gc.collect()
        gc.disable()
        # warm-up: lazily imported code, first writes, JIT-less caches
        warm = [message(-1 - i) for i in range(args.warmup)]
        await pool.blast(warm, lambda _i: None)
        await until_delivered(len(warm))
        for stream in streams:
            stream.latencies = []

        # latency at a fixed rate
        rows = []
        rate = args.rate
        total = int(rate * args.seconds)
        bodies = [message(i) for i in range(total)]
        before = delivered()
        rate_each = instances.each_cpu()
        rate_cpu = instances.cpu_seconds()
        start = time.perf_counter()
        pending = []
        for i, raw in enumerate(bodies):
            delay = start + i / rate - time.perf_counter()
            if delay > 0.0005:
                await deferLater(reactor, delay, lambda: None)
            pending.append(pool.request(raw, stamp=i, on_send=mark))
        for d in pending:
            await d
        await until_delivered(before + total)
        rate_cpu = instances.cpu_seconds() - rate_cpu
        rate_each = [b - a for b, a in zip(instances.each_cpu(), rate_each, strict=True)]
        latencies = [x * 1e3 for s in streams for x in s.latencies]
        for stream in streams:
            stream.latencies = []

        # maximum sustained
        offset = total
        bodies = [message(offset + i) for i in range(args.burst)]
        before = delivered()
        each = instances.each_cpu()
        cpu, other_cpu = instances.cpu_seconds(), backing()
        start = time.perf_counter()
        results = await pool.blast(bodies, lambda i: mark(offset + i))
        stored_at = time.perf_counter()
        await until_delivered(before + args.burst)
        finished = time.perf_counter()
        cpu = instances.cpu_seconds() - cpu
        each = [after - first for after, first in zip(instances.each_cpu(), each, strict=True)]
        other_cpu = backing() - other_cpu
        gc.enable()
        ok = sum(1 for status in results if status == 201)
        burst_latencies = [x * 1e3 for s in streams for x in s.latencies]
        rows.append((
            label,
            f"{ok / (stored_at - start):,.0f}",
            f"{args.burst / (finished - start):,.0f}",
            f"{percentile(latencies, .5):.2f}",
            f"{percentile(latencies, .99):.2f}",
            f"{percentile(burst_latencies, .5):.0f}",
            f"{rate_cpu / total * 1e6:.0f}",
            "/".join(f"{c / total * 1e6:.0f}" for c in rate_each),
            f"{cpu / args.burst * 1e6:.0f}",
            "/".join(f"{c / args.burst * 1e6:.0f}" for c in each),
            f"{other_cpu / args.burst * 1e6:.0f}",
            f"{ok}/{args.burst}",
        ))
        await pool.close()
        for stream in streams:
            stream.close()
        return rows
    except Exception:
        for output in instances.outputs:
            sys.stderr.write(output.output.decode(errors="replace")[-3000:])
        raise
    finally:
        instances.stop()
        from twisted.internet.task import deferLater

        await deferLater(reactor, 1.0, lambda: None)


async def run_setup(reactor, args, setup: str, code: str, pg, nats, nats_args: list[str],
                    workdir: str) -> list[tuple[str, ...]]:
    """
    The rows of one setup, its instances running the code in C{code}.
    """
    from kezchat.compat.aio import deferred_from_coroutine

    run = f"{setup}-{next(RUNS)}"  # a fresh database per run
    with_nats = setup in ("sqlite+nats", "pg1", "pg2", "pg3")
    if with_nats:
        # a fresh JetStream per setup: no leftovers in the shared consumer
        nats.stop()
        shutil.rmtree(nats.store_dir, ignore_errors=True)
        nats.start()
    if setup.startswith("sqlite"):
        path = os.path.join(workdir, f"{run}.db")
        label = "SQLite, 1 process" + (" + NATS" if with_nats else "")
        count, db_args = 1, ["--db", path]
    else:
        count = int(setup[2])
        name = await deferred_from_coroutine(pg.create_database(run.replace("-", "_")))
        db_args = ["--db", pg.url(name, pool_max_size=str(args.pool))]
        label = f"PostgreSQL, {count} instance{'s' if count > 1 else ''}"
        label += " + NATS" if with_nats else " (no NATS)"
    if len(args.code) > 1:
        label += f" [{os.path.basename(os.path.normpath(code))}]"
    return await one_setup(
        reactor, args, label, count, lambda n, db_args=db_args: db_args,
        nats_args if with_nats else [], with_nats, workdir,
        (lambda: backing_cpu(pg, nats)) if with_nats or setup.startswith("pg")
        else (lambda: 0.0),
        code)


async def benchmark(reactor, args: argparse.Namespace) -> None:
    from kezchat.testing.natsserver import NatsServer
    from kezchat.testing.pgsupport import PostgresCluster, find_bin_dir

    workdir = tempfile.mkdtemp(prefix="kezchat-scaleout-")
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise SystemExit("PostgreSQL is not installed (apt-get install postgresql)")
    # durable, as an operator would run it
    pg = PostgresCluster(bin_dir, settings={"fsync": "on", "synchronous_commit": "on",
                                            "max_connections": "100"})
    nats = NatsServer(Path(workdir) / "nats")
    rows: list[tuple[str, ...]] = []
    try:
        pg.start()
        nats.start()
        nats_args = ["--nats-url", nats.url, "--nats-seed", str(nats.callout_seed_path),
                     "--callout-issuer-seed", str(nats.issuer_seed_path)]
        for setup in args.setups:
            for code in args.code:
                done = await run_setup(reactor, args, setup, code, pg, nats, nats_args, workdir)
                for row in done:  # as they come, in case a later setup fails
                    print(" | ".join(row), file=sys.stderr, flush=True)
                rows += done
    finally:
        nats.stop()
        pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    header = ("setup", "stored/s", "stored+delivered/s", f"p50 ms @{args.rate}/s",
              f"p99 ms @{args.rate}/s", "p50 ms in burst", f"kezchat CPU µs/msg @{args.rate}/s",
              "per instance (the stream's first)",
              "kezchat CPU µs/msg in burst", "per instance (the stream's first)",
              "PostgreSQL+NATS CPU µs/msg", "201s")
    print()
    print_table(header, rows)
    print(f"\n{args.burst} messages per burst over {args.connections} connections,"
          f" {args.recipients} recipients each with one SSE stream; {os.cpu_count()} CPUs"
          " shared by everything (servers, PostgreSQL, nats-server, load generator)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs")
    parser.add_argument("--rate", type=int, default=200, help="msg/s of the latency row")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--burst", type=int, default=12000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--connections", type=int, default=30)
    parser.add_argument("--recipients", type=int, default=30)
    parser.add_argument("--payload", type=int, default=200)
    parser.add_argument("--pool", type=int, default=10, help="PostgreSQL pool per instance")
    parser.add_argument(
        "--setups", nargs="+", default=["sqlite", "sqlite+nats", "pg1-local", "pg1", "pg2", "pg3"],
        choices=["sqlite", "sqlite+nats", "pg1-local", "pg1", "pg2", "pg3"],
        help="pg1-local: one PostgreSQL instance without NATS",
    )
    parser.add_argument(
        "--post-to", choices=["all", "first"], default="all",
        help="send every message to the first instance (which holds the first stream)"
             " instead of round-robin: isolates what the other instances pay per message",
    )
    parser.add_argument(
        "--code", nargs="+", default=[ROOT], metavar="DIR",
        help="run the instances from these checkouts (each setup once per checkout,"
             " interleaved): compares two versions in one run",
    )
    args = parser.parse_args()
    args.code = [os.path.abspath(d) for d in args.code]
    if args.quick:
        args.seconds, args.burst, args.warmup = 2.0, 4000, 300
    run_twisted(args)


if __name__ == "__main__":
    main()
