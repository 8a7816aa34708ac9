"""
The key directory's cost: head, inclusion and consistency latency and
server CPU at growing log sizes, and what the log adds to a registration.

    .venv/bin/python bench/keylog.py                       # 10^4 and 10^5 leaves
    .venv/bin/python bench/keylog.py --sizes 10000,100000,1000000 --synthetic-above 100000

For each size N, a SQLite database is filled offline, as the server itself
would have filled it: N registrations (distinct handles and keys, signed,
their JCS bytes the leaves), the handles table, and every complete subtree
hash. Above C{--synthetic-above}, leaves past that count are distinct
unsigned stand-ins of the same length (a proof's cost does not depend on
what the leaves say, and signing a million registrations would take this
machine longer than the rest of the bench). Then C{twistd -r asyncio -n
kezchat} starts on the file as a separate process and one client (treq, one
request in flight) measures each route; the server's CPU comes from
C{/proc/<pid>/stat}.

The registration rows run in this process against the same store code:
the same batch of registrations written with the log (the leaf and its new
subtree hashes in the registration's transaction) and without it, in
alternating blocks, 50 in flight (group commit as in the server), so both
see the same machine load.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from typing import Any

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import rfc8785  # noqa: E402
from nacl.bindings import crypto_sign, crypto_sign_seed_keypair  # noqa: E402
from treq.client import HTTPClient  # noqa: E402
from twisted.internet import defer, task  # noqa: E402
from twisted.web.client import Agent, HTTPConnectionPool  # noqa: E402

from bench.registrations import ServerProcess  # noqa: E402
from kezchat.keylog.merkle import MemoryTree  # noqa: E402
from kezchat.storage.sqlite.keylog import ensure_log_key  # noqa: E402
from kezchat.storage.sqlite.schema import upgrade  # noqa: E402

SERVER = "kez.lat"
TS = "2026-05-25T03:00:00Z"


def signed_leaf(i: int) -> tuple[str, str, bytes]:
    """
    (handle, primary, leaf) of a real registration, signed.
    """
    pk, sk = crypto_sign_seed_keypair(os.urandom(32))
    primary = "ed25519:" + pk.hex()
    handle = f"u{i:07d}"
    payload = {"type": "kez.chat.handle_registration", "version": 1, "handle": handle,
               "primary": primary, "server": SERVER, "created_at": TS}
    sig = crypto_sign(rfc8785.dumps(payload), sk)[:64].hex()
    body = {"kez": "handle_registration", "payload": payload,
            "signature": {"alg": "ed25519-sha512-jcs", "key": primary, "sig": sig}}
    return handle, primary, rfc8785.dumps(body)


def synthetic_leaf(i: int, template: bytes) -> tuple[str, str, bytes]:
    handle = f"u{i:07d}"
    primary = "ed25519:" + i.to_bytes(32, "big").hex()
    return handle, primary, template.replace(b"u0000000", handle.encode(), 1)[:len(template)]


def fill(path: str, size: int, synthetic_above: int) -> float:
    """
    A database of C{size} registrations; seconds it took.
    """
    started = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    upgrade(conn)
    conn.execute("INSERT INTO settings (name, value) VALUES ('server', ?)", (SERVER,))
    ensure_log_key(conn)
    tree = MemoryTree()
    template = signed_leaf(0)[2]
    conn.execute("BEGIN")
    batch: list[tuple[str, str, bytes]] = []

    def flush() -> None:
        base = tree.size - len(batch)
        conn.executemany(
            "INSERT INTO handles (fqhn, local, server, primary_key, registered_at)"
            " VALUES (?, ?, ?, ?, ?)",
            [(f"{h}@{SERVER}", h, SERVER, p, 1.7e9) for h, p, _ in batch],
        )
        conn.executemany(
            "INSERT INTO log_leaves (idx, fqhn, leaf) VALUES (?, ?, ?)",
            [(base + n, f"{h}@{SERVER}", leaf) for n, (h, _, leaf) in enumerate(batch)],
        )
        batch.clear()

    for i in range(size):
        entry = signed_leaf(i) if i < synthetic_above else synthetic_leaf(i, template)
        batch.append(entry)
        tree.append(entry[2])
        if len(batch) >= 5000:
            flush()
    flush()
    conn.executemany(
        "INSERT INTO log_nodes (level, idx, hash) VALUES (?, ?, ?)",
        ((level, i, h) for level, hashes in enumerate(tree.levels) for i, h in enumerate(hashes)),
    )
    conn.execute("COMMIT")
    conn.close()
    return time.perf_counter() - started


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(client: HTTPClient, pid: int, urls: list[str]) -> dict[str, float]:
    """
    One request at a time over C{urls}: latency percentiles, server CPU
    per request.
    """
    from twisted.internet import reactor

    latencies = []
    cpu_before = cpu_seconds(pid)
    for url in urls:
        started = reactor.seconds()
        response = await client.get(url)
        body = await response.content()
        if response.code != 200:
            raise RuntimeError(f"{url}: {response.code} {body[:200]!r}")
        latencies.append(reactor.seconds() - started)
    cpu = cpu_seconds(pid) - cpu_before
    latencies.sort()
    return {
        "n": len(urls),
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "cpu_us": cpu / len(urls) * 1e6,
    }


async def bench_size(reactor: Any, size: int, args: argparse.Namespace, scratch: str) -> dict:
    path = os.path.join(scratch, f"log-{size}.db")
    filled = fill(path, size, args.synthetic_above)
    print(f"  {size} leaves filled in {filled:.1f} s", file=sys.stderr)
    server = ServerProcess()
    process = reactor.spawnProcess(
        server, sys.executable,
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
         "-r", "asyncio", "-n", "--pidfile=", "kezchat",
         "--listen", "tcp:0:interface=127.0.0.1", "--db", path, "--server", SERVER,
         "--register-limit", "0", "--log-format", "json"],
        env=dict(os.environ, PYTHONPATH=REPO_ROOT), path=REPO_ROOT,
    )
    rows: dict[str, Any] = {"filled_s": filled}
    try:
        port = await server.port
        url = f"http://127.0.0.1:{port}"
        pool = HTTPConnectionPool(reactor, persistent=True)
        client = HTTPClient(Agent(reactor, pool=pool))
        pid = process.pid
        rng = random.Random(size)
        n = args.requests
        rows["head (first: root + sign)"] = await measure(client, pid, [f"{url}/v1/log/head"])
        rows["head (cached)"] = await measure(client, pid, [f"{url}/v1/log/head"] * n)
        rows["inclusion"] = await measure(client, pid, [
            f"{url}/v1/log/inclusion?handle=u{rng.randrange(size):07d}&size={size}"
            for _ in range(n)
        ])
        rows["consistency"] = await measure(client, pid, [
            f"{url}/v1/log/consistency?from={rng.randrange(1, size)}&to={size}"
            for _ in range(n)
        ])
        rows["entries (1000)"] = await measure(client, pid, [
            f"{url}/v1/log/entries?start={rng.randrange(size - 1000)}&count=1000"
            for _ in range(max(10, n // 10))
        ])
        rows["lookup /v1/u (baseline)"] = await measure(client, pid, [
            f"{url}/v1/u/u{rng.randrange(size):07d}" for _ in range(n)
        ])
        await pool.closeCachedConnections()
    finally:
        if process.pid is not None:
            process.signalProcess(signal.SIGTERM)
        await server.ended
    rows["db_mb"] = sum(
        os.path.getsize(path + suffix) for suffix in ("", "-wal") if os.path.exists(path + suffix)
    ) / 1e6
    rows["path"] = path
    return rows


async def registration_cost(reactor: Any, path: str, count: int, concurrency: int) -> dict:
    """
    The same store writing registrations with and without the log, in
    alternating blocks on the database of the largest size.
    """
    from kezchat.storage.interfaces import HandleRecord
    from kezchat.storage.sqlite import SQLiteDatabase, SQLiteRegistryStore

    db = SQLiteDatabase(path, reactor)
    db.startService()
    await db.when_ready()
    store = SQLiteRegistryStore(db)
    entries = [signed_leaf(10_000_000 + i) for i in range(count)]
    blocks = 10
    per = count // blocks
    results: dict[str, list[float]] = {"with the log": [], "without the log": []}
    cpu: dict[str, float] = {"with the log": 0.0, "without the log": 0.0}
    wall: dict[str, float] = {"with the log": 0.0, "without the log": 0.0}
    for b in range(blocks):
        mode = "with the log" if b % 2 == 0 else "without the log"
        block = entries[b * per:(b + 1) * per]
        pending = iter(block)

        async def worker(mode: str = mode, pending: Any = pending) -> None:
            for handle, primary, leaf in pending:
                record = HandleRecord(handle, SERVER, primary, time.time())
                started = reactor.seconds()
                if mode == "with the log":
                    await store.add_handle(record, leaf)
                else:
                    await store.add_handle(record)
                results[mode].append(reactor.seconds() - started)

        cpu_before, wall_before = time.process_time(), time.perf_counter()
        await defer.gatherResults([defer.ensureDeferred(worker()) for _ in range(concurrency)])
        cpu[mode] += time.process_time() - cpu_before
        wall[mode] += time.perf_counter() - wall_before
    await db.stopService()
    jcs_started = time.process_time()
    for _ in range(2000):
        rfc8785.dumps(json.loads(entries[0][2]))
    jcs_us = (time.process_time() - jcs_started) / 2000 * 1e6
    out = {}
    for mode, latencies in results.items():
        latencies.sort()
        out[mode] = {
            "n": len(latencies),
            "per_s": len(latencies) / wall[mode],
            "p50": statistics.median(latencies) * 1000,
            "p99": latencies[int(len(latencies) * 0.99)] * 1000,
            "cpu_us": cpu[mode] / len(latencies) * 1e6,
        }
    out["jcs_us"] = jcs_us  # type: ignore[assignment]
    return out


async def main(reactor: Any, args: argparse.Namespace) -> None:
    scratch = tempfile.mkdtemp(prefix="kezchat-bench-keylog-")
    sizes = [int(s) for s in args.sizes.split(",")]
    try:
        results = {}
        for size in sizes:
            print(f"log of {size} leaves ...", file=sys.stderr)
            results[size] = await bench_size(reactor, size, args, scratch)
        print(f"registrations on the {sizes[-1]}-leaf database ...", file=sys.stderr)
        reg = await registration_cost(reactor, results[sizes[-1]]["path"], args.registrations, 50)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    load = os.getloadavg()
    print(f"\nkezchat key directory benchmark: server `twistd -r asyncio` (separate process, "
          f"SQLite), one request in flight, {args.requests} requests per row, "
          f"{os.cpu_count()} cores, load average {load[0]:.1f}\n")
    print(f"| {'leaves':>8} | {'request':<26} | {'p50 ms':>7} | {'p99 ms':>7} | "
          f"{'server CPU µs/req':>17} |")
    print(f"|{'-' * 10}|{'-' * 28}|{'-' * 9}|{'-' * 9}|{'-' * 19}|")
    for size, rows in results.items():
        for name, row in rows.items():
            if not isinstance(row, dict):
                continue
            print(f"| {size:>8} | {name:<26} | {row['p50']:>7.2f} | {row['p99']:>7.2f} | "
                  f"{row['cpu_us']:>17.0f} |")
    print()
    for size, rows in results.items():
        print(f"{size} leaves: filled offline in {rows['filled_s']:.1f} s, "
              f"database {rows['db_mb']:.0f} MB")
    print(f"\nregistrations, store level, 50 in flight, on the {sizes[-1]}-leaf database "
          f"(alternating blocks, same run):\n")
    print(f"| {'mode':<16} | {'n':>5} | {'per s':>7} | {'p50 ms':>7} | {'p99 ms':>7} | "
          f"{'CPU µs/reg':>10} |")
    print(f"|{'-' * 18}|{'-' * 7}|{'-' * 9}|{'-' * 9}|{'-' * 9}|{'-' * 12}|")
    for mode in ("without the log", "with the log"):
        row = reg[mode]
        print(f"| {mode:<16} | {row['n']:>5} | {row['per_s']:>7.0f} | {row['p50']:>7.2f} | "
              f"{row['p99']:>7.2f} | {row['cpu_us']:>10.0f} |")
    extra = reg["with the log"]["cpu_us"] - reg["without the log"]["cpu_us"]
    print(f"\nthe log adds {extra:.0f} µs of CPU per registration in the store "
          f"({reg['with the log']['cpu_us'] / reg['without the log']['cpu_us']:.2f}×), plus "
          f"{reg['jcs_us']:.0f} µs for the leaf's JCS in the registry")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="log sizes [10000,100000]")
    parser.add_argument("--synthetic-above", type=int, default=10**9,
                        help="leaves past this count are unsigned stand-ins [none]")
    parser.add_argument("--requests", type=int, default=300, help="requests per row [300]")
    parser.add_argument("--registrations", type=int, default=2000,
                        help="registrations for the with/without rows [2000]")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, arguments)))
