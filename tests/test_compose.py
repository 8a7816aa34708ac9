"""
The container deployment: C{deploy/docker-compose.yml} validates with
Compose and agrees with the servers' real option names, the C{Dockerfile}
copies only what the repository has and runs what the tests run, and
C{deploy/Caddyfile} is a configuration Caddy accepts.

These need no engine: Debian's C{docker-compose} (v1) validates and
resolves the file, and C{caddy validate} checks the Caddyfile. The image
is built and the stack run for real in podman by
L{tests.test_podman_stack}.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import re
import shlex
import shutil
import sys
import tempfile

import yaml
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from kezchat.testing.requirements import missing
from tests.deploysupport import DEPLOY, ROOT, SERVER_ARGS, free_port, need, twistd

COMPOSE = os.path.join(DEPLOY, "docker-compose.yml")
ENV_EXAMPLE = os.path.join(DEPLOY, ".env.example")
DOCKERFILE = os.path.join(ROOT, "Dockerfile")
DOCKERIGNORE = os.path.join(ROOT, ".dockerignore")
CADDYFILE = os.path.join(DEPLOY, "Caddyfile")

#: the option variables every deployment must be able to set (the
#: operator-facing table of the chat-server's and sig-server's options)
REQUIRED_CHAT = {
    "KEZ_CHAT_LISTEN", "KEZ_CHAT_DB", "KEZ_CHAT_SERVER", "KEZ_CHAT_PUBLIC_URL",
    "KEZ_CHAT_SIG_SERVER_URL", "KEZ_CHAT_WEB_DIR", "NATS_URL", "KEZ_CHAT_NATS_SEED",
    "KEZ_CHAT_CALLOUT_ISSUER_SEED", "KEZ_CHAT_RETENTION_DAYS", "KEZ_CHAT_TRUSTED_PROXIES",
    "KEZ_CHAT_REGISTER_LIMIT", "KEZ_CHAT_SEND_LIMIT", "KEZ_CHAT_LOG_FORMAT",
}
REQUIRED_SIG = {"KEZ_SIG_LISTEN", "KEZ_SIG_DB", "KEZ_SIG_PUBLIC_URL"}

OPTION_NAME = re.compile(r"^(KEZ_CHAT_|KEZ_SIG_)|^NATS_URL$")


def read_env_file(path: str) -> dict[str, str]:
    """
    C{NAME=value} lines (what Compose reads from C{.env}); comments skipped.
    """
    env = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                name, _, value = line.partition("=")
                env[name] = value
    return env


def write_env_file(case: TestCase, env: dict[str, str]) -> str:
    scratch = tempfile.mkdtemp(prefix="kezchat-compose-")
    case.addCleanup(shutil.rmtree, scratch, True)
    path = os.path.join(scratch, "env")
    with open(path, "w") as f:
        f.writelines(f"{name}={value}\n" for name, value in env.items())
    return path


async def compose(case: TestCase, env_file: str, *args: str) -> tuple[int, str, str]:
    """
    Run Compose on the shipped file with C{env_file} as its C{.env} and an
    environment holding no deployment variable (so only the file counts).
    """
    tool = need("docker-compose", "docker-compose")
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tempfile.gettempdir()}
    out, err, code = await getProcessOutputAndValue(
        tool, ["-f", COMPOSE, "--env-file", env_file, *args], env=clean, path=DEPLOY
    )
    return code, out.decode(), err.decode()


_resolved: dict[str, dict] = {}


async def resolved(case: TestCase, env: dict[str, str] | None = None) -> dict:
    """
    The compose file as Compose resolves it with C{env} (default: the
    example settings), all profiles included. (Compose v1 takes over a
    second to start, so each distinct resolution is made once.)
    """
    env = read_env_file(ENV_EXAMPLE) if env is None else env
    key = json.dumps(env, sort_keys=True)
    if key not in _resolved:
        profiles = ["--profile", "tls", "--profile", "setup"]
        code, out, err = await compose(case, write_env_file(case, env), *profiles, "config")
        case.assertEqual(code, 0, err)
        _resolved[key] = yaml.safe_load(out)
    return copy.deepcopy(_resolved[key])


def target(port: str | dict) -> int:
    """
    The container port of a resolved C{ports:} entry (Compose v1 writes
    entries with a host address as C{"127.0.0.1:6969:6969/tcp"}).
    """
    if isinstance(port, dict):
        return int(port["target"])
    return int(port.split("/")[0].rsplit(":", 1)[1])


async def option_names(plugin: str) -> set[str]:
    """
    The environment variables C{twistd <plugin> --help} documents.
    """
    out, err, code = await getProcessOutputAndValue(
        twistd(), [plugin, "--help"], env={**os.environ, "PYTHONPATH": ROOT}
    )
    assert code == 0, err.decode()
    return set(re.findall(r"\(\$([A-Z0-9_]+)", out.decode()))


class ComposeTests(TestCase):
    timeout = 60

    async def test_validates(self) -> None:
        """
        Compose accepts the file with the example settings and has nothing
        to warn about (every variable is either set or defaulted).
        """
        code, out, err = await compose(self, ENV_EXAMPLE, "config", "-q")
        self.assertEqual((code, out, err), (0, "", ""))

    async def test_validates_without_settings(self) -> None:
        """
        With no C{.env} at all every setting falls back to the servers'
        defaults, so C{docker-compose -f deploy/docker-compose.yml config}
        works on a fresh checkout.
        """
        code, out, err = await compose(self, write_env_file(self, {}), "config", "-q")
        self.assertEqual((code, out, err), (0, "", ""))
        config = await resolved(self, {})
        chat = config["services"]["chat-server"]["environment"]
        self.assertEqual(chat["KEZ_CHAT_SERVER"], "kez.lat")
        self.assertEqual(chat["NATS_URL"], "nats://nats:4222")

    async def test_settings_reach_the_servers(self) -> None:
        env = read_env_file(ENV_EXAMPLE)
        services = (await resolved(self))["services"]
        for name, prefix in [("chat-server", "KEZ_CHAT_"), ("sig-server", "KEZ_SIG_")]:
            given = {k: v for k, v in env.items() if k.startswith(prefix) and v}
            received = services[name]["environment"]
            self.assertEqual({k: received[k] for k in given}, given, name)

    async def test_services_and_volumes(self) -> None:
        config = await resolved(self)
        services = config["services"]
        self.assertEqual(
            set(services), {"chat-server", "sig-server", "nats", "caddy", "nats-keys"}
        )
        self.assertEqual(
            set(config["volumes"]),
            {"chat-data", "sig-data", "nats-data", "nats-keys", "caddy-data", "caddy-config"},
        )
        for name in ("chat-server", "sig-server", "nats", "caddy"):
            self.assertEqual(services[name]["restart"], "unless-stopped", name)
            self.assertIn("max-size", services[name]["logging"]["options"], name)
        for name in ("chat-server", "sig-server", "nats"):
            self.assertIn("test", services[name]["healthcheck"], name)
        for name in ("chat-server", "sig-server", "nats", "nats-keys"):
            service = services[name]
            self.assertEqual(
                (service["read_only"], service["cap_drop"], service["security_opt"]),
                (True, ["ALL"], ["no-new-privileges:true"]),
                name,
            )
        # the optional services only start when asked for
        self.assertEqual(services["caddy"]["profiles"], ["tls"])
        self.assertEqual(services["nats-keys"]["profiles"], ["setup"])

        def mounts(service: str) -> dict[str, str]:
            found = {}
            for volume in services[service]["volumes"]:
                source, target, *mode = volume.split(":")
                found[target] = f"{os.path.basename(source)}:{''.join(mode) or 'rw'}"
            return found

        self.assertEqual(
            mounts("chat-server"),
            {"/var/lib/kezchat": "chat-data:rw", "/etc/kezchat/nats": "nats-keys:ro"},
        )
        self.assertEqual(mounts("sig-server"), {"/var/lib/kezsig": "sig-data:rw"})
        self.assertEqual(mounts("nats-keys"), {"/etc/kezchat/nats": "nats-keys:rw"})
        self.assertEqual(
            mounts("nats"), {"/etc/nats/kezchat.conf": "nats.conf:ro", "/data": "nats-data:rw"}
        )

        chat = services["chat-server"]["environment"]
        self.assertEqual(chat["KEZ_CHAT_DB"], "/var/lib/kezchat/kez-chat.db")
        self.assertEqual(services["sig-server"]["environment"]["KEZ_SIG_DB"],
                         "/var/lib/kezsig/kez-sig.db")
        for seed in ("KEZ_CHAT_NATS_SEED", "KEZ_CHAT_CALLOUT_ISSUER_SEED"):
            self.assertTrue(chat[seed].startswith("/etc/kezchat/nats/"), seed)
        # the one-time step writes where the chat-server reads
        self.assertEqual(
            services["nats-keys"]["entrypoint"],
            ["kezchat-admin", "nats-keys", "--out", "/etc/kezchat/nats"],
        )
        self.assertEqual(
            {os.path.dirname(chat[s]) for s in ("KEZ_CHAT_NATS_SEED",
                                                "KEZ_CHAT_CALLOUT_ISSUER_SEED")},
            {"/etc/kezchat/nats"},
        )
        self.assertEqual(services["chat-server"]["command"], ["kezchat"])
        self.assertEqual(services["sig-server"]["command"], ["kezsig"])

    async def test_bundled_nats(self) -> None:
        config = await resolved(self)
        nats = config["services"]["nats"]
        image, _, tag = nats["image"].partition(":")
        self.assertEqual(image, "nats")
        major, minor = (int(n) for n in re.match(r"(\d+)\.(\d+)", tag).groups())
        self.assertGreaterEqual((major, minor), (2, 10))
        self.assertEqual(nats["command"], ["-c", "/etc/nats/kezchat.conf"])
        # nats.conf reads these from the environment: the service sets them all
        with open(os.path.join(DEPLOY, "nats.conf")) as f:
            settings = [line.partition("#")[0] for line in f]
        wanted = set(re.findall(r"\$([A-Z_]+)", "".join(settings)))
        self.assertIn("KEZ_CALLOUT_ISSUER", wanted)
        self.assertEqual(wanted - set(nats["environment"]), set())
        self.assertEqual(
            config["services"]["chat-server"]["environment"]["NATS_URL"], "nats://nats:4222"
        )

    async def test_ports_agree(self) -> None:
        """
        The ports each side assumes are the same numbers: what nats.conf is
        told to listen on, what the chat-server, Caddy and the health
        checks dial, what is published.
        """
        services = (await resolved(self))["services"]
        nats = services["nats"]["environment"]
        self.assertTrue(services["chat-server"]["environment"]["NATS_URL"]
                        .endswith(f":{nats['NATS_PORT']}"))
        self.assertTrue(services["caddy"]["environment"]["NATS_WS_UPSTREAM"]
                        .endswith(f":{nats['NATS_WS_PORT']}"))
        self.assertIn(f":{nats['NATS_HTTP_PORT']}/healthz", " ".join(
            services["nats"]["healthcheck"]["test"]))
        published = {target(p) for p in services["nats"]["ports"]}
        self.assertEqual(
            published, {int(nats[k]) for k in ("NATS_PORT", "NATS_WS_PORT", "NATS_HTTP_PORT")}
        )
        for name, listen, upstream in [
            ("chat-server", "KEZ_CHAT_LISTEN", "CHAT_UPSTREAM"),
            ("sig-server", "KEZ_SIG_LISTEN", "SIG_UPSTREAM"),
        ]:
            port = int(services[name]["environment"][listen].split(":")[1])
            self.assertIn(f":{port}/v1/healthz", " ".join(services[name]["healthcheck"]["test"]))
            self.assertEqual([target(p) for p in services[name]["ports"]], [port])
            self.assertEqual(services["caddy"]["environment"][upstream], f"{name}:{port}")

    async def test_health_checks_work(self) -> None:
        """
        The health-check commands (the image's and the compose file's) are
        Python that succeeds against a running server and fails when none
        answers.
        """
        from tests.sigsupport import start_sig_server
        from tests.support import start_server

        services = (await resolved(self))["services"]
        image_check = json.loads(dict(dockerfile_instructions())["HEALTHCHECK"].split("CMD", 1)[1])
        checks = [
            (image_check, 6969, start_server),
            (services["chat-server"]["healthcheck"]["test"][1:], 6969, start_server),
            (services["sig-server"]["healthcheck"]["test"][1:], 7878, start_sig_server),
        ]
        for argv, port, start in checks:
            self.assertEqual(argv[:2], ["python", "-c"])
            server = await start(self)
            live = server.url.rsplit(":", 1)[1]
            for url_port, expected in [(live, 0), (str(free_port()), 1)]:
                code = argv[2].replace(f":{port}/", f":{url_port}/")
                self.assertNotEqual(code, argv[2])
                _out, err, status = await getProcessOutputAndValue(
                    sys.executable, ["-c", code], env=os.environ
                )
                self.assertEqual(status, expected, err.decode()[-500:])

    async def test_nats_url(self) -> None:
        """
        Unset, C{NATS_URL} means the bundled broker; set empty, no NATS.
        """
        env = read_env_file(ENV_EXAMPLE)
        for value, expected in [
            (None, "nats://nats:4222"),
            ("", ""),
        ]:
            env.pop("NATS_URL", None)
            if value is not None:
                env["NATS_URL"] = value
            config = await resolved(self, env)
            self.assertEqual(
                config["services"]["chat-server"]["environment"]["NATS_URL"], expected, value
            )

    async def test_environment_names_are_options(self) -> None:
        """
        Every server variable the compose file or C{.env.example} sets is
        one the servers read, and every required option can be set.
        """
        chat_options, sig_options = await option_names("kezchat"), await option_names("kezsig")
        self.assertLessEqual(REQUIRED_CHAT, chat_options)
        self.assertLessEqual(REQUIRED_SIG, sig_options)
        config = await resolved(self)
        chat = {n for n in config["services"]["chat-server"]["environment"] if OPTION_NAME.match(n)}
        sig = {n for n in config["services"]["sig-server"]["environment"] if OPTION_NAME.match(n)}
        self.assertEqual(chat - chat_options, set())
        self.assertEqual(sig - sig_options, set())
        self.assertLessEqual(REQUIRED_CHAT, chat)
        self.assertLessEqual(REQUIRED_SIG, sig)
        example = {n for n in read_env_file(ENV_EXAMPLE) if OPTION_NAME.match(n)}
        self.assertEqual(example - chat_options - sig_options, set())

    def test_every_variable_documented(self) -> None:
        """
        Each variable the compose file interpolates appears in
        C{.env.example}, set or as a commented-out line.
        """
        with open(COMPOSE) as f:
            used = set(re.findall(r"\$\{([A-Z0-9_]+)", f.read()))
        with open(ENV_EXAMPLE) as f:
            documented = set(re.findall(r"^#?([A-Z0-9_]+)=", f.read(), re.M))
        self.assertEqual(used - documented, set())


def dockerfile_instructions() -> list[tuple[str, str]]:
    """
    (INSTRUCTION, arguments) in order, continuation lines joined.
    """
    instructions, pending = [], ""
    with open(DOCKERFILE) as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not pending and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            pending += line
            keyword, _, rest = pending.strip().partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
            pending = ""
    return instructions


def copy_sources(arguments: str) -> tuple[dict[str, str], list[str]]:
    """
    The flags and source paths of a C{COPY} (shell or JSON form).
    """
    words = json.loads(arguments) if arguments.startswith("[") else shlex.split(arguments)
    flags = {}
    while words and words[0].startswith("--"):
        name, _, value = words.pop(0)[2:].partition("=")
        flags[name] = value
    return flags, words[:-1]


def ignored(path: str, patterns: list[str]) -> bool:
    path = path.strip("/").removeprefix("./")
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch.fnmatch(p, pattern) for p in prefixes for pattern in patterns)


class DockerfileTests(TestCase):
    def setUp(self) -> None:
        self.instructions = dockerfile_instructions()
        with open(DOCKERIGNORE) as f:
            self.ignore = [
                line.strip().removeprefix("**/") for line in f
                if line.strip() and not line.startswith("#")
            ]

    def _context_copies(self) -> list[str]:
        sources = []
        for keyword, arguments in self.instructions:
            if keyword in ("COPY", "ADD"):
                flags, paths = copy_sources(arguments)
                if "from" not in flags:
                    sources.extend(paths)
        return sources

    def test_copy_sources_exist(self) -> None:
        """
        Every path copied from the build context is in the repository and
        not kept out by C{.dockerignore}. (The web app's paths: see below.)
        """
        sources = [s for s in self._context_copies() if not s.startswith("web/")]
        self.assertIn(".", sources)
        for source in sources:
            self.assertTrue(os.path.exists(os.path.join(ROOT, source)), source)
            self.assertFalse(ignored(source, self.ignore), source)

    def test_web_sources_exist(self) -> None:
        sources = [s for s in self._context_copies() if s.startswith("web/")]
        self.assertIn("web/package-lock.json", sources)
        if not os.path.exists(os.path.join(ROOT, "web", "package.json")):
            raise missing(
                f"web/ is not in this checkout yet; the Dockerfile copies {sources} from it"
            )
        for source in sources:
            self.assertTrue(os.path.exists(os.path.join(ROOT, source)), source)
            self.assertFalse(ignored(source, self.ignore), source)

    def test_stages(self) -> None:
        """
        Node builds the app, Python builds and installs the wheel, and the
        last stage only takes the installed venv from an earlier stage.
        """
        stages: list[str] = []
        copies_from: list[tuple[str, str]] = []
        for keyword, arguments in self.instructions:
            if keyword == "FROM":
                words = arguments.split()
                self.assertEqual([w.lower() for w in words[1:2]], ["as"][: len(words[1:2])])
                stages.append(words[-1] if len(words) == 3 else str(len(stages)))
            elif keyword == "COPY":
                flags, _paths = copy_sources(arguments)
                if "from" in flags:
                    self.assertIn(flags["from"], stages, "COPY --from an earlier stage")
                    copies_from.append((stages[-1], flags["from"]))
        self.assertEqual(stages, ["web", "build", "runtime"])
        self.assertEqual(copies_from, [("build", "web"), ("runtime", "build")])
        runs = " ".join(a for k, a in self.instructions if k == "RUN")
        self.assertIn("npm ci", runs)
        self.assertIn("npm run build", runs)
        self.assertIn("pip wheel --no-deps", runs)

    def _runtime(self) -> list[tuple[str, str]]:
        last_from = max(i for i, (k, _) in enumerate(self.instructions) if k == "FROM")
        return self.instructions[last_from:]

    def test_runtime_runs_what_the_tests_run(self) -> None:
        runtime = dict(self._runtime())
        command = json.loads(runtime["ENTRYPOINT"]) + json.loads(runtime["CMD"])
        self.assertEqual(command, ["twistd", *SERVER_ARGS, "kezchat"])
        # the kezchat user, by number (see the Dockerfile)
        self.assertEqual(runtime["USER"], "10001:10001")
        self.assertIn("/v1/healthz", runtime["HEALTHCHECK"])
        self.assertIn("python", runtime["HEALTHCHECK"])

    async def test_compose_builds_this_dockerfile(self) -> None:
        config = await resolved(self)
        for name in ("chat-server", "sig-server", "nats-keys"):
            build = config["services"][name]["build"]
            self.assertEqual(
                os.path.join(build["context"], build["dockerfile"]), DOCKERFILE, name
            )


class CaddyfileTests(TestCase):
    timeout = 30

    async def test_validates(self) -> None:
        caddy = need("caddy", "caddy")
        scratch = tempfile.mkdtemp(prefix="kezchat-caddy-")
        self.addCleanup(shutil.rmtree, scratch, True)
        env = {"PATH": os.environ.get("PATH", ""), "HOME": scratch,
               "XDG_DATA_HOME": scratch, "XDG_CONFIG_HOME": scratch}
        for host in ("localhost", "chat.example.org"):
            out, err, code = await getProcessOutputAndValue(
                caddy, ["validate", "--adapter", "caddyfile", "--config", CADDYFILE],
                env={**env, "PUBLIC_HOST": host},
            )
            self.assertEqual(code, 0, (out + err).decode()[-2000:])
            self.assertIn(b"Valid configuration", out + err)


class GuideTests(TestCase):
    """
    The operator guide names only what exists: option variables, metrics,
    files and commands. (It is read instead of the code; a renamed option
    must not leave it wrong.)
    """

    timeout = 30

    def setUp(self) -> None:
        with open(os.path.join(ROOT, "docs", "operations.md")) as f:
            self.guide = f.read()

    async def test_option_variables(self) -> None:
        named = set(re.findall(r"\b((?:KEZ_CHAT|KEZ_SIG)_[A-Z_]*[A-Z]|NATS_URL)\b", self.guide))
        self.assertIn("KEZ_CHAT_RETENTION_DAYS", named)
        options = await option_names("kezchat") | await option_names("kezsig")
        self.assertEqual(named - options, set())

    def test_metrics(self) -> None:
        from kezchat.federation.metrics import FederationMetrics
        from kezchat.metrics import Metrics
        from kezchat.sigserver.metrics import SigMetrics

        chat = Metrics()
        # federation's metrics join the chat-server's registry when it starts
        FederationMetrics(chat.registry)
        suffixes = {"counter": ["_total"], "gauge": [""],
                    "histogram": ["", "_bucket", "_sum", "_count"]}
        real = {
            family.name + suffix
            for registry in (chat.registry, SigMetrics().registry)
            for family in registry.collect()
            for suffix in suffixes[family.type]
        }
        named = set(re.findall(r"\b((?:kezchat|kezsig)_[a-z_]*[a-z])(?![\w-])", self.guide))
        self.assertIn("kezchat_messages_stored_total", named)
        self.assertEqual(named - real, set())

    def test_files(self) -> None:
        paths = set(re.findall(r"\b((?:deploy|docs|scripts)/[\w./-]*[\w/])", self.guide))
        self.assertIn("deploy/systemd/kezchat-tls.conf", paths)
        # scripts/build-web comes with the web app (web/)
        missing = {
            p for p in paths
            if not os.path.exists(os.path.join(ROOT, p)) and p != "scripts/build-web"
        }
        self.assertEqual(missing, set())

    def test_admin_commands(self) -> None:
        from kezchat.tools.admin import AdminOptions

        commands = {name for name, *_ in AdminOptions.subCommands}
        named = set(re.findall(r"kezchat-admin ([a-z][\w-]*)", self.guide))
        self.assertLessEqual({"backup", "nats-keys"}, named)
        self.assertLessEqual(named, commands)
