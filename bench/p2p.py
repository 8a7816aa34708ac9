"""
Peer-to-peer file transfer throughput over Iroh on loopback.

    .venv/bin/python bench/p2p.py [--sizes 64,256] [--repeat 2]
    .venv/bin/python bench/p2p.py --sizes 256 --profile py-spy:/tmp/p2p

Runs inside a fresh network namespace with only loopback up (it re-runs
itself under C{unshare --net}), because every Iroh endpoint sends a UPnP
multicast at start.  For each size it writes a file of random bytes, then
starts two separate processes — a sender serving the file with
L{kezchat.p2p.transfer.FileServer} and a fetcher running
L{kezchat.p2p.transfer.fetch} — so each side has its own interpreter as
with two CLIs.  The time is the fetcher's, from dial to the verified,
decrypted, fsynced and renamed file; the sender's encryption pass to
compute the offer's BLAKE3 is timed apart (it runs before the offer is
sent).

Beside it, in the same run: the bare transport (the same number of bytes
in the same writes as the protocol makes, between two processes, with no
file, encryption or hashing), run just before and just after the transfer
so that a change in the machine's load shows in both; P2P ÷ bare compares
the transfer with the mean of the two.  CPU ms/MiB is the CPU time of both
processes (every thread) per MiB moved, for the transfer and for the bare
transport: on a loaded machine it moves less than the throughput does.
And C{cp} of the same file, the local-copy baseline (no fsync: it flatters
C{cp}).  Peak RSS (VmHWM) of both processes should not grow with the file
size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

MiB = 1 << 20


def loopback_only() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def _peak_rss_mib() -> float:
    """
    This process's peak resident set (VmHWM), in MiB.

    Read from /proc rather than from wait4's ru_maxrss, which a child
    inherits from its parent's size when it execs.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_seconds() -> float:
    """
    CPU time (user + system) of this process so far, all its threads:
    Python's, the worker's and the Rust runtime's.
    """
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _thread_cpu() -> dict[str, float]:
    """
    CPU seconds so far of each kind of thread in this process, from
    /proc: the event loop's (C{python}: Python, and the bindings' calls
    made from it), the transfer's worker (C{kez-p2p_0}: file and
    cryptography) and the Rust runtimes' (C{tokio-rt-worker} and
    C{async-compat/tokio}: QUIC, UDP).
    """
    tick = os.sysconf("SC_CLK_TCK")
    threads: dict[str, float] = {}
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/stat") as f:
                stat = f.read()
        except FileNotFoundError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        kind = "rust runtime" if name.startswith(("tokio", "async-compat")) else name
        threads[kind] = threads.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return threads


def _meter() -> Callable[[], dict]:
    """
    Start measuring CPU; the function returned says how much was spent
    since: C{cpu} for the whole process, C{threads} by kind of thread
    (what threads that ended meanwhile spent counts as the transfer
    worker's: it is the one that ends).
    """
    cpu, threads = _cpu_seconds(), _thread_cpu()

    def stop() -> dict:
        spent = _cpu_seconds() - cpu
        now = _thread_cpu()
        by_kind = {kind: seconds - threads.get(kind, 0.0) for kind, seconds in now.items()}
        ended = max(0.0, spent - sum(by_kind.values()))
        by_kind["kez-p2p_0"] = by_kind.get("kez-p2p_0", 0.0) + ended
        return {"cpu": spent, "threads": by_kind}

    return stop


def _sender(args: argparse.Namespace) -> None:
    from kezchat.manifests import new_content_key
    from kezchat.p2p.crypt import ciphertext_digest
    from kezchat.p2p.irohnode import IrohNode
    from kezchat.p2p.transfer import FileServer, Offer

    async def main() -> None:
        node = await IrohNode.bind(bytes.fromhex(args.seed), "127.0.0.1:0")
        key = new_content_key()
        started, cpu = time.perf_counter(), _cpu_seconds()
        digest, size = ciphertext_digest(args.file, key)
        hashing = time.perf_counter() - started
        cpu = _cpu_seconds() - cpu
        offer = Offer(digest, args.file, key, size, bytes.fromhex(args.peer))
        done = asyncio.get_running_loop().create_future()
        server = FileServer(node, {digest: offer}.get, lambda offer: done.set_result(None))
        server.start()
        print(
            json.dumps(
                {
                    "ticket": node.ticket(),
                    "blake3": digest,
                    "size": size,
                    "key": key.hex(),
                    "hashing": hashing,
                }
            ),
            flush=True,
        )
        serving = _meter()
        await asyncio.wait_for(done, 600)
        served = serving()
        await server.stop()
        await node.close()
        print(json.dumps({"peak_rss": _peak_rss_mib(), **served}), flush=True)

    asyncio.run(main())


