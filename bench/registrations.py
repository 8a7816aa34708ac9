"""
Registration throughput of one chat-server process.

    .venv/bin/python bench/registrations.py [--count N] [--concurrency C]

Starts C{twistd -r asyncio -n kezchat} in a separate process on a free
loopback port with a fresh database and C{--register-limit 0}, signs N
registrations up front (so the load process spends its time on HTTP, not
on Ed25519), then sends them with at most C requests in flight over
keep-alive connections. The same client first measures C{GET /v1/healthz}
at the same concurrency: that row is the ceiling of this client and
server pair on this machine, which the registration figure should be read
against (the load generator shares the machine's cores with the server).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from treq.client import HTTPClient  # noqa: E402
from twisted.internet import defer, task  # noqa: E402
from twisted.internet.protocol import ProcessProtocol  # noqa: E402
from twisted.web.client import Agent, HTTPConnectionPool  # noqa: E402

from kezchat.identity.keys import KeyPair  # noqa: E402
from kezchat.protocol.registration import REGISTRATION_TAG, REGISTRATION_TYPE  # noqa: E402
from kezchat.timeutil import format_rfc3339  # noqa: E402


class ServerProcess(ProcessProtocol):
    """
    A twistd child logging JSON; C{port} fires with the bound port.
    """

    def __init__(self) -> None:
        self.port: defer.Deferred[int] = defer.Deferred()
        self.ended: defer.Deferred[None] = defer.Deferred()
        self.buffer = b""
        self.errors = b""

    def outReceived(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            if b"listening on" in line and not self.port.called:
                address = json.loads(line)["address"]
                self.port.callback(int(address.rsplit("port=", 1)[1].rstrip(")")))

    def errReceived(self, data: bytes) -> None:
        self.errors += data

    def processEnded(self, reason: object) -> None:
        if not self.port.called:
            self.port.errback(RuntimeError(f"server did not start:\n{self.errors.decode()}"))
        self.ended.callback(None)


def registrations(count: int) -> list[bytes]:
    """
    C{count} signed registration bodies with distinct handles and keys.
    """
    now = format_rfc3339(time.time())
    bodies = []
    for i in range(count):
        key = KeyPair(os.urandom(32))
        payload = {
            "type": REGISTRATION_TYPE,
            "version": 1,
            "handle": f"bench{i:07d}",
            "primary": key.primary,
            "server": "kez.lat",
            "created_at": now,
        }
        body = {
            "kez": REGISTRATION_TAG,
            "payload": payload,
            "signature": {"alg": "ed25519-sha512-jcs", "key": key.primary,
                          "sig": key.sign_jcs(payload)},
        }
        bodies.append(json.dumps(body).encode())
    return bodies


async def fire(client: HTTPClient, requests: list, concurrency: int, expect: int) -> dict:
    """
    Send C{requests} (callables returning a response Deferred) with at
    most C{concurrency} in flight; returns counts and latencies.
    """
    from twisted.internet import reactor

    latencies: list[float] = []
    failures = 0
    pending = iter(requests)

    async def worker() -> None:
        nonlocal failures
        for make in pending:
            started = reactor.seconds()
            try:
                response = await make()
                await response.content()
                ok = response.code == expect
            except Exception:
                ok = False
            latencies.append(reactor.seconds() - started)
            failures += not ok

    started = reactor.seconds()
    await defer.gatherResults(
        [defer.ensureDeferred(worker()) for _ in range(concurrency)], consumeErrors=True
    )
    elapsed = reactor.seconds() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "failures": failures,
        "seconds": elapsed,
        "rate": len(latencies) / elapsed,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
    }


async def main(reactor: object, args: argparse.Namespace) -> None:
    scratch = tempfile.mkdtemp(prefix="kezchat-bench-")
    server = ServerProcess()
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    process = reactor.spawnProcess(
        server,
        sys.executable,
        [
            sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "-r", args.server_reactor, "-n", "--pidfile=", "kezchat",
            "--listen", "tcp:0:interface=127.0.0.1",
            "--db", os.path.join(scratch, "bench.db"),
            "--register-limit", "0",
            "--log-format", "json",
        ],
        env=env,
        path=REPO_ROOT,
    )
    try:
        port = await server.port
        url = f"http://127.0.0.1:{port}"
        print(f"signing {args.count} registrations ...", file=sys.stderr)
        bodies = registrations(args.count)
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = args.concurrency
        client = HTTPClient(Agent(reactor, pool=pool))
        headers = {b"Content-Type": [b"application/json"]}

        # warm up connections and code paths
        await fire(client, [lambda: client.get(f"{url}/v1/healthz")] * 200,
                   args.concurrency, 200)
        health = await fire(
            client, [lambda: client.get(f"{url}/v1/healthz")] * args.count, args.concurrency, 200
        )
        register = await fire(
            client,
            [
                (lambda body=body: client.post(f"{url}/v1/register", data=body, headers=headers))
                for body in bodies
            ],
            args.concurrency,
            201,
        )
        await pool.closeCachedConnections()
    finally:
        if process.pid is not None:
            process.signalProcess(signal.SIGTERM)
        await server.ended
        shutil.rmtree(scratch, ignore_errors=True)

    print(
        f"\nkezchat registration benchmark: server `twistd -r {args.server_reactor}` "
        f"(separate process), client treq, {args.concurrency} in flight, "
        f"{args.count} requests per row, loopback, {os.cpu_count()} cores\n"
    )
    print(f"| {'request':<24} | {'n':>6} | {'failed':>6} | {'req/s':>8} | {'p50 ms':>7} "
          f"| {'p99 ms':>7} |")
    print(f"|{'-' * 26}|{'-' * 8}|{'-' * 8}|{'-' * 10}|{'-' * 9}|{'-' * 9}|")
    for name, row in (("GET /v1/healthz", health), ("POST /v1/register (201)", register)):
        print(
            f"| {name:<24} | {row['requests']:>6} | {row['failures']:>6} | {row['rate']:>8.0f} "
            f"| {row['p50']:>7.2f} | {row['p99']:>7.2f} |"
        )
    if register["failures"]:
        raise SystemExit("some registrations failed")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=5000, help="requests per row [5000]")
    parser.add_argument("--concurrency", type=int, default=50, help="requests in flight [50]")
    parser.add_argument("--server-reactor", default="asyncio", help="twistd -r value [asyncio]")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, arguments)))
