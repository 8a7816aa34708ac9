"""
The quick start's supervisor: C{bash scripts/run-server} runs this with
the project's virtualenv once it is installed.

It runs the whole design on one machine: C{twistd kezsig} (the sigchain
store) and C{twistd kezchat} pointed at it, as two processes that start
and stop together. It checks the arguments before anything starts (a
mistyped flag is one line naming the closest valid one), picks the reactor
the configuration needs (asyncio for NATS and PostgreSQL), never prints a
database password, and says "serving on" only once the server answers.

Arguments are C{twistd kezchat}'s, plus C{--no-sig-server} (or
C{KEZ_CHAT_RUN_SIG_SERVER=no}): run the chat-server alone. A
C{--sig-server-url} (or C{KEZ_CHAT_SIG_SERVER_URL}) also means "use that
one": no local kezsig is started. The local kezsig listens on
C{KEZ_SIG_LISTEN} (default C{tcp:7878:interface=127.0.0.1}) with its
database in C{KEZ_SIG_DB} (default C{kez-sig.db}).
"""

from __future__ import annotations

import difflib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType

from twisted.python import usage

from kezchat.server.config import ChatOptions
from kezchat.storage.dburl import is_postgres_url, redacted

DEFAULT_LISTEN = "tcp:6969:interface=127.0.0.1"
DEFAULT_SIG_LISTEN = "tcp:7878:interface=127.0.0.1"
NO_SIG_SERVER = "--no-sig-server"
#: how long a server may take to answer its health check after starting
START_TIMEOUT = 60.0

_TCP_RE = re.compile(r"tcp:(?:port=)?(\d+)(?::interface=([0-9A-Za-z.:\[\]-]+))?$")


USAGE = """\
Usage: bash scripts/run-server [--no-sig-server] [twistd kezchat options]
  --no-sig-server   run the chat-server alone (also KEZ_CHAT_RUN_SIG_SERVER=no);
                    a --sig-server-url also means no local kezsig is started
  the local kezsig listens on $KEZ_SIG_LISTEN [tcp:7878:interface=127.0.0.1]
  and keeps its sigchains in $KEZ_SIG_DB [kez-sig.db]
twistd kezchat's options follow."""


def say(text: str) -> None:
    print(f"run-server: {text}", file=sys.stderr, flush=True)


class Refused(Exception):
    """
    The arguments can't be run; the text is the one line to print.
    """


@dataclass(frozen=True)
class Plan:
    """
    What to start: the chat-server's arguments and reactor, and the local
    sig-server's listen endpoint (C{None}: none is started).
    """

    chat_args: tuple[str, ...]
    reactor: str
    chat_url: str | None
    sig_listen: str | None
    sig_url: str | None
    sig_db: str
    shown: str


def known_flags() -> list[str]:
    options = ChatOptions(environ={})
    flags = [f"--{row[0]}" for row in options.table]
    flags += [f"--{row[0]}" for row in options.repeatable]
    flags += [f"--{row[0]}" for row in options.optFlags]
    return [*flags, NO_SIG_SERVER, "--help", "--version"]


def closest_flag(given: str) -> str | None:
    matches = difflib.get_close_matches(given, known_flags(), n=1, cutoff=0.6)
    return matches[0] if matches else None


