"""
How long one C{kez-chat} command takes as a whole process: start the
interpreter, import, parse, do the work, exit.

Starts C{twistd -r asyncio -n kezchat} as a separate process on a free
loopback port with a fresh SQLite database, registers two users through
the CLI (their seeds in a stand-in OS keyring, L{tests.keyringbackend},
so C{send} unlocks its key the way it does on a desktop), pins one for
the other, then runs each command N times, one at a time, and prints the
median and p90 wall time next to two floors measured in the same run:
C{python -c pass} (the interpreter alone) and C{python -c "import
kezchat"} (the package's own import).

The C{send} row is end to end: start, look up the recipient's current
record (the pin is checked against it), sign, POST, exit. The C{send to
someone new} row sends to a recipient not pinned yet (the pin is removed
before each run, untimed): the key directory's head and the inclusion
proof of their key are fetched and checked before the pin (the bench's
server names no sig-server, so no sigchain is fetched). The last row
sends with the key in the passphrase-encrypted file instead: its scrypt
unlock (128 MiB, about half a second by design) is the bound there.

Run with C{--importtime CMD...} to print the C{python -X importtime}
top importers of one command instead.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PASSPHRASE = "bench passphrase, long enough"


def start_server(scratch: str) -> tuple[subprocess.Popen[bytes], str]:
    """
    A kezchat process on a free loopback port, and its base URL.
    """
    process = subprocess.Popen(
        [
            sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "-r", "asyncio", "-n", "--pidfile=", "kezchat",
            "--listen", "tcp:0:interface=127.0.0.1",
            "--db", os.path.join(scratch, "bench.db"),
            "--register-limit", "0", "--send-limit", "0",
            "--log-format", "json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, PYTHONPATH=REPO_ROOT),
        cwd=REPO_ROOT,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    for line in process.stdout:
        if b"listening on" in line:
            address = json.loads(line)["address"]
            port = int(address.rsplit("port=", 1)[1].rstrip(")"))
            return process, f"http://127.0.0.1:{port}"
        if time.monotonic() > deadline:
            break
    process.kill()
    raise SystemExit("the server did not start")


def cli_env(scratch: str, url: str, home: str, keyring: bool) -> dict[str, str]:
    env = dict(
        os.environ,
        PYTHONPATH=REPO_ROOT,
        KEZ_CHAT_HOME=os.path.join(scratch, home),
        KEZ_CHAT_SERVER_URL=url,
        KEZ_CHAT_PASSPHRASE=PASSPHRASE,
        KEZ_TEST_KEYRING_FILE=os.path.join(scratch, "keyring.json"),
    )
    if keyring:
        env["PYTHON_KEYRING_BACKEND"] = "tests.keyringbackend.FileKeyring"
        env.pop("KEZ_CHAT_KEYRING", None)
    else:
        env["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"
    return env


def cli(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(
        [sys.executable, "-m", "kezchat.cli", *argv],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        raise SystemExit(f"kez-chat {' '.join(argv)} failed:\n{result.stderr.decode()}")
    return result


def unpin(env: dict[str, str]) -> None:
    """
    Forget every contact of the home in C{env} (its head stays kept).
    """
    try:
        os.unlink(os.path.join(env["KEZ_CHAT_HOME"], "contacts.json"))
    except FileNotFoundError:
        pass


def timed(
    argv: list[str], env: dict[str, str], runs: int, before: Callable[[], None] | None = None
) -> list[float]:
    times = []
    for _ in range(runs):
        if before is not None:
            before()
        start = time.perf_counter()
        result = subprocess.run(
            argv, env=env, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, capture_output=True
        )
        times.append(time.perf_counter() - start)
        if result.returncode != 0:
            raise SystemExit(f"{argv} failed:\n{result.stderr.decode()}")
    return times


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def importtime(env: dict[str, str], argv: list[str], top: int) -> None:
    """
    Print the C{top} slowest top-level imports (cumulative) of one command.
    """
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "kezchat.cli", *argv],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    rows = []
    count = 0
    for line in result.stderr.decode().splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        count += 1
        _, cumulative, name = line[len("import time:") :].split("|", 2)
        if not name.startswith("  "):  # nested imports are indented further
            rows.append((int(cumulative), name.strip()))
    total = sum(c for c, _ in rows)
    print(f"python -X importtime kez-chat {' '.join(argv)}: {count} modules, {total / 1000:.0f} ms")
    for cumulative, name in sorted(rows, reverse=True)[:top]:
        print(f"  {cumulative / 1000:8.1f} ms  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="runs per row [15]")
    parser.add_argument(
        "--importtime", nargs="*", metavar="ARG", help="print import times of one command"
    )
    args = parser.parse_args()

    scratch = tempfile.mkdtemp(prefix="kezchat-cli-bench-")
    server, url = start_server(scratch)
    try:
        alice = cli_env(scratch, url, "alice", keyring=True)
        bob = cli_env(scratch, url, "bob", keyring=True)
        carol = cli_env(scratch, url, "carol", keyring=False)
        dave = cli_env(scratch, url, "dave", keyring=True)
        cli(alice, "register", "alice", "--yes", "--json")
        cli(bob, "register", "bob", "--yes", "--json")
        cli(carol, "register", "carol", "--yes", "--json")
        cli(dave, "register", "dave", "--yes", "--json")
        cli(alice, "add", "bob")
        cli(carol, "add", "bob")

        if args.importtime is not None:
            importtime(alice, args.importtime or ["--help"], 25)
            return

        python = [sys.executable]
        kez = [sys.executable, "-m", "kezchat.cli"]
        text = "hello from the bench"
        rows: list[tuple[str, list[str], dict[str, str], Callable[[], None] | None]] = [
            ("python -c pass", [*python, "-c", "pass"], alice, None),
            ('python -c "import kezchat"', [*python, "-c", "import kezchat"], alice, None),
            ("kez-chat --help", [*kez, "--help"], alice, None),
            ("kez-chat send --help", [*kez, "send", "--help"], alice, None),
            ("kez-chat whoami", [*kez, "whoami"], alice, None),
            ("kez-chat contacts --json", [*kez, "contacts", "--json"], alice, None),
            ("kez-chat send bob TEXT", [*kez, "send", "bob", text], alice, None),
            ("kez-chat send to someone new", [*kez, "send", "bob", text], dave,
             lambda: unpin(dave)),
            ("kez-chat send (key file)", [*kez, "send", "bob", text], carol, None),
        ]
        # one warm-up round, then the rows in turn (round-robin), so a
        # change in the machine's load falls on every row alike
        samples: list[list[float]] = [[] for _ in rows]
        for round_ in range(args.runs + 1):
            for (_, argv, env, before), times in zip(rows, samples, strict=True):
                took = timed(argv, env, 1, before)
                if round_:
                    times.extend(took)
        results = [
            (name, statistics.median(times), p90(times))
            for (name, _, _, _), times in zip(rows, samples, strict=True)
        ]
        floor = results[0][1]
        print(f"\nkez-chat start-up, {args.runs} rounds of every row in turn (loopback server)\n")
        print(f"| {'command':<28} | median ms | p90 ms | ÷ python |")
        print(f"|{'-' * 30}|-----------|--------|----------|")
        for name, median, tail in results:
            print(
                f"| {name:<28} | {median * 1000:9.0f} | {tail * 1000:6.0f} | "
                f"{median / floor:7.1f}× |"
            )
        load = os.getloadavg()[0]
        print(f"\nload average at the end: {load:.1f} on {os.cpu_count()} cores")
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