def _fetcher(args: argparse.Namespace) -> None:
    from kezchat.p2p.irohnode import IrohNode
    from kezchat.p2p.transfer import Download, fetch

    async def main() -> None:
        offer = json.loads(args.offer)
        node = await IrohNode.bind(bytes.fromhex(args.seed), "127.0.0.1:0")
        download = Download(
            offer["blake3"], offer["size"], bytes.fromhex(offer["key"]), offer["ticket"]
        )
        started, fetching = time.perf_counter(), _meter()
        await fetch(node, download, args.out, timeout=30)
        seconds, fetched = time.perf_counter() - started, fetching()
        await node.close()
        print(json.dumps({"seconds": seconds, "peak_rss": _peak_rss_mib(), **fetched}), flush=True)

    asyncio.run(main())


def _raw_sender(args: argparse.Namespace) -> None:
    """
    The transport alone: the same number of bytes in writes of the size
    the protocol makes, no file, no encryption, no hashing.
    """
    from kezchat.p2p.crypt import CHUNK, TAG
    from kezchat.p2p.irohnode import IrohNode
    from kezchat.p2p.transfer import BATCH

    async def main() -> None:
        node = await IrohNode.bind(bytes.fromhex(args.seed), "127.0.0.1:0")
        print(json.dumps({"ticket": node.ticket()}), flush=True)
        connection = await node.accept()
        send, recv = await connection.accept_stream()
        await recv.read_exact(1)
        sending = _meter()
        total, block = int(args.file), os.urandom(BATCH * (CHUNK + TAG))
        for start in range(0, total, len(block)):
            await send.write(block[: min(len(block), total - start)])
        await send.finish()
        await recv.read(1)
        sent = sending()
        connection.close()
        await node.close()
        print(json.dumps(sent), flush=True)

    asyncio.run(main())


def _raw_fetcher(args: argparse.Namespace) -> None:
    from kezchat.p2p.crypt import CHUNK, TAG
    from kezchat.p2p.irohnode import IrohNode
    from kezchat.p2p.transfer import BATCH

    async def main() -> None:
        node = await IrohNode.bind(bytes.fromhex(args.seed), "127.0.0.1:0")
        started, fetching = time.perf_counter(), _meter()
        connection = await node.connect(json.loads(args.offer)["ticket"], 30)
        send, recv = await connection.open_stream()
        await send.write(b"?")
        total, got = int(args.out), 0
        while got < total:
            got += len(await recv.read_exact(min(BATCH * (CHUNK + TAG), total - got)))
        seconds, fetched = time.perf_counter() - started, fetching()
        await send.write(b"!")
        await send.finish()
        await asyncio.wait_for(connection.closed(), 5)
        print(json.dumps({"seconds": seconds, **fetched}), flush=True)
        await node.close()

    asyncio.run(main())


def _line(process: subprocess.Popen) -> bytes:
    """
    The next JSON line C{process} prints (a profiler wrapping it prints
    its own lines too).
    """
    while line := process.stdout.readline():
        if line.startswith(b"{"):
            return line
    raise SystemExit("a benchmark process ended early")


def _wait(process: subprocess.Popen) -> None:
    if process.wait() != 0:
        raise SystemExit(f"a benchmark process failed ({process.returncode})")


def _write_random(path: str, size: int) -> None:
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            f.write(os.urandom(MiB))


def _python(profile: str | None, role: str) -> list[str]:
    """
    The command line running this script: under cProfile if asked, or
    with C{--profile py-spy:PREFIX} under py-spy (every thread, native
    frames too: the Rust runtime and the crypto libraries), as collapsed
    stacks in PREFIX.ROLE.txt.
    """
    me = [sys.executable, os.path.abspath(__file__)]
    if profile is None:
        return me
    if profile.startswith("py-spy:"):
        spy = shutil.which("py-spy") or "py-spy"
        output = f"{profile.removeprefix('py-spy:')}.{role}.txt"
        return [
            spy,
            "record",
            "--native",
            "--threads",
            "-r",
            "250",
            "-f",
            "raw",
            "-o",
            output,
            "--",
            *me,
        ]
    return [sys.executable, "-m", "cProfile", "-o", f"{profile}.{role}", *me[1:]]