def local_url(endpoint: str) -> str | None:
    """
    The URL a local client reaches a C{tcp:} endpoint at, or C{None} for
    endpoints this script cannot reach by itself (C{ssl:}, C{systemd:}).
    """
    match = _TCP_RE.match(endpoint)
    if match is None:
        return None
    port, interface = match.groups()
    host = interface or "127.0.0.1"
    if host in ("0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def plan(argv: Sequence[str], environ: dict[str, str]) -> Plan:
    """
    Check the arguments the way C{twistd kezchat} will, and decide what to
    run.

    @raise Refused: with one line saying what is wrong.
    """
    args = [a for a in argv if a != NO_SIG_SERVER]
    want_sig = NO_SIG_SERVER not in argv and environ.get(
        "KEZ_CHAT_RUN_SIG_SERVER", "yes"
    ).lower() not in ("no", "off", "0", "false")

    listen: list[str] = []
    if not any(a == "--listen" or a.startswith("--listen=") for a in args) and not environ.get(
        "KEZ_CHAT_LISTEN"
    ):
        listen = ["--listen", DEFAULT_LISTEN]

    options = ChatOptions(environ=environ)
    try:
        options.parseOptions([*listen, *args])
    except usage.UsageError as e:
        text = str(e)
        unknown = re.match(r"option (\S+) not recognized", text)
        if unknown:
            hint = closest_flag(unknown.group(1))
            text = f"unknown option {unknown.group(1)}" + (
                f" (did you mean {hint}?)" if hint else ""
            )
        raise Refused(f"{text}; see: bash scripts/run-server --help") from None
    config = options.config

    sig_listen = sig_url = None
    chat_args = [*listen, *args]
    if want_sig and config.sig_server_url is None:
        sig_listen = environ.get("KEZ_SIG_LISTEN") or DEFAULT_SIG_LISTEN
        sig_url = local_url(sig_listen)
        if sig_url is None:
            raise Refused(
                f"KEZ_SIG_LISTEN={sig_listen} is not a tcp: endpoint; set "
                "KEZ_CHAT_SIG_SERVER_URL to the sig-server's URL, or use --no-sig-server"
            )
        chat_args += ["--sig-server-url", sig_url]

    reactor = "epoll"
    if config.nats_url or is_postgres_url(config.db):
        # nats-py and the PostgreSQL driver both live on asyncio
        reactor = "asyncio"

    shown = " ".join(redacted(a) if is_postgres_url(a) else a for a in chat_args)
    shown = re.sub(r"(--db=)(\S+)", lambda m: m.group(1) + redacted(m.group(2)), shown)
    return Plan(
        chat_args=tuple(chat_args),
        reactor=reactor,
        chat_url=next(filter(None, map(local_url, config.listen)), None),
        sig_listen=sig_listen,
        sig_url=sig_url,
        sig_db=environ.get("KEZ_SIG_DB") or "kez-sig.db",
        shown=shown,
    )


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/v1/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class Supervisor:
    """
    Two processes that live and die together: a signal to this one stops
    both; either one exiting stops the other.
    """

    def __init__(self, twistd: Sequence[str]) -> None:
        self.twistd = list(twistd)
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.stopping = False

    def start(self, name: str, args: Sequence[str]) -> subprocess.Popen[bytes]:
        child = subprocess.Popen([*self.twistd, *args])
        self.children.append((name, child))
        return child

    def wait_healthy(self, name: str, child: subprocess.Popen[bytes], url: str) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and not self.stopping:
            if child.poll() is not None:
                say(f"{name} exited with status {child.returncode} while starting")
                return False
            if healthy(url):
                return True
            time.sleep(0.1)
        if not self.stopping:
            say(f"{name} did not answer {url}/v1/healthz within {START_TIMEOUT:.0f} s")
        return False

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def stop(self) -> None:
        for _name, child in reversed(self.children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for _name, child in reversed(self.children):
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

    def watch(self) -> int:
        """
        Wait until a signal or a child's exit; the chat-server's status.
        """
        while not self.stopping:
            for name, child in self.children:
                if child.poll() is not None:
                    if name != "kezchat":
                        say(f"{name} stopped (status {child.returncode}); stopping kezchat too")
                        self.stop()
                        return 1
                    self.stop()
                    return child.returncode
            time.sleep(0.2)
        self.stop()
        return 0


def run(argv: Sequence[str], environ: dict[str, str]) -> int:
    twistd = [os.path.join(os.path.dirname(sys.executable), "twistd")]
    if "--help" in argv or "-h" in argv:
        print(USAGE, flush=True)
        os.execv(twistd[0], [*twistd, "kezchat", "--help"])
    try:
        chosen = plan(argv, environ)
    except Refused as e:
        say(str(e))
        return 2

    supervisor = Supervisor(twistd)
    signal.signal(signal.SIGINT, supervisor.on_signal)
    signal.signal(signal.SIGTERM, supervisor.on_signal)

    try:
        if chosen.sig_listen is not None and chosen.sig_url is not None:
            say(f"starting the sig-server: twistd kezsig --listen {chosen.sig_listen}")
            sig = supervisor.start(
                "kezsig",
                [
                    "--pidfile=",
                    "-r",
                    "epoll",
                    "-n",
                    "kezsig",
                    "--listen",
                    chosen.sig_listen,
                    "--db",
                    chosen.sig_db,
                    "--public-url",
                    chosen.sig_url,
                ],
            )
            if not supervisor.wait_healthy("kezsig", sig, chosen.sig_url):
                supervisor.stop()
                return 1
        say(f"starting: twistd -r {chosen.reactor} -n kezchat {chosen.shown}")
        chat = supervisor.start(
            "kezchat", ["--pidfile=", "-r", chosen.reactor, "-n", "kezchat", *chosen.chat_args]
        )
        if chosen.chat_url is not None:
            if not supervisor.wait_healthy("kezchat", chat, chosen.chat_url):
                supervisor.stop()
                return 1
            extra = f" (sigchains: {chosen.sig_url})" if chosen.sig_url else ""
            say(f"serving on {chosen.chat_url}{extra}; Ctrl-C stops")
        return supervisor.watch()
    finally:
        supervisor.stop()


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:], dict(os.environ)))
