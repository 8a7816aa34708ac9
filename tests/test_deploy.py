"""
The shipped systemd units: systemd accepts them as they are, their
sandbox is the one documented, and the command each C{ExecStart=} names
really serves HTTP on the socket its C{.socket} unit would pass.

And the installer the scripts use (C{scripts/lib/ensure-apt}) leaves
every service it installs stopped and disabled.

These use Debian's systemd tools (C{systemd-analyze},
C{systemd-socket-activate}), which work without systemd as PID 1; where
the package is not installed the tests say so and skip.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile

from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from kezchat.testing.requirements import missing
from tests.deploysupport import (
    INSTALLED_TWISTD,
    NO_NATS_SERVER_ARGS,
    ROOT,
    SERVER_ARGS,
    UNITS,
    free_port,
    need,
    read_unit,
    spawn,
    twistd,
    unit_environment,
    wait_healthy,
)

SERVICES = ("kezchat", "kezsig")
UNIT_FILES = [f"{name}.{kind}" for name in SERVICES for kind in ("service", "socket")]
#: optional drop-ins for kezchat.service (not installed by default): NATS
#: credentials, and in-process TLS instead of socket activation
DROPINS = {"kezchat-nats.conf": "nats.conf", "kezchat-tls.conf": "tls.conf"}


def _missing_binary(line: str) -> bool:
    return line.endswith(f"Command {INSTALLED_TWISTD} is not executable: No such file or directory")


async def _verify(path: str) -> tuple[int, list[str]]:
    analyze = need("systemd-analyze", "systemd")
    _out, err, code = await getProcessOutputAndValue(
        analyze, ["verify", "--man=no", path], env=os.environ
    )
    return code, [line for line in err.decode().splitlines() if line.strip()]


class UnitFileTests(TestCase):
    timeout = 60

    def test_shipped_files(self) -> None:
        self.assertEqual(sorted(os.listdir(UNITS)), sorted([*UNIT_FILES, *DROPINS]))

    async def test_verify_as_shipped(self) -> None:
        """
        Only the install path of twistd (absent on a test machine) may be
        reported; anything else systemd says about a unit is a defect.
        """
        for name in UNIT_FILES:
            code, lines = await _verify(os.path.join(UNITS, name))
            problems = [line for line in lines if not _missing_binary(line)]
            self.assertEqual(problems, [], name)
            if name.endswith(".socket"):
                self.assertEqual((code, lines), (0, []), name)

    async def test_verify_installed(self) -> None:
        """
        With twistd where the units expect it (here: this venv's) and the
        drop-ins applied, systemd has nothing at all to say.
        """
        scratch = tempfile.mkdtemp(prefix="kezchat-units-")
        self.addCleanup(shutil.rmtree, scratch, True)
        for name in UNIT_FILES:
            with open(os.path.join(UNITS, name)) as f:
                text = f.read()
            with open(os.path.join(scratch, name), "w") as f:
                f.write(text.replace(INSTALLED_TWISTD, twistd()))
        for name in UNIT_FILES:
            code, lines = await _verify(os.path.join(scratch, name))
            self.assertEqual((code, lines), (0, []), name)
        os.mkdir(os.path.join(scratch, "kezchat.service.d"))
        for dropin, installed in DROPINS.items():
            with open(os.path.join(UNITS, dropin)) as f:
                text = f.read()
            with open(os.path.join(scratch, "kezchat.service.d", installed), "w") as f:
                f.write(text.replace(INSTALLED_TWISTD, twistd()))
            code, lines = await _verify(os.path.join(scratch, "kezchat.service"))
            self.assertEqual((code, lines), (0, []), dropin)

    def test_sandbox(self) -> None:
        for name in SERVICES:
            service = read_unit(os.path.join(UNITS, f"{name}.service"))["Service"]
            for key, value in [
                ("DynamicUser", "yes"),
                ("StateDirectory", name),
                ("ProtectSystem", "strict"),
                ("NoNewPrivileges", "yes"),
                ("PrivateTmp", "yes"),
                ("PrivateDevices", "yes"),
                ("ProtectHome", "yes"),
                ("ProtectKernelTunables", "yes"),
                ("ProtectKernelModules", "yes"),
                ("ProtectKernelLogs", "yes"),
                ("ProtectControlGroups", "yes"),
                ("RestrictNamespaces", "yes"),
                ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
                ("CapabilityBoundingSet", ""),
            ]:
                self.assertEqual(service.get(key), [value], f"{name}.service {key}=")
            self.assertIn("@system-service", service["SystemCallFilter"])

    def test_reactor_follows_nats(self) -> None:
        """
        Without NATS the unit runs the epoll reactor (less CPU per
        request); the NATS drop-in replaces the command with the asyncio
        reactor's, which NATS needs (the plugin refuses NATS on any other).
        """
        service = read_unit(os.path.join(UNITS, "kezchat.service"))["Service"]
        self.assertEqual(
            service["ExecStart"], [" ".join([INSTALLED_TWISTD, *NO_NATS_SERVER_ARGS, "kezchat"])]
        )
        dropin = read_unit(os.path.join(UNITS, "kezchat-nats.conf"))["Service"]
        self.assertEqual(
            dropin["ExecStart"], ["", " ".join([INSTALLED_TWISTD, *SERVER_ARGS, "kezchat"])]
        )

    async def test_exposure_score(self) -> None:
        """
        C{systemd-analyze security} rates both services "OK" (≤ 2.0 of 10).
        """
        analyze = need("systemd-analyze", "systemd")
        for name in SERVICES:
            out, err, _code = await getProcessOutputAndValue(
                analyze,
                ["security", "--offline=true", "--no-pager", f"{UNITS}/{name}.service"],
                env=os.environ,
            )
            found = re.search(rb"Overall exposure level for \S+: ([0-9.]+)", out + err)
            self.assertIsNotNone(found, (out + err).decode()[-500:])
            self.assertLessEqual(float(found.group(1)), 2.0, name)


class SocketActivationTests(TestCase):
    """
    Each service's C{ExecStart=}, read from the unit, serves on the socket
    C{systemd-socket-activate} passes under the unit's
    C{FileDescriptorName=}, with the unit's environment.
    """

    timeout = 60

    async def _activate(self, name: str) -> dict:
        activate = need("systemd-socket-activate", "systemd")
        service = read_unit(os.path.join(UNITS, f"{name}.service"))["Service"]
        socket_unit = read_unit(os.path.join(UNITS, f"{name}.socket"))["Socket"]

        [execstart] = service["ExecStart"]
        argv = execstart.split()
        args = NO_NATS_SERVER_ARGS if name == "kezchat" else SERVER_ARGS
        self.assertEqual(argv, [INSTALLED_TWISTD, *args, name])
        argv[0] = twistd()

        [fdname] = socket_unit["FileDescriptorName"]
        [listen] = socket_unit["ListenStream"]
        host, _, _port = listen.rpartition(":")
        self.assertEqual(host, "127.0.0.1", "the unit listens on loopback behind the proxy")
        port = free_port()

        scratch = tempfile.mkdtemp(prefix=f"{name}-activate-")
        self.addCleanup(shutil.rmtree, scratch, True)
        [state] = service["StateDirectory"]
        env = {
            key: value.replace(f"/var/lib/{state}", scratch)
            for key, value in unit_environment(service).items()
        }
        self.assertIn(f"name={fdname}", env[f"KEZ_{'CHAT' if name == 'kezchat' else 'SIG'}_LISTEN"])
        # like systemd, systemd-socket-activate gives the service only the
        # environment it is told to (-E), as the unit's Environment= does;
        # PYTHONPATH makes the venv's twistd run this checkout
        env["PYTHONPATH"] = ROOT
        passed = [f"-E{key}={value}" for key, value in env.items()]
        proto = spawn(
            self,
            [activate, "-l", f"{host}:{port}", f"--fdname={fdname}", *passed, *argv],
            os.environ,
            scratch,
        )
        health = await wait_healthy(self, proto, f"http://{host}:{port}")
        self.assertTrue(os.listdir(scratch), "the database lives in the state directory")
        return health

    async def test_kezchat(self) -> None:
        health = await self._activate("kezchat")
        self.assertEqual(health["status"], "ok")
        self.assertEqual(health["nats"], "disabled")

    async def test_kezsig(self) -> None:
        health = await self._activate("kezsig")
        self.assertEqual((health["status"], health["service"]), ("ok", "kezsig"))


PROBE = "kezchat-test-probe"
#: a package shaped like caddy's or postgresql's: a unit its postinst
#: enables, and a start its postinst asks policy-rc.d about (the answer
#: is written down instead of starting anything)
PROBE_POSTINST = f"""#!/bin/sh
set -e
if [ "$1" = configure ]; then
    deb-systemd-helper enable {PROBE}.service
    code=0
    /usr/sbin/policy-rc.d {PROBE}.service start || code=$?
    echo "$code" > /run/{PROBE}.policy
fi
"""
PROBE_POSTRM = f"""#!/bin/sh
set -e
if [ "$1" = purge ]; then
    deb-systemd-helper purge {PROBE}.service >/dev/null || true
fi
"""


def _read_or_none(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


class EnsureAptTests(TestCase):
    """
    C{scripts/lib/ensure-apt}, which C{run-tests} and C{run-server} install
    Debian packages with, never lets a package start or enable a service.
    """

    timeout = 300

    def _probe_deb(self) -> str:
        scratch = tempfile.mkdtemp(prefix="kezchat-ensure-apt-")
        self.addCleanup(shutil.rmtree, scratch, True)
        root = os.path.join(scratch, PROBE)
        files = {
            "DEBIAN/control": (
                f"Package: {PROBE}\nVersion: 1.0\nArchitecture: all\n"
                "Maintainer: kezchat tests <tests@invalid>\n"
                "Description: a package with a service, for kezchat's tests\n"
            ),
            "DEBIAN/postinst": PROBE_POSTINST,
            "DEBIAN/postrm": PROBE_POSTRM,
            f"lib/systemd/system/{PROBE}.service": (
                "[Unit]\nDescription=kezchat test probe\n\n"
                "[Service]\nExecStart=/bin/true\n\n[Install]\nWantedBy=multi-user.target\n"
            ),
        }
        for name, text in files.items():
            path = os.path.join(root, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
            if name.startswith("DEBIAN/post"):
                os.chmod(path, 0o755)
        return root

    async def test_installs_without_services(self) -> None:
        if os.getuid() != 0:
            raise missing("installs a package: needs root")
        dpkg_deb = need("dpkg-deb", "dpkg")
        need("deb-systemd-helper", "init-system-helpers")
        root = self._probe_deb()
        deb = f"{root}.deb"
        out, err, code = await getProcessOutputAndValue(
            dpkg_deb, ["--build", "--root-owner-group", root, deb], env=os.environ
        )
        self.assertEqual(code, 0, (out + err).decode())

        async def purge() -> None:
            await getProcessOutputAndValue(
                "/usr/bin/dpkg", ["--purge", PROBE], env=os.environ
            )
            if os.path.exists(f"/run/{PROBE}.policy"):
                os.remove(f"/run/{PROBE}.policy")

        self.addCleanup(purge)
        await purge()
        wants = f"/etc/systemd/system/multi-user.target.wants/{PROBE}.service"
        policy = "/usr/sbin/policy-rc.d"
        policy_before = _read_or_none(policy)

        out, err, code = await getProcessOutputAndValue(
            "/bin/bash", [os.path.join(ROOT, "scripts", "lib", "ensure-apt"), deb],
            env=os.environ,
        )
        self.assertEqual(code, 0, (out + err).decode()[-3000:])
        with open(f"/run/{PROBE}.policy") as f:
            # 101: "action forbidden by policy", so invoke-rc.d and
            # deb-systemd-invoke start nothing
            self.assertEqual(f.read().strip(), "101")
        self.assertFalse(os.path.lexists(wants), "the install left its service enabled")
        # and the machine's own policy (or its absence) is back as it was
        self.assertEqual(_read_or_none(policy), policy_before)
