"""
Driving the real C{kez-chat} program from tests.

Each call is a separate process (C{python -m kezchat.cli} of this checkout)
spawned through the reactor, so the in-process chat-server and sig-server
keep answering while the CLI runs. The environment is explicit: no OS
keyring (keyring's fail backend) unless a test asks for one, a passphrase,
the server URL, and a home of the test's own.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.error import ProcessDone
from twisted.internet.protocol import ProcessProtocol
from twisted.python import log
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from kezchat.server.config import ChatConfig
from kezchat.server.service import makeService
from kezchat.testing.natsserver import NatsServer
from tests.sigsupport import start_sig_server
from tests.support import RunningServer, deferred_sleep, temp_dir

ROOT = Path(__file__).resolve().parent.parent
PASSPHRASE = "correct horse battery staple"


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[dict[str, Any]]:
        """
        stdout as JSON lines (every line must be one JSON object).
        """
        return [json.loads(line) for line in self.out.splitlines()]

    @property
    def json(self) -> dict[str, Any]:
        [line] = self.lines
        return line

    @property
    def received(self) -> list[dict[str, Any]]:
        """
        The C{listen --json} lines of messages received: without one's own
        sent copies and receipts either way.
        """
        return [
            m for m in self.lines if m.get("direction") != "out" and m.get("type") != "receipt"
        ]

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out}--- stderr\n{self.err}"


class _Collect(ProcessProtocol):
    def __init__(self, stdin: bytes | None) -> None:
        self.stdin = stdin
        self.out = bytearray()
        self.err = bytearray()
        self.done: Deferred[Result] = Deferred()
        self.lines_seen = 0
        self.on_line: list[tuple[int, Deferred[None]]] = []

    def connectionMade(self) -> None:
        if self.stdin is not None:
            self.transport.write(self.stdin)
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.out += data
        self.lines_seen = self.out.count(b"\n")
        still = []
        for n, d in self.on_line:
            if self.lines_seen >= n:
                d.callback(None)
            else:
                still.append((n, d))
        self.on_line = still

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        code = 0 if reason.check(ProcessDone) else (reason.value.exitCode or 0)
        if reason.value.signal:
            code = -reason.value.signal
        for _, d in self.on_line:
            d.callback(None)
        self.on_line = []
        self.done.callback(Result(code, self.out.decode(), self.err.decode()))


@dataclass
class Running:
    """
    A CLI process still running (C{listen} in the background).
    """

    protocol: _Collect
    transport: Any

    def wait_lines(self, n: int, timeout: float = 20.0) -> Deferred[None]:
        """
        Fires once stdout holds C{n} lines (or the process ended).
        """
        d: Deferred[None] = Deferred()
        if self.protocol.lines_seen >= n or self.protocol.done.called:
            d.callback(None)
        else:
            self.protocol.on_line.append((n, d))
            d.addTimeout(timeout, reactor)
        return d

    @property
    def done(self) -> Deferred[Result]:
        return self.protocol.done

    def terminate(self) -> None:
        self.transport.signalProcess("TERM")

    def interrupt(self) -> None:
        try:
            self.transport.signalProcess("INT")
        except Exception:
            pass


class _Terminal(ProcessProtocol):
    """
    A CLI process on a pseudo-terminal: what a person at a terminal sees
    (stdout and stderr together), and what they type.
    """

    def __init__(self) -> None:
        self.screen = ""
        self.position = 0
        self.waiting: tuple[Any, Deferred[Any]] | None = None
        self.done: Deferred[int] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.screen += data.decode("utf-8", "replace").replace("\r\n", "\n")
        self._check()

    def kill(self) -> Deferred[int] | None:
        """
        End the process if it is still running (a test's cleanup).
        """
        if self.done.called:
            return None
        try:
            self.transport.signalProcess("KILL")
        except Exception:
            return None
        return self.done

    def _check(self) -> None:
        if self.waiting is None:
            return
        pattern, d = self.waiting
        match = pattern.search(self.screen, self.position)
        if match is not None:
            self.waiting = None
            self.position = match.end()
            d.callback(match)

    def expect(self, pattern: str, timeout: float = 30.0) -> Deferred[Any]:
        """
        Fires with the match once C{pattern} shows up after the last match.
        """
        import re

        d: Deferred[Any] = Deferred()
        self.waiting = (re.compile(pattern), d)
        d.addTimeout(timeout, reactor)
        self._check()
        return d

    def type(self, line: str) -> None:
        self.transport.write(line.encode() + b"\n")

    def processEnded(self, reason: Failure) -> None:
        code = 0 if reason.check(ProcessDone) else (reason.value.exitCode or 0)
        if self.waiting is not None:
            _, d = self.waiting
            self.waiting = None
            d.errback(AssertionError(f"exited ({code}) before the expected text:\n{self.screen}"))
        self.done.callback(code)


@dataclass
class Cli:
    """
    One user's CLI: a home directory and the environment it runs with.
    """

    home: str
    env: dict[str, str] = field(default_factory=dict)
    mnemonic: str = ""

    def spawn(
        self, *args: str, stdin: bytes | None = None, env: dict[str, str | None] | None = None
    ):
        """
        Start C{kez-chat --home HOME ARGS}; an C{env} with C{KEZ_CHAT_HOME}
        leaves C{--home} out, so the variable alone chooses the home.
        """
        protocol = _Collect(stdin)
        # a None in env removes that variable
        environ = {k: v for k, v in {**self.env, **(env or {})}.items() if v is not None}
        home = [] if "KEZ_CHAT_HOME" in environ else ["--home", self.home]
        transport = reactor.spawnProcess(
            protocol,
            sys.executable,
            [sys.executable, "-m", "kezchat.cli", *home, *args],
            env=environ,
            path=str(ROOT),
        )
        return Running(protocol, transport)

    def terminal(self, *args: str, env: dict[str, str] | None = None) -> _Terminal:
        """
        Start C{kez-chat ARGS} on a pseudo-terminal, as a person would.
        """
        protocol = _Terminal()
        reactor.spawnProcess(
            protocol,
            sys.executable,
            [sys.executable, "-m", "kezchat.cli", "--home", self.home, *args],
            env={**self.env, **(env or {})},
            path=str(ROOT),
            usePTY=True,
        )
        return protocol

    def run(
        self,
        *args: str,
        stdin: bytes | None = None,
        env: dict[str, str | None] | None = None,
        timeout: float = 60.0,
    ) -> Deferred[Result]:
        running = self.spawn(*args, stdin=stdin, env=env)
        started = reactor.seconds()

        def note(result: Result) -> Result:
            took = reactor.seconds() - started
            log.msg(f"kez-chat {' '.join(args)}: exit {result.code} in {took:.2f}s")
            return result

        d = running.done.addCallback(note)
        d.addTimeout(timeout, reactor, onTimeoutCancel=lambda *_: running.interrupt())
        return d

    async def ok(self, *args: str, **kwargs: Any) -> Result:
        """
        Run and insist on exit 0.
        """
        result = await self.run(*args, **kwargs)
        if result.code != 0:
            raise AssertionError(f"kez-chat {' '.join(args)} failed:\n{result}")
        return result

    @property
    def account(self) -> dict[str, Any]:
        with open(os.path.join(self.home, "account.json")) as f:
            return json.load(f)


def base_env(server_url: str, keyring_file: str | None = None, **extra: str) -> dict[str, str]:
    """
    The environment of a CLI process: this checkout first on the path, a
    passphrase, the chat-server URL, and either the test keyring backend
    storing in C{keyring_file} (see L{tests.keyringbackend}) or, without
    one, keyring's fail backend: no OS keyring, so the passphrase-encrypted
    key file.
    """
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "PYTHONPATH": str(ROOT),
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
        "KEZ_CHAT_PASSPHRASE": PASSPHRASE,
        "KEZ_CHAT_SERVER_URL": server_url,
        "LANG": "C.UTF-8",
    }
    if keyring_file is not None:
        env["PYTHON_KEYRING_BACKEND"] = "tests.keyringbackend.FileKeyring"
        env["KEZ_TEST_KEYRING_FILE"] = keyring_file
    env.update(extra)
    return env


class CliTestCase(TestCase):
    """
    Starts a real kezchat (pointing at a real kezsig) for each test and
    makes CLI users on it.
    """

    timeout = 120

    async def start_servers(self, keyring: bool = True, **chat_overrides: Any) -> None:
        """
        Start kezsig and kezchat. With C{keyring}, CLI users keep their
        seeds in the test keyring (fast: no scrypt per command); without,
        in passphrase-encrypted files, as on a machine with no OS keyring.
        """
        self.sig = await start_sig_server(self)
        self.chat_config = replace(
            ChatConfig(
                listen=("tcp:0:interface=127.0.0.1",),
                db=os.path.join(temp_dir(self), "kez-chat.db"),
                register_limit=0,
                send_limit=0,
                sig_server_url=self.sig.url,
            ),
            **chat_overrides,
        )
        self.chat = await self.serve_chat(self.chat_config)
        keyring_file = os.path.join(temp_dir(self), "keyring.json") if keyring else None
        self.env = base_env(self.chat.url, keyring_file)

    async def start_servers_on_nats(self, nats: NatsServer, **chat_overrides: Any) -> None:
        """
        L{start_servers} with the chat-server on C{nats} (its auth callout
        seeds), once it says it is connected to it (or after 10 s).
        """
        await self.start_servers(
            nats_url=nats.url,
            nats_seed=str(nats.callout_seed_path),
            callout_issuer_seed=str(nats.issuer_seed_path),
            **chat_overrides,
        )
        for _ in range(200):
            if self.chat.parts.http.nats_status() == "connected":
                break
            await deferred_sleep(0.05)

    async def serve_chat(self, config: ChatConfig) -> RunningServer:
        service = makeService(config, reactor)
        service.startService()

        def stop() -> Any:
            return service.stopService() if service.running else None

        self.addCleanup(stop)
        ports = await service.when_listening()
        port = ports[0].getHost().port
        return RunningServer(service, f"http://127.0.0.1:{port}", port)

    async def restart_chat(self, down: float = 0.0) -> None:
        """
        Stop the chat-server and start it again on the same port and
        database (after C{down} seconds), as a service restart would.
        """
        await self.chat.service.stopService()
        if down:
            await deferred_sleep(down)
        config = replace(self.chat_config, listen=(f"tcp:{self.chat.port}:interface=127.0.0.1",))
        self.chat = await self.serve_chat(config)

    def user(self, name: str, **env: str) -> Cli:
        home = os.path.join(temp_dir(self), name)
        return Cli(home, {**self.env, **env})

    async def registered(self, *names: str) -> list[Cli]:
        """
        Register each name (concurrently) with C{register NAME --yes --json}.
        """
        users = [self.user(name) for name in names]
        results = await gatherResults(
            [
                u.run("register", name, "--yes", "--json")
                for u, name in zip(users, names, strict=True)
            ]
        )
        for name, result in zip(names, results, strict=True):
            if result.code != 0:
                raise AssertionError(f"register {name} failed:\n{result}")
        for user, result in zip(users, results, strict=True):
            user.mnemonic = result.json["mnemonic"]
        return users


def assert_one_line_error(case: TestCase, result: Result, code: int = 1, *needles: str) -> None:
    """
    The failure contract: exit C{code}, nothing on stdout, one line on
    stderr (containing each needle), and never a traceback.
    """
    case.assertEqual(result.code, code, str(result))
    case.assertNotIn("Traceback", result.err, str(result))
    if code == 1:
        case.assertEqual(result.out, "", str(result))
        case.assertEqual(len(result.err.strip().splitlines()), 1, str(result))
    for needle in needles:
        case.assertIn(needle.lower(), result.err.lower(), str(result))
