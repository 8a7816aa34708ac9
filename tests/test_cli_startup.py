"""
What makes C{kez-chat} start quickly, checked by what it imports rather
than by timing: the top-level C{--help}, C{whoami} and C{contacts} load no
event loop, HTTP stack or crypto library, and C{send} no Twisted, treq,
nats-py or Iroh (it posts with L{kezchat.client.blocking}, and checks a
new contact's key in the key directory through it), nor does C{audit}. The command
table the lazy parser is built from must say what the group modules' own
parsers say, and the blocking client keeps the treq client's promises:
certificates verified, one deadline per exchange, bounded answers.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from kezchat.cli.commands import COMMANDS, command_word, find
from kezchat.cli.main import _complete, build_parser
from kezchat.client.blocking import BlockingChatClient
from kezchat.client.errors import Unreachable
from tests.clisupport import ROOT, Cli, CliTestCase, assert_one_line_error
from tests.support import start_server, temp_dir
from tests.test_cli_hostile import HostileWorld, _Huge, _Trickle
from tests.test_tls import make_ca, make_server_cert, pem

#: never imported by a command that has no use for an event loop
EVENT_LOOP = ("twisted", "treq", "nats", "iroh", "iroh_ffi", "asyncio", "klein")
#: not needed either by a command that never unlocks the key
KEY = ("nacl", "cryptography", "keyring", "mnemonic", "OpenSSL")

_PROBE = """
import atexit, json, os, sys
def dump():
    with open(os.environ["KEZ_TEST_MODULES"], "w") as f:
        json.dump(sorted(sys.modules), f)
atexit.register(dump)
from kezchat.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def _subparsers(parser: Any) -> Any:
    return parser._subparsers._group_actions[0]


class CommandTableTests(SynchronousTestCase):
    def test_the_table_lists_every_command_as_its_group_does(self) -> None:
        """
        Names, aliases, help lines and order agree with the full parser;
        a merge that adds a command without a line in the table fails here.
        """
        full = _subparsers(build_parser())
        listed = [(a.dest, a.help) for a in full._choices_actions]
        self.assertEqual(listed, [(c.name, c.help) for c in COMMANDS])
        for command in COMMANDS:
            for alias in command.aliases:
                self.assertIs(full.choices[alias], full.choices[command.name])

    def test_each_command_parses_and_helps_the_same_when_built_alone(self) -> None:
        full = _subparsers(build_parser())
        for command in COMMANDS:
            alone = _subparsers(build_parser([command.name, "--help"]))
            self.assertEqual(
                alone.choices[command.name].format_help(),
                full.choices[command.name].format_help(),
                command.name,
            )
        self.assertEqual(build_parser(["--help"]).format_help(), build_parser().format_help())

    def test_command_word(self) -> None:
        self.assertEqual(command_word(["--home", "send", "whoami"]), "whoami")
        self.assertEqual(command_word(["--hom", "x", "--json", "send", "a"]), "send")
        self.assertEqual(command_word(["--server=http://x", "contacts"]), "contacts")
        self.assertIsNone(command_word(["--json", "--help", "send"]))
        self.assertIsNone(find("nonsense"))
        self.assertEqual(find("init"), find("register"))


class ImportGuardTests(CliTestCase):
    """
    A real account on a real server, and each command run in a process
    that records C{sys.modules} at exit.
    """

    async def modules(self, user: Cli, *args: str) -> tuple[list[str], dict[str, Any]]:
        path = os.path.join(temp_dir(self), "modules.json")
        env = {**user.env, "KEZ_CHAT_HOME": user.home, "KEZ_TEST_MODULES": path}
        out, err, code = await getProcessOutputAndValue(
            sys.executable, ["-c", _PROBE, *args], env=env, path=str(ROOT), reactor=reactor
        )
        self.assertEqual(code, 0, err.decode())
        with open(path) as f:
            loaded = json.load(f)
        lines = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
        return loaded, lines[0] if lines else {}

    def assert_none_of(self, loaded: list[str], roots: tuple[str, ...], what: str) -> None:
        found = sorted({m for m in loaded if m.split(".")[0] in roots})
        self.assertEqual(found, [], f"{what} imported {found}")

    async def test_help_whoami_contacts_and_send(self) -> None:
        await self.start_servers()
        alice, bob, _carol = await self.registered("alice", "bob", "carol")
        await alice.ok("add", "bob")

        loaded, _ = await self.modules(alice, "--help")
        self.assert_none_of(loaded, EVENT_LOOP + KEY, "--help")
        self.assertNotIn("kezchat.cli.account", loaded)

        loaded, me = await self.modules(alice, "whoami", "--json")
        self.assertEqual(me["fqhn"], "alice@kez.lat")
        self.assert_none_of(loaded, EVENT_LOOP + KEY, "whoami")
        self.assertNotIn("kezchat.natsbridge", loaded)

        loaded, contact = await self.modules(alice, "contacts", "--json")
        self.assertEqual(contact["fqhn"], "bob@kez.lat")
        self.assert_none_of(loaded, EVENT_LOOP + KEY, "contacts")

        loaded, sent = await self.modules(alice, "send", "bob", "quick", "--json")
        self.assertEqual(sent, {"to": "bob@kez.lat", "seq": 1})
        self.assert_none_of(loaded, EVENT_LOOP, "send")
        self.assertNotIn("kezchat.natsbridge", loaded)
        got = (await bob.ok("listen", "--json", "--count", "1", "--timeout", "20")).lines
        self.assertEqual([(m["text"], m["verified"]) for m in got], [("quick", True)])

        # someone new: the key directory and the sigchain are checked
        # before the pin, still without an event loop
        loaded, sent = await self.modules(alice, "send", "carol", "first", "--json")
        self.assertEqual(sent, {"to": "carol@kez.lat", "seq": 1})
        self.assert_none_of(loaded, EVENT_LOOP, "send to someone new")
        self.assertIn("kezchat.client.keydir", loaded)

        loaded, verdict = await self.modules(alice, "audit", "--json")
        self.assertEqual((verdict["ok"], verdict["size"]), (True, 3))
        self.assert_none_of(loaded, EVENT_LOOP, "audit")


