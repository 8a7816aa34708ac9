"""
The C{twistd kezchat} plugin after a plain install, and its options.

The plugin must be found by C{twistd} from an installed wheel, not only
from an editable checkout: twistd discovers plugins by scanning
C{twisted/plugins} directories on C{sys.path}, which a mis-packaged wheel
(one shipping C{twisted/__init__.py}, say) silently breaks. So the wheel
is built from a copy of the source tree, installed into a scratch
directory, and twistd runs in a subprocess whose working directory is not
the source tree and whose C{PYTHONPATH} is unset.

Needs C{setuptools>=68} and C{wheel} in the running environment
(C{--no-build-isolation}: nothing is downloaded).
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import zipfile

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from kezchat.server.config import ChatOptions
from tests.support import http_client, json_of

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: every option SPEC §4 requires, by flag and environment variable
SPEC_OPTIONS = [
    ("--listen", "KEZ_CHAT_LISTEN"),
    ("--db", "KEZ_CHAT_DB"),
    ("--server", "KEZ_CHAT_SERVER"),
    ("--public-url", "KEZ_CHAT_PUBLIC_URL"),
    ("--sig-server-url", "KEZ_CHAT_SIG_SERVER_URL"),
    ("--web-dir", "KEZ_CHAT_WEB_DIR"),
    ("--nats-url", "NATS_URL"),
    ("--nats-seed", "KEZ_CHAT_NATS_SEED"),
    ("--callout-issuer-seed", "KEZ_CHAT_CALLOUT_ISSUER_SEED"),
    ("--retention-days", "KEZ_CHAT_RETENTION_DAYS"),
    ("--trusted-proxy", "KEZ_CHAT_TRUSTED_PROXIES"),
    ("--register-limit", "KEZ_CHAT_REGISTER_LIMIT"),
    ("--send-limit", "KEZ_CHAT_SEND_LIMIT"),
    ("--log-format", "KEZ_CHAT_LOG_FORMAT"),
]

#: what a copy of the source tree for building leaves out, anywhere
_NOT_SOURCE_ANYWHERE = shutil.ignore_patterns(
    ".git", "_trial_temp*", ".hypothesis", ".ruff_cache", "__pycache__",
    "*.egg-info", "node_modules", "*.db", "*.db-*", "dropin.cache",
)
#: ... and at the top of the tree only (web/dist is the built app the wheel carries)
_NOT_SOURCE_AT_TOP = {"build", "dist", "bench", "deploy", ".venv"}


def _NOT_SOURCE(directory: str, names: list[str]) -> set[str]:
    ignored = set(_NOT_SOURCE_ANYWHERE(directory, names))
    if os.path.abspath(directory) == REPO_ROOT:
        ignored |= _NOT_SOURCE_AT_TOP.intersection(names)
    return ignored


def clean_env() -> dict[str, str]:
    """
    The environment for a subprocess that must not see the source tree
    nor any operator setting.
    """
    names = {env for _, env in SPEC_OPTIONS}
    return {
        key: value
        for key, value in os.environ.items()
        if key != "PYTHONPATH" and key not in names and not key.startswith("KEZ_")
    }


async def run(args: list[str], cwd: str) -> tuple[bytes, bytes, int]:
    return await getProcessOutputAndValue(
        sys.executable, args, env=clean_env(), path=cwd, reactor=reactor
    )


class _Install:
    """
    One wheel build and install per test run, shared by the tests that
    need it (building takes a few seconds).
    """

    def __init__(self) -> None:
        self._result: tuple[str, str] | None = None

    async def __call__(self) -> tuple[str, str]:
        """
        Returns (wheel path, install directory).
        """
        if self._result is None:
            scratch = tempfile.mkdtemp(prefix="kezchat-wheel-")
            # shared by several test classes and trial has no module-level
            # teardown, so it goes when the test process exits
            atexit.register(shutil.rmtree, scratch, True)
            source = os.path.join(scratch, "src")
            shutil.copytree(REPO_ROOT, source, ignore=_NOT_SOURCE)
            wheels = os.path.join(scratch, "wheels")
            out, err, code = await run(
                ["-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", wheels, source],
                cwd=scratch,
            )
            if code != 0:
                raise AssertionError(f"pip wheel failed:\n{out.decode()}\n{err.decode()}")
            (wheel,) = [os.path.join(wheels, name) for name in os.listdir(wheels)]
            target = os.path.join(scratch, "site")
            out, err, code = await run(
                ["-m", "pip", "install", "--no-deps", "--no-index", "--target", target, wheel],
                cwd=scratch,
            )
            if code != 0:
                raise AssertionError(f"pip install failed:\n{out.decode()}\n{err.decode()}")
            self._result = (wheel, target)
        return self._result


installed = _Install()


def twistd_script(target: str, argv: list[str]) -> str:
    return (
        f"import sys; sys.path.insert(0, {target!r}); "
        f"from twisted.scripts.twistd import run; sys.argv = {['twistd', *argv]!r}; run()"
    )


class InstalledPluginTests(TestCase):
    timeout = 180

    async def test_wheel_contents(self) -> None:
        """
        The plugin ships as a module in Twisted's namespace; never an
        C{__init__.py} there, which would shadow the real Twisted package
        (or its plugin package) for everyone who installs us.
        """
        wheel, _ = await installed()
        names = set(zipfile.ZipFile(wheel).namelist())
        self.assertIn("twisted/plugins/kezchat.py", names)
        self.assertNotIn("twisted/__init__.py", names)
        self.assertNotIn("twisted/plugins/__init__.py", names)
        self.assertIn("kezchat/storage/sqlite/schema/001_registry.sql", names)
        # the built web app rides along, so an installed wheel serves the UI
        self.assertIn("kezchat/web/index.html", names)
        self.assertTrue(any(re.fullmatch(r"kezchat/web/assets/index-.+\.js", n) for n in names))

    async def test_installed_copy_finds_its_web_app(self) -> None:
        """
        The installed package serves the web app the wheel carries: the
        module that looks for it (in C{kezchat/http/}) finds it at the top
        of the package, where the build put it.
        """
        _, target = await installed()
        cwd = tempfile.mkdtemp(prefix="kezchat-cwd-")
        self.addCleanup(shutil.rmtree, cwd, True)
        probe = (
            f"import sys, os; sys.path.insert(0, {target!r}); "
            "import kezchat.http.webapp as w; print(w.__file__); "
            "print(os.path.isfile(os.path.join(w.packaged_web_dir(), 'index.html')))"
        )
        out, err, code = await run(["-c", probe], cwd=cwd)
        self.assertEqual(code, 0, err.decode()[-3000:])
        module_file, found = out.decode().split()
        self.assertTrue(module_file.startswith(target), module_file)
        self.assertEqual(found, "True")

    async def test_twistd_help_lists_every_option(self) -> None:
        _, target = await installed()
        cwd = tempfile.mkdtemp(prefix="kezchat-cwd-")
        self.addCleanup(shutil.rmtree, cwd, True)
        out, err, code = await run(
            ["-c", twistd_script(target, ["-n", "kezchat", "--help"])], cwd=cwd
        )
        text = out.decode()
        if "Unknown command: kezchat" in text + err.decode():
            self.fail(
                "twistd does not know kezchat (a stale twisted/plugins/dropin.cache in "
                f"{target} or on sys.path would do this):\n{err.decode()}"
            )
        self.assertEqual(code, 0, err.decode()[-3000:])
        for flag, env in SPEC_OPTIONS:
            self.assertIn(flag, text)
            self.assertIn(env, text)

    async def test_plugin_comes_from_the_installed_copy(self) -> None:
        """
        The plugin and the package twistd loads are the installed ones,
        not the source tree (which an editable install may also expose).
        """
        _, target = await installed()
        cwd = tempfile.mkdtemp(prefix="kezchat-cwd-")
        self.addCleanup(shutil.rmtree, cwd, True)
        probe = (
            f"import sys; sys.path.insert(0, {target!r}); "
            "from twisted.application.service import IServiceMaker; "
            "from twisted.plugin import getPlugins; "
            "maker = [p for p in getPlugins(IServiceMaker) if p.tapname == 'kezchat'][0]; "
            "import importlib; tap = importlib.import_module(maker.module); "
            "print(sys.modules['twisted.plugins.kezchat'].__file__); print(tap.__file__)"
        )
        out, err, code = await run(["-c", probe], cwd=cwd)
        self.assertEqual(code, 0, err.decode()[-3000:])
        plugin_file, tap_file = out.decode().split()
        # Either this wheel (target) or the test environment's own
        # non-editable install may come first on sys.path; what must never
        # happen is twistd reaching into the source tree.
        source = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        sources = {
            os.path.join(source, "twisted", "plugins", "kezchat.py"),
            os.path.join(source, "kezchat", "server", "tap.py"),
        }
        for found in (plugin_file, tap_file):
            self.assertNotIn(os.path.realpath(found), {os.path.realpath(p) for p in sources})
            if not found.startswith(target):
                self.assertIn(os.sep + "site-packages" + os.sep, found)


class _LineCollector(ProcessProtocol):
    """
    Collects stdout lines of a twistd; fires C{listening} at the first line
    that mentions it and C{ended} with (exit code, signal).
    """

    def __init__(self) -> None:
        self.buffer = b""
        self.lines: list[bytes] = []
        self.errors = b""
        self.listening: Deferred[bytes] = Deferred()
        self.ended: Deferred[tuple[int | None, int | None]] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.buffer += data
        *complete, self.buffer = self.buffer.split(b"\n")
        for line in complete:
            self.lines.append(line)
            if b"listening on" in line and not self.listening.called:
                self.listening.callback(line)

    def errReceived(self, data: bytes) -> None:
        self.errors += data

    def processEnded(self, reason: Failure) -> None:
        if self.buffer:
            self.lines.append(self.buffer)
        if not self.listening.called:
            self.listening.errback(
                AssertionError(f"twistd ended before listening: {self.errors.decode()[-3000:]}")
            )
        self.ended.callback((reason.value.exitCode, reason.value.signal))


class JSONLogTests(TestCase):
    timeout = 180

    async def test_log_format_json(self) -> None:
        """
        C{--log-format json} makes twistd log one JSON object per line; the
        server starts, logs that it listens, and stops cleanly on SIGTERM.
        """
        _, target = await installed()
        cwd = tempfile.mkdtemp(prefix="kezchat-cwd-")
        self.addCleanup(shutil.rmtree, cwd, True)
        argv = [
            "-r", "asyncio", "-n", "--pidfile=", "kezchat",
            "--listen", "tcp:0:interface=127.0.0.1",
            "--db", os.path.join(cwd, "x.db"),
            "--log-format", "json",
            "--access-log", "on",
        ]
        collector = _LineCollector()
        process = reactor.spawnProcess(
            collector,
            sys.executable,
            [sys.executable, "-c", twistd_script(target, argv)],
            env=clean_env(),
            path=cwd,
        )

        def kill() -> None:
            if process.pid is not None:
                process.signalProcess("KILL")

        self.addCleanup(kill)
        line = await collector.listening
        event = json.loads(line)
        self.assertEqual(event["description"], "tcp:0:interface=127.0.0.1")
        # the installed server really serves on the port it logged
        port = int(re.search(r"port=(\d+)", event["address"]).group(1))
        client = http_client(self)
        response = await client.get(f"http://127.0.0.1:{port}/v1/healthz")
        self.assertEqual((await json_of(response))["status"], "ok")
        # ... and serves the web app the wheel carries (loaded off-thread at start)
        for _ in range(50):
            page = await client.get(f"http://127.0.0.1:{port}/")
            body = await page.content()
            if page.code == 200:
                break
            await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(page.code, 200)
        self.assertIn(b'<div id="app">', body)
        process.signalProcess(signal.SIGTERM)
        status = await collector.ended
        # twistd stops the reactor on SIGTERM, then re-raises the signal so
        # a supervisor sees why it ended: "clean" is the shutdown message
        # followed by death by that same signal (or exit 0)
        self.assertIn(status, [(0, None), (None, signal.SIGTERM)], collector.errors.decode())
        events = [json.loads(raw) for raw in collector.lines if raw.strip()]
        self.assertEqual(events[-1].get("log_format"), "Server Shut Down.")
        # --access-log on: the request above has its line
        self.assertTrue(
            any("GET /v1/healthz" in json.dumps(event) for event in events), events[-5:]
        )


class OptionsTests(SynchronousTestCase):
    def parse(self, argv: list[str], environ: dict[str, str]) -> ChatOptions:
        options = ChatOptions(environ=environ)
        options.parseOptions(argv)
        return options

    def test_defaults(self) -> None:
        config = self.parse([], {}).config
        self.assertEqual(config.listen, ("tcp:6969",))
        self.assertEqual(config.db, "kez-chat.db")
        self.assertEqual(config.server, "kez.lat")
        self.assertEqual(config.base_url, "https://kez.lat")
        self.assertIsNone(config.sig_server_url)
        self.assertIsNone(config.nats_url)
        self.assertEqual(config.retention_days, 30)
        self.assertEqual(config.trusted_proxies, ())
        self.assertEqual(config.register_limit, 20)
        self.assertEqual(config.send_limit, 600)
        self.assertFalse(config.access_log)
        self.assertEqual(config.log_format, "text")

    def test_every_variable_is_read(self) -> None:
        environ = {
            "KEZ_CHAT_LISTEN": "tcp:7000  ssl:7443:privateKey=k.pem:certKey=c.pem",
            "KEZ_CHAT_DB": "/var/lib/kez/chat.db",
            "KEZ_CHAT_SERVER": "example.org",
            "KEZ_CHAT_PUBLIC_URL": "https://chat.example.org/",
            "KEZ_CHAT_SIG_SERVER_URL": "https://sig.example.org",
            "KEZ_CHAT_WEB_DIR": "/srv/web",
            "NATS_URL": "nats://127.0.0.1:4222",
            "KEZ_CHAT_NATS_SEED": "/etc/kez/callout.seed",
            "KEZ_CHAT_CALLOUT_ISSUER_SEED": "/etc/kez/issuer.seed",
            "KEZ_CHAT_RETENTION_DAYS": "7",
            "KEZ_CHAT_TRUSTED_PROXIES": "10.0.0.1 192.168.0.0/16",
            "KEZ_CHAT_REGISTER_LIMIT": "5",
            "KEZ_CHAT_SEND_LIMIT": "0",
            "KEZ_CHAT_LOG_FORMAT": "json",
        }
        self.assertEqual(set(environ), {env for _, env in SPEC_OPTIONS})
        config = self.parse([], environ).config
        self.assertEqual(config.listen, ("tcp:7000", "ssl:7443:privateKey=k.pem:certKey=c.pem"))
        self.assertEqual(config.db, "/var/lib/kez/chat.db")
        self.assertEqual(config.server, "example.org")
        self.assertEqual(config.base_url, "https://chat.example.org")
        self.assertEqual(config.sig_server_url, "https://sig.example.org")
        self.assertEqual(config.web_dir, "/srv/web")
        self.assertEqual(config.nats_url, "nats://127.0.0.1:4222")
        self.assertEqual(config.nats_seed, "/etc/kez/callout.seed")
        self.assertEqual(config.callout_issuer_seed, "/etc/kez/issuer.seed")
        self.assertEqual(config.retention_days, 7)
        self.assertEqual(config.trusted_proxies, ("10.0.0.1", "192.168.0.0/16"))
        self.assertEqual(config.register_limit, 5)
        self.assertEqual(config.send_limit, 0)
        self.assertEqual(config.log_format, "json")

    def test_flags_win_over_variables(self) -> None:
        environ = {
            "KEZ_CHAT_LISTEN": "tcp:7000",
            "KEZ_CHAT_DB": "env.db",
            "KEZ_CHAT_SERVER": "env.example",
            "KEZ_CHAT_TRUSTED_PROXIES": "10.0.0.1",
            "KEZ_CHAT_REGISTER_LIMIT": "5",
            "KEZ_CHAT_LOG_FORMAT": "json",
        }
        config = self.parse(
            [
                "--listen", "tcp:8000", "--listen", "tcp:8001",
                "--db", "flag.db",
                "--server", "flag.example",
                "--trusted-proxy", "10.9.9.9",
                "--register-limit", "0",
                "--log-format", "text",
            ],
            environ,
        ).config
        self.assertEqual(config.listen, ("tcp:8000", "tcp:8001"))
        self.assertEqual(config.db, "flag.db")
        self.assertEqual(config.server, "flag.example")
        self.assertEqual(config.trusted_proxies, ("10.9.9.9",))
        self.assertEqual(config.register_limit, 0)
        self.assertEqual(config.log_format, "text")

    def test_bad_values_are_usage_errors(self) -> None:
        from twisted.python.usage import UsageError

        for argv in (
            ["--register-limit", "-1"],
            ["--register-limit", "many"],
            ["--log-format", "xml"],
            ["--server", "not a domain"],
            ["--trusted-proxy", "proxy.example"],
            ["--retention-days", "soon"],
        ):
            self.assertRaises(UsageError, self.parse, argv, {})
        self.assertRaises(UsageError, self.parse, [], {"KEZ_CHAT_SEND_LIMIT": "lots"})