def _raw(size: int, profile: str | None = None) -> tuple[float, dict, dict]:
    """
    Seconds the bare transport takes to move C{size} bytes between two
    processes, and the CPU each process spent on it (see L{_meter}).
    """
    sender = subprocess.Popen(
        [
            *_python(profile, "send"),
            "--role",
            "raw-send",
            "--file",
            str(size),
            "--seed",
            os.urandom(32).hex(),
        ],
        stdout=subprocess.PIPE,
    )
    offer = _line(sender)
    seed = os.urandom(32).hex()
    fetcher = subprocess.Popen(
        [
            *_python(profile, "fetch"),
            "--role",
            "raw-fetch",
            "--offer",
            offer,
            "--out",
            str(size),
            "--seed",
            seed,
        ],
        stdout=subprocess.PIPE,
    )
    fetched = json.loads(_line(fetcher))
    sent = json.loads(_line(sender))
    _wait(fetcher)
    _wait(sender)
    return fetched["seconds"], sent, fetched


def _mean_cpu(first: dict, second: dict) -> dict:
    kinds = set(first["threads"]) | set(second["threads"])
    return {
        "cpu": (first["cpu"] + second["cpu"]) / 2,
        "threads": {
            kind: (first["threads"].get(kind, 0.0) + second["threads"].get(kind, 0.0)) / 2
            for kind in kinds
        },
    }


def _one(directory: str, size_mib: int, profile: str | None) -> dict:
    from blake3 import blake3

    from kezchat.identity.keys import KeyPair

    source = os.path.join(directory, "source.bin")
    _write_random(source, size_mib * MiB)
    copied = os.path.join(directory, "copy.bin")
    started = time.perf_counter()
    subprocess.run(["cp", source, copied], check=True)
    cp_seconds = time.perf_counter() - started
    os.unlink(copied)

    raw_before, raw_sent_before, raw_fetched_before = _raw(
        size_mib * MiB, profile and f"{profile}-bare"
    )
    sender_key, fetcher_key = KeyPair.generate(), KeyPair.generate()
    sender = subprocess.Popen(
        [
            *_python(profile, "send"),
            "--role",
            "send",
            "--file",
            source,
            "--seed",
            sender_key.seed.hex(),
            "--peer",
            fetcher_key.public_hex,
        ],
        stdout=subprocess.PIPE,
    )
    offer_line = _line(sender)
    offer = json.loads(offer_line)
    out = os.path.join(directory, "fetched.bin")
    fetcher = subprocess.Popen(
        [
            *_python(profile, "fetch"),
            "--role",
            "fetch",
            "--offer",
            offer_line,
            "--out",
            out,
            "--seed",
            fetcher_key.seed.hex(),
        ],
        stdout=subprocess.PIPE,
    )
    result = json.loads(_line(fetcher))
    served = json.loads(_line(sender))
    _wait(fetcher)
    _wait(sender)
    raw_after, raw_sent_after, raw_fetched_after = _raw(size_mib * MiB)
    # the bare transport just before and just after, against the load drifting
    raw = (raw_before + raw_after) / 2
    bare_sender = _mean_cpu(raw_sent_before, raw_sent_after)
    bare_fetcher = _mean_cpu(raw_fetched_before, raw_fetched_after)

    def digest(path: str) -> str:
        return blake3(max_threads=blake3.AUTO).update_mmap(path).hexdigest()

    intact = digest(source) == digest(out)
    os.unlink(out)
    os.unlink(source)
    return {
        "size": size_mib,
        "p2p": size_mib / result["seconds"],
        "seconds": result["seconds"],
        "hashing": offer["hashing"],
        "raw": size_mib / raw,
        "ratio": raw / result["seconds"],
        "cpu": 1000 * (result["cpu"] + served["cpu"]) / size_mib,
        "raw_cpu": 1000 * (bare_sender["cpu"] + bare_fetcher["cpu"]) / size_mib,
        "threads": {
            "P2P sender": served["threads"],
            "P2P fetcher": result["threads"],
            "bare sender": bare_sender["threads"],
            "bare fetcher": bare_fetcher["threads"],
        },
        "cp": size_mib / cp_seconds,
        "sender_rss": served["peak_rss"],
        "fetcher_rss": result["peak_rss"],
        "intact": intact,
    }


