"""
The prose documents agree with the code: each test here guards a statement
a review once found false (the C{file_share} offer, the healthz example,
packages said to be "landing", the README's example command, the local
NATS recipe, the JetStream note for JavaScript clients).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from pathlib import Path

from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from kezchat.p2p import crypt
from tests.support import http_client, json_of, start_server, temp_dir
from tests.test_example_bot import BotProcess

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"


def section(text: str, heading: str) -> str:
    """
    The body of the C{## heading} section of a Markdown text.
    """
    start = text.index(f"\n## {heading}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


class ProtocolFileShareTests(SynchronousTestCase):
    def setUp(self) -> None:
        attachments = section((DOCS / "protocol.md").read_text(), "9. Attachments")
        self.offer = attachments[attachments.index("**`file_share`**") :]
        self.flat = " ".join(self.offer.split())

    def test_digest_is_of_the_ciphertext(self) -> None:
        self.assertIn("`blake3` is the hex BLAKE3 of the **ciphertext**", self.flat)
        self.assertNotIn("`blake3` is of the file", self.flat)

    def test_key_is_sealed_to_the_recipient(self) -> None:
        self.assertIn("`key` is the content key **sealed to the recipient**", self.flat)

    def test_piece_format_matches_the_code(self) -> None:
        self.assertIn(f"pieces of {crypt.CHUNK} bytes", self.flat)
        self.assertIn(f"`{crypt.AAD.decode()}`", self.flat)
        self.assertIn(f"its {crypt.TAG}-byte tag", self.flat)
        self.assertIn("ChaCha20-Poly1305", self.flat)
        nonce = "3 zero bytes || i as 8 bytes big-endian || 0x01 if it is the last piece, else 0x00"
        self.assertIn(nonce, self.offer)
        # the nonce the doc spells is the one the code uses
        index = 5
        expected = bytes(3) + index.to_bytes(8, "big") + b"\x01"
        self.assertEqual(crypt._nonce(index, True), expected)
        # and the size formula it gives
        for size in (0, 1, crypt.CHUNK, crypt.CHUNK + 1, 3 * crypt.CHUNK):
            pieces = max(1, -(-size // crypt.CHUNK))
            self.assertEqual(crypt.encrypted_size(size), size + crypt.TAG * pieces)
        self.assertIn(f"`size + {crypt.TAG} × max(1, ⌈size / {crypt.CHUNK}⌉)`", self.flat)

    def test_fetch_exchange_matches_the_code(self) -> None:
        from kezchat.p2p import irohnode, transfer

        self.assertIn(f"ALPN `{irohnode.ALPN.decode()}`", self.flat)
        self.assertEqual(
            (transfer.SENDING, transfer.NOT_OFFERED, transfer.NOT_FOR_YOU), (b"\0", b"\1", b"\2")
        )
        answers = "0 the ciphertext follows, 1 not offered, 2 offered to someone else"
        self.assertIn(answers, self.flat)


class HealthzExampleTests(TestCase):
    async def test_example_names_every_field(self) -> None:
        """
        docs/operations.md's healthz example has every field a real
        server answers (and C{"nats"}, which a server without NATS omits,
        and C{"nats_ws"}, which only one with NATS and C{--nats-ws-url} sends).
        """
        text = (DOCS / "operations.md").read_text()
        match = re.search(r"curl \S+/v1/healthz\n\s*# (\{.*\})", text)
        assert match is not None
        example = json.loads(match.group(1))
        server = await start_server(self)
        response = await http_client(self).get(f"{server.url}/v1/healthz")
        real = await json_of(response)
        self.assertIn("db", example)
        self.assertEqual(set(example), set(real) | {"nats", "nats_ws"})


class ArchitectureTests(SynchronousTestCase):
    def test_nothing_is_still_landing(self) -> None:
        text = (DOCS / "architecture.md").read_text()
        self.assertNotIn("landing from other branches", text.lower())

    def test_named_packages_exist(self) -> None:
        text = (DOCS / "architecture.md").read_text()
        for path in set(re.findall(r"`(kezchat/[\w/.]+?)/?`", text)):
            self.assertTrue((ROOT / path).exists(), path)


class ReadmeNatsRecipeTests(SynchronousTestCase):
    def test_local_recipe_binds_loopback(self) -> None:
        """
        The README's local nats-server runs from deploy/nats-local.conf,
        which binds the client, WebSocket and monitoring listeners to
        127.0.0.1 (the nats-server fixture starts every test broker from
        it and checks the ports file says so).
        """
        text = README.read_text()
        local = text[text.index("**Locally, in three commands**") :]
        command = next(line for line in local.splitlines() if "nats-server -c" in line)
        self.assertTrue(command.endswith("-c deploy/nats-local.conf"), command)
        conf = (ROOT / "deploy" / "nats-local.conf").read_text()
        self.assertRegex(conf, r"(?m)^include \./nats\.conf$")
        self.assertRegex(conf, r"(?m)^host: 127\.0\.0\.1$")
        websocket = conf[conf.index("websocket {") :]
        self.assertRegex(websocket, r"(?m)^\s+host: 127\.0\.0\.1$")


class TransportDocsTests(SynchronousTestCase):
    """
    The docs agree about the web app's transports: NATS over WebSocket
    when the server advertises it, SSE otherwise; none says "SSE only" or
    sends the web app to nats.ws.
    """

    def test_the_docs_agree(self) -> None:
        readme = " ".join(README.read_text().split())
        operations = " ".join((DOCS / "operations.md").read_text().split())
        architecture = " ".join((DOCS / "architecture.md").read_text().split())
        protocol = (DOCS / "protocol.md").read_text()
        for name, text in (("README", readme), ("operations", operations)):
            self.assertNotIn("SSE only", text, name)
            self.assertNotIn("web app uses nats.ws", text, name)
            self.assertIn("KEZ_CHAT_NATS_WS_URL", text, name)
        self.assertIn("`--nats-ws-url`", readme)
        self.assertIn("NATS over WebSocket", readme)
        self.assertIn("natslive.ts", architecture)
        nats = " ".join(section(protocol, "10. NATS for native clients").split())
        self.assertIn('"nats_ws"', nats)
        self.assertIn("@nats-io/nats-core", nats)
        self.assertIn("inbox_${me}_${device}", nats)

    def test_stock_eventsource_example(self) -> None:
        """
        The long-lived stream section shows a stock EventSource on a URL
        signed with C{exp}, and no reconnect code around it.
        """
        protocol = (DOCS / "protocol.md").read_text()
        part = protocol[protocol.index("### Long-lived stream URLs, for standard clients") :]
        example = part[part.index("```js") : part.index("```", part.index("```js") + 5)]
        self.assertIn("new EventSource(", example)
        self.assertIn("&exp=${exp}", example)
        self.assertIn("12 * 3600", example)
        self.assertNotIn("onerror", example)


class JetStreamNoteTests(SynchronousTestCase):
    def test_check_api_documented_with_native_clients(self) -> None:
        nats = section((DOCS / "protocol.md").read_text(), "10. NATS for native clients")
        flat = " ".join(nats.split())
        self.assertIn("jetstreamManager({ checkAPI: false })", flat)
        self.assertIn("`$JS.API.INFO`", flat)


class ReadmeBotCommandTests(TestCase):
    timeout = 60

    async def test_readme_bot_command_runs(self) -> None:
        """
        The README's C{examples/bot.py} command, as written (the venv's
        python), starts and registers against a real server.
        """
        text = " ".join(README.read_text().split())
        match = re.search(r"`(\S*python\S* examples/bot\.py [^`]*)`", text)
        assert match is not None
        argv = shlex.split(match.group(1))
        self.assertEqual(argv[0], ".venv/bin/python")
        python = ROOT / argv[0]
        # this suite runs from the venv the README means
        self.assertTrue(os.path.samefile(Path(sys.executable).parent, python.parent), python)
        server = await start_server(self)
        scratch = temp_dir(self)
        state = os.path.join(scratch, "echobot.json")
        args = [a if a != "echobot.json" else state for a in argv[1:]]
        bot = BotProcess()
        transport = reactor.spawnProcess(
            bot,
            str(python),
            [str(python), *args, "--server-url", server.url, "--json"],
            env=dict(os.environ),
            path=str(ROOT),
        )

        def stop() -> object:
            if not bot.ended.called:
                transport.signalProcess("KILL")
            return bot.ended

        self.addCleanup(stop)
        await bot.wait_lines(1)
        self.assertEqual(bot.lines[0]["ready"], "echobot@kez.lat")


class FederationDocsTests(SynchronousTestCase):
    """
    The federation chapters name the flags, answers and log lines the
    code has.
    """

    def setUp(self) -> None:
        self.protocol = " ".join(
            section((DOCS / "protocol.md").read_text(), "14. Federation").split()
        )
        self.operations = " ".join(
            section((DOCS / "operations.md").read_text(), "Federation").split()
        )

    def test_cli_resolve(self) -> None:
        from kezchat.cli.context import RESOLVE_ENV
        from kezchat.cli.main import build_parser

        self.assertEqual(RESOLVE_ENV, "KEZ_CHAT_RESOLVE")
        args = build_parser(["send", "x", "y"]).parse_args(
            ["--resolve", "a.example=http://127.0.0.1:1", "send", "bob@b.example", "hi"]
        )
        self.assertEqual(args.resolve, ["a.example=http://127.0.0.1:1"])
        for text in ("`--resolve DOMAIN=URL`", "`KEZ_CHAT_RESOLVE`", "Queued for bob@b.example",
                     '`{"to": "bob@b.example", "queued": true}`'):
            self.assertIn(text, self.protocol)
        self.assertIn("`kez-chat` takes the same `--resolve`", self.operations)

    def test_undeliverable(self) -> None:
        import inspect

        from kezchat.cli import itemkinds
        from kezchat.federation import outbound

        self.assertIn("never took this message", inspect.getsource(itemkinds.render))
        self.assertIn("NOT DELIVERED: <domain> never took this message", self.protocol)
        self.assertIn('data-testid="undeliverable"', self.protocol)
        self.assertIn("undeliverable ({why})", inspect.getsource(outbound.Outbound._give_up))
        self.assertIn("`federation: message … undeliverable (<why>)`", self.operations)

    def test_remote_queries(self) -> None:
        for text in ("GET /v1/by-primary/ed25519:<hex>?server=a.example",
                     "GET /v1/log/consistency?from=<kept size>&to=<new size>&server=b.example"):
            self.assertIn(text, self.protocol)


class ArchitectureFloorsTests(SynchronousTestCase):
    def test_floor_table_is_the_layer_table(self) -> None:
        """
        docs/architecture.md's floor table says what L{kezchat.layers}
        says (which tests/test_layers.py holds the code to): each floor,
        its height and what it may import.
        """
        from kezchat import layers

        text = (DOCS / "architecture.md").read_text()
        order = [floor.name for floor in layers.FLOORS]
        for floor in layers.FLOORS:
            match = re.search(
                rf"(?m)^\| {floor.name} \| (\d+) \| .* \| ([^|]+) \|$", text
            )
            assert match is not None, floor.name
            self.assertEqual(int(match.group(1)), floor.height, floor.name)
            may = match.group(2).strip()
            named = [] if may == "—" else [name.strip() for name in may.split(",")]
            self.assertEqual(
                named, sorted(floor.may_import, key=order.index), floor.name
            )