class BlockingClientTLSTests(TestCase):
    """
    The blocking client against the chat-server over TLS, from a thread
    (it blocks; the server runs on this reactor).
    """

    timeout = 60

    async def setUp(self) -> None:
        directory = temp_dir(self)
        ca_key, ca_cert = make_ca()
        self.ca_pem = pem(ca_cert).decode()
        key_pem, cert_pem = make_server_cert(ca_key, ca_cert)
        key_path, cert_path = (os.path.join(directory, n) for n in ("server.key", "server.pem"))
        with open(key_path, "wb") as f:
            f.write(key_pem)
        with open(cert_path, "wb") as f:
            f.write(cert_pem)
        server = await start_server(
            self,
            listen=(f"ssl:0:interface=127.0.0.1:privateKey={key_path}:certKey={cert_path}",),
        )
        self.port = server.port

    def lookup(self, client: BlockingChatClient) -> Any:
        return deferToThread(lambda: _complete(client.lookup("nobody")))

    async def test_a_certificate_from_an_unknown_authority_is_refused(self) -> None:
        client = BlockingChatClient(f"https://127.0.0.1:{self.port}", timeout=10)
        with self.assertRaises(Unreachable) as caught:
            await self.lookup(client)
        self.assertIn("certificate is not trusted", str(caught.exception))

    async def test_a_trusted_certificate_is_accepted(self) -> None:
        trusting = ssl.create_default_context(cadata=self.ca_pem)
        client = BlockingChatClient(f"https://127.0.0.1:{self.port}", timeout=10, context=trusting)
        self.assertIsNone(await self.lookup(client))

    def test_the_default_checks_the_certificate_and_the_name(self) -> None:
        default = ssl.create_default_context()  # what the client uses without a context
        self.assertTrue(default.check_hostname)
        self.assertEqual(default.verify_mode, ssl.CERT_REQUIRED)


class _Drip(Resource):
    """
    A handle record one byte every 0.2 s, for ever: each read is quick,
    only the exchange as a whole is late.
    """

    isLeaf = True

    def render_GET(self, request: Request) -> Any:
        request.setHeader(b"content-type", b"application/json")

        def drip() -> None:
            if request.finished or request._disconnected:
                loop.stop()
                return
            request.write(b" ")

        loop = LoopingCall(drip)
        loop.start(0.2)
        request.notifyFinish().addBoth(lambda _: loop.running and loop.stop())
        return NOT_DONE_YET


class SendHostileServerTests(HostileWorld):
    """
    C{send} (on the blocking client) against a server that trickles or
    floods: the same one-line errors as C{add} on the treq client.
    """

    async def serve(self, resource: Any) -> str:
        from twisted.web.server import Site

        port = reactor.listenTCP(0, Site(resource), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return f"http://127.0.0.1:{port.getHost().port}"

    async def test_a_trickling_server_does_not_hang_send(self) -> None:
        await self.world()
        url = await self.serve(_Trickle())
        started = reactor.seconds()
        result = await self.bob.run(
            "send", "alice", "hi",
            env={"KEZ_CHAT_SERVER_URL": url, "KEZ_CHAT_HTTP_TIMEOUT": "4"},
            timeout=40,
        )
        assert_one_line_error(self, result, 1, "no complete answer within 4 s")
        self.assertLess(reactor.seconds() - started, 30)

    async def test_a_dripping_server_meets_the_overall_deadline(self) -> None:
        await self.world()
        url = await self.serve(_Drip())
        started = reactor.seconds()
        result = await self.bob.run(
            "send", "alice", "hi",
            env={"KEZ_CHAT_SERVER_URL": url, "KEZ_CHAT_HTTP_TIMEOUT": "3"},
            timeout=40,
        )
        assert_one_line_error(self, result, 1, "no complete answer within 3 s")
        self.assertLess(reactor.seconds() - started, 20)

    async def test_a_huge_body_is_not_read_by_send(self) -> None:
        await self.world()
        huge = _Huge()
        url = await self.serve(huge)
        for path in ("announced", "streamed"):
            huge.sent = 0
            result = await self.bob.run(
                "send", path, "hi", env={"KEZ_CHAT_SERVER_URL": url}, timeout=60
            )
            assert_one_line_error(self, result, 1, "larger than")
            self.assertLess(huge.sent, 64 * 1024 * 1024, path)