def _table(rows: list[dict]) -> str:
    lines = [
        "| file | P2P MiB/s | transfer s | sender BLAKE3 pass s | bare Iroh MiB/s "
        "| P2P ÷ bare | CPU ms/MiB P2P | CPU ms/MiB bare | cp MiB/s "
        "| sender peak RSS | fetcher peak RSS | intact |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']} MiB | {r['p2p']:.0f} | {r['seconds']:.2f} | {r['hashing']:.2f} "
            f"| {r['raw']:.0f} | {r['ratio']:.2f} | {r['cpu']:.1f} | {r['raw_cpu']:.1f} "
            f"| {r['cp']:.0f} "
            f"| {r['sender_rss']:.0f} MiB | {r['fetcher_rss']:.0f} MiB "
            f"| {'yes' if r['intact'] else 'NO'} |"
        )
    return "\n".join(lines)


#: the kinds of thread L{_thread_cpu} tells apart, as the table names them
_KINDS = {
    "python": "event loop (Python + calls into the bindings)",
    "kez-p2p_0": "transfer worker (file, ChaCha20, BLAKE3)",
    "rust runtime": "Rust runtime (QUIC, UDP)",
}


def _threads_table(rows: list[dict]) -> str:
    """
    CPU ms per MiB by thread, for each process of each row.
    """
    kinds = list(_KINDS)
    lines = [
        "| file | process | " + " | ".join(_KINDS.values()) + " | other threads | total |",
        "|---|---|" + "---|" * (len(kinds) + 2),
    ]
    for r in rows:
        for process, threads in r["threads"].items():
            per_mib = {kind: 1000 * seconds / r["size"] for kind, seconds in threads.items()}
            known = [per_mib.get(kind, 0.0) for kind in kinds]
            other = sum(per_mib.values()) - sum(known)
            cells = " | ".join(f"{value:.1f}" for value in [*known, other, sum(per_mib.values())])
            lines.append(f"| {r['size']} MiB | {process} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="64,256", help="file sizes in MiB, comma-separated")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--dir", default=None, help="where to write the files (default: a temp dir)"
    )
    parser.add_argument(
        "--profile",
        default=None,
        help="write cProfile data to PREFIX.send and PREFIX.fetch (and PREFIX-bare.* for the"
        " first bare run); py-spy:PREFIX for py-spy's collapsed stacks in PREFIX*.txt",
    )
    parser.add_argument(
        "--threads", action="store_true", help="also print CPU ms/MiB by thread for each process"
    )
    parser.add_argument(
        "--role", choices=["send", "fetch", "raw-send", "raw-fetch"], help=argparse.SUPPRESS
    )
    for name in ("--file", "--seed", "--peer", "--offer", "--out"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "send":
        return _sender(args)
    if args.role == "fetch":
        return _fetcher(args)
    if args.role == "raw-send":
        return _raw_sender(args)
    if args.role == "raw-fetch":
        return _raw_fetcher(args)
    if not loopback_only():
        if shutil.which("unshare") is None:
            raise SystemExit("needs unshare(1) to run in a loopback-only network namespace")
        command = " ".join(
            [
                "ip link set lo up && exec",
                *(f"'{part}'" for part in [sys.executable, *sys.argv]),
            ]
        )
        os.execvp("unshare", ["unshare", "--net", "sh", "-c", command])
    directory = tempfile.mkdtemp(prefix="kezchat-p2p-bench-", dir=args.dir)
    try:
        rows = [
            _one(directory, int(size), args.profile)
            for _ in range(args.repeat)
            for size in args.sizes.split(",")
        ]
    finally:
        shutil.rmtree(directory)
    print(_table(rows))
    if args.threads:
        print()
        print(_threads_table(rows))
    if not all(r["intact"] for r in rows):
        raise SystemExit("a fetched file differed from its source")


if __name__ == "__main__":
    main()
