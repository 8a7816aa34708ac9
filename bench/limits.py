"""
What replays and rate limits shared across instances cost per message.

Sends go to one chat-server process (`twistd -r asyncio -n kezchat`, as
shipped) on SQLite and on PostgreSQL, with the send limit off (`0`) and on
(a limit never reached, so every send is counted and none refused). Each
send carries no idempotency key, so the server keys it by its signature
(the replay check). The table gives sustained msg/s over many connections,
the server's CPU per message, and the mean latency of one send at a time.

    .venv/bin/python bench/limits.py                       # this checkout
    .venv/bin/python bench/limits.py --compare /old/tree   # and another, in turn

With C{--compare} the two checkouts' servers take turns within each round,
so both see the same load; compare the medians' ratios, the machine's load
moves absolute figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench.relay import free_port  # noqa: E402


async def one_setup(
    reactor, args: argparse.Namespace, root: str, db: str, limit: int
) -> tuple[float, ...]:
    from kezchat.identity.keys import KeyPair
    from kezchat.protocol.auth import body_digest, sign_request
    from kezchat.protocol.registration import signed_registration
    from kezchat.testing.processes import TailOutput, spawn_twistd, twistd_launcher
    from kezchat.testing.rawhttp import connect_many, wait_until

    port = free_port()
    server = TailOutput()
    process = spawn_twistd(
        reactor, server,
        ["-r", "asyncio", "-n", "--pidfile=", "kezchat",
         "--listen", f"tcp:{port}:interface=127.0.0.1:backlog=1024",
         "--db", db, "--send-limit", str(limit), "--register-limit", "0",
         "--access-log", "off"],
        env={**os.environ, "PYTHONPATH": root},
        path=tempfile.mkdtemp(prefix="kezchat-limits-"),
        launcher=twistd_launcher(raise_fd_limit=False),
    )

    def cpu_seconds() -> float:
        with open(f"/proc/{process.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def post(path: bytes, body: bytes, headers: dict[str, str]) -> bytes:
        head = b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items())
        return (b"POST " + path + b" HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json"
                b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n" + head + b"\r\n"
                + body)

    try:
        await wait_until(reactor, "127.0.0.1", port)
        pool = await connect_many(reactor, "127.0.0.1", port, args.connections)
        sender, recipient = KeyPair.generate(), KeyPair.generate()
        for key, handle in ((sender, "sender"), (recipient, "recipient")):
            body = json.dumps(signed_registration(key, handle, "kez.lat")).encode()
            status, _ = await pool.request(post(b"/v1/register", body, {}))
            assert status == 201, (status, server.output[-2000:])

        def message(i: int) -> bytes:
            body = json.dumps({"to": "recipient", "envelope": {"i": i, "ct": "x" * 200}}).encode()
            auth = sign_request(sender, "POST", "/v1/messages", [body_digest(body)],
                                int(time.time()))
            return post(b"/v1/messages", body, {"X-KEZ-Sender": "sender", "X-KEZ-Auth": auth})

        await pool.blast([message(-1 - i) for i in range(300)], lambda stamp: None)
        # one at a time: the latency a lone client sees
        single = pool.connections[0]
        bodies = [message(10**6 + i) for i in range(args.single)]
        start = time.perf_counter()
        for raw in bodies:
            status, _ = await single.request(raw)
            assert status == 201, status
        lone_ms = (time.perf_counter() - start) / len(bodies) * 1e3
        # many at once: throughput and CPU per message
        bodies = [message(i) for i in range(args.burst)]
        cpu = cpu_seconds()
        start = time.perf_counter()
        statuses = await pool.blast(bodies, lambda stamp: None)
        elapsed = time.perf_counter() - start
        cpu = cpu_seconds() - cpu
        assert set(statuses) == {201}, set(statuses)
        await pool.close()
        return args.burst / elapsed, cpu / args.burst * 1e6, lone_ms
    finally:
        process.signalProcess("TERM")
        await server.ended


async def benchmark(reactor, args: argparse.Namespace) -> None:
    from kezchat.compat.aio import deferred_from_coroutine
    from kezchat.testing.pgsupport import PostgresCluster, find_bin_dir

    workdir = tempfile.mkdtemp(prefix="kezchat-limits-")
    pg = None
    bin_dir = find_bin_dir()
    if bin_dir is not None and "pg" in args.backends:
        pg = PostgresCluster(bin_dir, settings={"fsync": "on", "synchronous_commit": "on"})
        pg.start()
    roots = [args.root] + ([args.compare] if args.compare else [])
    rows = []
    try:
        for round_ in range(args.rounds):
            for backend in args.backends:
                for limit in (0, 10**9):
                    # the checkouts take turns within each round, so both
                    # see the same load of a shared machine
                    for root in roots:
                        if backend == "sqlite":
                            db = os.path.join(workdir, f"r{round_}-{limit}-{len(rows)}.db")
                        else:
                            if pg is None:
                                continue
                            name = await deferred_from_coroutine(pg.create_database())
                            db = pg.url(name)
                        rate, cpu_us, lone = await one_setup(reactor, args, root, db, limit)
                        rows.append((root, backend, "on" if limit else "off", rate, cpu_us, lone))
                        print(f"{os.path.basename(root):14} {backend:6}"
                              f" limit {'on ' if limit else 'off'}  {rate:7.0f} msg/s"
                              f"  {cpu_us:6.0f} µs CPU/msg  {lone:5.2f} ms/send alone",
                              flush=True)
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nmedians of {args.rounds} rounds:")
    print("| server | backend | send limit | msg/s | server CPU µs/msg | ms per lone send |")
    print("|---|---|---|---|---|---|")
    for root in roots:
        for backend in args.backends:
            for limit in ("off", "on"):
                mine = [r for r in rows if r[:3] == (root, backend, limit)]
                if mine:
                    rate = statistics.median(r[3] for r in mine)
                    cpu = statistics.median(r[4] for r in mine)
                    lone = statistics.median(r[5] for r in mine)
                    print(f"| {root} | {backend} | {limit} | {rate:.0f} | {cpu:.0f}"
                          f" | {lone:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=os.path.dirname(HERE),
                        help="the checkout whose server runs (PYTHONPATH)")
    parser.add_argument("--compare", help="another checkout to run in turn with --root")
    parser.add_argument("--burst", type=int, default=4000)
    parser.add_argument("--single", type=int, default=300)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "pg"],
                        choices=["sqlite", "pg"])
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
