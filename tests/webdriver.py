"""
Support for the browser tests: a chat-server in its own C{twistd} process
(so a restart is a real one), Debian's Chromium driven by Playwright with
no outside traffic, and a bridge from Twisted coroutines to Playwright's
asyncio API on the shared event loop.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from kezchat.testing.requirements import missing

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEB_DIST = os.path.join(REPO_ROOT, "web", "dist")
CHROMIUM = "/usr/bin/chromium"

#: Chromium flags that keep the browser off every outside host (measured:
#: zero outside requests), plus a resolver that knows only loopback.
CHROMIUM_ARGS = [
    "--component-updater=url-source=http://127.0.0.1:9/",
    "--gaia-url=http://127.0.0.1:9/",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1",
    "--no-first-run",
    "--disable-sync",
]

T = TypeVar("T")


def on_asyncio(coro: Coroutine[Any, Any, T]) -> Deferred[T]:
    """
    Run an asyncio coroutine (Playwright's API) from a Twisted coroutine.
    """
    return Deferred.fromFuture(asyncio.ensure_future(coro))


def on_twisted(coro: Coroutine[Any, Any, T]) -> Awaitable[T]:
    """
    Run a Twisted coroutine from an asyncio one.
    """
    return ensureDeferred(coro).asFuture(asyncio.get_event_loop())


def require_browser() -> None:
    if not os.path.exists(CHROMIUM):
        raise missing(f"{CHROMIUM} is missing (scripts/run-tests installs Debian's chromium)")
    if not os.path.isfile(os.path.join(WEB_DIST, "index.html")):
        raise missing("web/dist is missing (scripts/run-tests runs scripts/build-web)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        raise missing("playwright is not installed (pip install '.[test]')") from None


def scratch_env(case: TestCase) -> dict[str, str]:
    """
    Chromium and Node write their caches under the XDG and TMP dirs: point
    them at a scratch directory so nothing lands in $HOME.
    """
    path = tempfile.mkdtemp(prefix="kezchat-browser-")
    case.addCleanup(shutil.rmtree, path, True)
    env = dict(os.environ)
    for name in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "TMPDIR"):
        env[name] = path
    env.pop("PYTHONPATH", None)
    return env


class _Output(ProcessProtocol):
    def __init__(self) -> None:
        self.text = b""
        self.listening: Deferred[int] = Deferred()
        self.ended: Deferred[None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self._seen(data)

    def errReceived(self, data: bytes) -> None:
        self._seen(data)

    def _seen(self, data: bytes) -> None:
        self.text = (self.text + data)[-20000:]
        match = re.search(rb"listening on tcp:[^\n]*port=(\d+)", self.text)
        if match and not self.listening.called:
            self.listening.callback(int(match.group(1)))

    def processEnded(self, reason: Failure) -> None:
        if not self.listening.called:
            self.listening.errback(
                AssertionError(f"twistd ended before listening:\n{self.text.decode()[-3000:]}")
            )
        self.ended.callback(None)


def _spawn_twistd(argv: list[str]) -> tuple[Any, _Output]:
    """
    C{twistd} with C{argv} in a child process, without this run's C{KEZ_*}
    settings; its output is watched for the port it listens on.
    """
    script = f"from twisted.scripts.twistd import run; import sys; sys.argv = {argv!r}; run()"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEZ_") and k != "PYTHONPATH"}
    output = _Output()
    process = reactor.spawnProcess(
        output, sys.executable, [sys.executable, "-c", script], env=env, path=REPO_ROOT
    )
    return process, output


class LoopTwistd:
    """
    C{twistd} with C{argv} in a child process run by asyncio's loop, not by
    the reactor: trial removes the reactor's selectables after every test
    (its pipes to a reactor-spawned child would be dropped and its end
    never seen), so a server shared by several tests must live outside
    them.  C{start} and C{stop} return Deferreds, as L{ChatProcess}'s do;
    C{start} again after C{stop} listens on the same port.
    """

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.port = 0
        self.text = b""
        self._process: asyncio.subprocess.Process | None = None
        self._reading: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Deferred[None]:
        return Deferred.fromFuture(asyncio.ensure_future(self._start()))

    def stop(self) -> Deferred[None]:
        return Deferred.fromFuture(asyncio.ensure_future(self._stop()))

    async def _start(self) -> None:
        argv = [a.replace("tcp:0:", f"tcp:{self.port}:") for a in self.argv]
        script = f"from twisted.scripts.twistd import run; import sys; sys.argv = {argv!r}; run()"
        env = {
            k: v for k, v in os.environ.items() if not k.startswith("KEZ_") and k != "PYTHONPATH"
        }
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, env=env, cwd=REPO_ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        listening: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._reading = asyncio.ensure_future(self._read(self._process, listening))
        self.port = await asyncio.wait_for(listening, 60)

    async def _read(
        self, process: asyncio.subprocess.Process, listening: asyncio.Future[int]
    ) -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            self.text = (self.text + line)[-20000:]
            match = re.search(rb"listening on tcp:[^\n]*port=(\d+)", line)
            if match and not listening.done():
                listening.set_result(int(match.group(1)))
        if not listening.done():
            listening.set_exception(
                AssertionError(f"twistd ended before listening:\n{self.text.decode()[-3000:]}")
            )

    def kill(self) -> None:
        """
        Kill it if it still runs (at exit, when no test stopped it).
        """
        if self._process is not None and self._process.returncode is None:
            self._process.kill()

    async def _stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.returncode is None:
            process.terminate()
        await process.wait()
        if self._reading is not None:
            await self._reading


class LoopChatProcess(LoopTwistd):
    """
    L{ChatProcess} run by asyncio's loop (see L{LoopTwistd}).
    """

    def __init__(self, db: str, sig_url: str | None) -> None:
        self.db = db
        super().__init__(
            [
                "twistd", "-r", "asyncio", "-n", "--pidfile=", "kezchat",
                "--listen", "tcp:0:interface=127.0.0.1", "--db", db, "--web-dir", WEB_DIST,
                *(["--sig-server-url", sig_url] if sig_url else []),
                "--register-limit", "0", "--send-limit", "0",
            ]
        )


class LoopSigProcess(LoopTwistd):
    """
    C{twistd kezsig} on one SQLite file, run by asyncio's loop.
    """

    def __init__(self, db: str) -> None:
        super().__init__(
            [
                "twistd", "-r", "asyncio", "-n", "--pidfile=", "kezsig",
                "--listen", "tcp:0:interface=127.0.0.1", "--db", db,
            ]
        )

    def chain_url(self, key_hex: str) -> str:
        return f"{self.url}/v1/sigchains/ed25519/{key_hex}"


@dataclass
class ChatProcess:
    """
    C{twistd kezchat} in a child process on one SQLite file; C{restart}
    stops it with SIGTERM and starts it again on the same port.
    """

    db: str
    #: the sig-server's URL, or None to run as C{scripts/run-server} does
    sig_url: str | None
    port: int = 0
    #: registrations allowed per address and window (0: no limit)
    register_limit: int = 0
    #: more kezchat options (e.g. NATS)
    extra: list[str] = field(default_factory=list)
    _process: Any = None
    _output: _Output | None = None
    log: list[bytes] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        argv = [
            "twistd",
            "-r",
            "asyncio",
            "-n",
            "--pidfile=",
            "kezchat",
            "--listen",
            f"tcp:{self.port}:interface=127.0.0.1",
            "--db",
            self.db,
            "--web-dir",
            WEB_DIST,
            *(["--sig-server-url", self.sig_url] if self.sig_url else []),
            "--register-limit",
            str(self.register_limit),
            "--send-limit",
            "0",
            *self.extra,
        ]
        self._process, self._output = _spawn_twistd(argv)
        self.port = await self._output.listening

    async def stop(self) -> None:
        if self._process is not None and self._output is not None:
            if not self._output.ended.called:
                self._process.signalProcess(signal.SIGTERM)
            await self._output.ended
            self.log.append(self._output.text)
            self._process = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    def kill(self) -> None:
        if self._process is not None and self._output and not self._output.ended.called:
            self._process.signalProcess("KILL")


@dataclass
class PageWatch:
    """
    Everything a page reports that would mean a defect: console errors,
    uncaught exceptions and Content-Security-Policy violations.
    """

    name: str
    problems: list[str] = field(default_factory=list)
    #: console errors that a step expects (a 404 for a free handle, the
    #: refused connections while the server restarts), as predicates
    allowed: list[Callable[[str], bool]] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"{self.name}: uncaught {error}"))

    def _console(self, message: Any) -> None:
        if message.type not in ("error", "warning"):
            return
        where = message.location.get("url", "") if message.location else ""
        text = f"{message.text} @ {where}"
        if message.type == "warning" and "CSP" not in message.text:
            return
        if not any(allow(text) for allow in self.allowed):
            self.problems.append(f"{self.name}: console {message.type}: {text}")


#: reports CSP violations through the console, where PageWatch sees them
CSP_PROBE = """
document.addEventListener('securitypolicyviolation', (e) => {
  console.error('CSP violation: ' + e.violatedDirective + ' blocked ' + e.blockedURI);
});
"""


async def launch_chromium(playwright: Any, env: dict[str, str]) -> Any:
    """
    Debian's Chromium under C{playwright}, kept off every outside host,
    with C{env} (a L{scratch_env}) as its environment.
    """
    return await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, env=env)


async def watched_page(
    browser: Any,
    name: str,
    *scripts: str,
    grant: tuple[list[str], str] | None = None,
    **options: Any,
) -> tuple[Any, Any, PageWatch]:
    """
    A new context of C{browser} (C{options} as C{new_context} takes them),
    C{grant} (permissions, origin) granted, L{CSP_PROBE} and then
    C{scripts} run in every page; its first page, and a L{PageWatch}
    called C{name} attached to it: every person in a browser test starts so.
    """
    context = await browser.new_context(**options)
    if grant is not None:
        await context.grant_permissions(grant[0], origin=grant[1])
    for script in (CSP_PROBE, *scripts):
        await context.add_init_script(script)
    page = await context.new_page()
    watch = PageWatch(name)
    watch.attach(page)
    return context, page, watch
