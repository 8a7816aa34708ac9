"""
The CLI against a hostile server and a hostile sender.

The real C{kez-chat} process listens through L{tests.hostilerelay} (a
man-in-the-middle between it and a real chat-server) that relabels,
replays, corrupts and injects; mallory, a registered user, sends what no
honest client would. Every attack must come out as a warning
(C{"verified": false} with a reason) or not at all, never as a normal
message; a genuine message afterwards still shows normally. Then each
break the CLI had, one test each: escape sequences on the terminal, a
hostile C{from} pinned, a file name the disk refuses, a trickling server,
a huge body, a 16 MiB event-stream line, C{fetch --out} replaced during
the download, a one-character passphrase.
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import LoopingCall
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from kezchat.client.sse import LineTooLong, SSEParser
from kezchat.e2e import chunked_file, inline_file, receipt, seal_envelope, text_message
from kezchat.identity.keys import KeyPair
from kezchat.identity.mnemonic import mnemonic_to_seed
from tests.clisupport import Cli, CliTestCase, Result, assert_one_line_error
from tests.hostilerelay import (
    HostileRelay,
    Item,
    Replayer,
    corrupt_signature,
    item,
    relabel,
    seal_raw,
)
from tests.relaysupport import send
from tests.support import deferred_sleep, http_client, temp_dir

ESC = "\x1b"


def at(seq: int) -> Any:
    """
    A predicate for the relay's rewriters: the item with this seq.
    """
    return lambda i: i.get("seq") == seq


class HostileWorld(CliTestCase):
    """
    alice, bob and mallory registered through the CLI; bob's CLI talks to
    the server only through the hostile relay; alice and mallory send with
    their keys over HTTP (so a test can send anything it likes).
    """

    timeout = 180

    async def world(self) -> None:
        await self.start_servers()
        self.relay = await HostileRelay.start(self, self.chat.url)
        self.alice, self.bob, self.mallory = await self.registered("alice", "bob", "mallory")
        self.keys = {
            name: KeyPair(mnemonic_to_seed(user.mnemonic))
            for name, user in (("alice", self.alice), ("bob", self.bob), ("mallory", self.mallory))
        }
        self.http = http_client(self)
        relayed = {**self.bob.env, "KEZ_CHAT_SERVER_URL": self.relay.url}
        self.bob_relayed = Cli(self.bob.home, relayed, self.bob.mnemonic)
        await self.bob.ok("add", "alice")

    async def send_from(self, name: str, plaintext: dict[str, Any] | bytes) -> int:
        """
        Seal C{plaintext} from C{name} to bob and post it; returns its seq.
        """
        key = self.keys[name]
        bob = self.keys["bob"].primary
        if isinstance(plaintext, bytes):
            envelope = seal_raw(key, bob, plaintext)
        else:
            envelope = seal_envelope(key, bob, plaintext)
        code, body = await send(self.http, self.chat.url, key, name, "bob", envelope)
        self.assertEqual(code, 201, body)
        return int(body["seq"])

    def contacts(self) -> dict[str, str]:
        with open(os.path.join(self.bob.home, "contacts.json")) as f:
            return {k: v["primary"] for k, v in json.load(f)["contacts"].items()}

    def assert_safe(self, result: Result) -> None:
        """
        Nothing a terminal acts on reached stdout or stderr raw.
        """
        for stream in (result.out, result.err):
            for bad in (ESC, "\r", "\x07", "\u202e", "\u200b", "\x9b"):
                self.assertNotIn(bad, stream, repr(stream[-3000:]))


class RelayAttackTests(HostileWorld):
    async def test_every_attack_is_a_warning_or_hidden(self) -> None:
        """
        Relabelled, re-keyed, corrupted, replayed and injected messages
        come out as warnings or not at all; nothing hostile is pinned; the
        genuine message at the end is normal, with no key warning.
        """
        await self.world()
        alice, mallory = self.keys["alice"], self.keys["mallory"]
        first = await self.send_from("mallory", text_message("hi, mallory here"))
        relabelled = {
            await self.send_from("mallory", text_message("relabelled")): relabel(
                "alice@kez.lat"
            ),
            await self.send_from("mallory", text_message("zero width")): relabel(
                "alice@kez.lat\u200b"
            ),
            await self.send_from("mallory", text_message("trailing space")): relabel(
                "alice@kez.lat "
            ),
            await self.send_from("mallory", text_message("escapes")): relabel(
                f"{ESC}[2J{ESC}]0;owned\x07alice@kez.lat"
            ),
            await self.send_from("mallory", text_message("vouched as alice")): relabel(
                "alice@kez.lat", alice.primary
            ),
        }
        corrupted = await self.send_from("mallory", text_message("bad signature"))
        replay_carrier = await self.send_from("mallory", text_message("carrier one"))
        inject_carrier = await self.send_from("mallory", text_message("carrier two"))
        stranger = KeyPair.generate()
        twice = b'{"type":"text","text":"a","text":"b"}'
        injected: list[Item] = [
            item(
                seal_raw(mallory, self.keys["bob"].primary, twice),
                inject_carrier + 500,
                "mallory@kez.lat",
            ),
            item(
                seal_envelope(stranger, self.keys["bob"].primary, text_message("I am dave")),
                inject_carrier + 501,
                "dave@kez.lat",
            ),
            item(
                seal_envelope(stranger, self.keys["bob"].primary, text_message("I am alice")),
                inject_carrier + 502,
                "alice@kez.lat",
            ),
        ]
        replayer = Replayer(at(replay_carrier))
        self.relay.rewriters.append(replayer)
        for seq, rewriter in relabelled.items():
            self.relay.rewriters.append(
                lambda i, seq=seq, rewriter=rewriter: rewriter(i) if i["seq"] == seq else [i]
            )
        self.relay.rewriters.append(corrupt_signature(at(corrupted)))
        self.relay.rewriters.append(
            lambda i: [i, *injected] if i["seq"] == inject_carrier else [i]
        )
        genuine = await self.send_from("alice", text_message("genuine from alice"))

        shown = 1 + len(relabelled) + 1 + 2 + len(injected) + 1
        result = await self.bob_relayed.run(
            "listen", "--json", "--count", str(shown), "--timeout", "60"
        )
        self.assertEqual(result.code, 0, str(result))
        lines = {line["seq"]: line for line in result.lines}
        self.assertEqual(len(result.lines), shown, str(result))
        # the replay of the first message under a new seq: hidden, and said
        self.assertNotIn(replay_carrier + 1000, lines)
        self.assertIn("replay", result.err)

        self.assertEqual(lines[first]["from"], "mallory@kez.lat")
        self.assertTrue(lines[first]["verified"])
        attacks = [*relabelled, corrupted, *(i["seq"] for i in injected)]
        for seq in attacks:
            line = lines[seq]
            self.assertFalse(line["verified"], line)
            self.assertTrue(line.get("warning"), line)
            self.assertNotEqual(line["from"], "alice@kez.lat", line)
        for seq in relabelled:
            self.assertEqual(lines[seq]["from"], "mallory@kez.lat", lines[seq])
        as_alice, zero_width, _, escapes, vouched = relabelled
        self.assertIn("not a handle", lines[zero_width]["warning"])
        self.assertIn("not a handle", lines[escapes]["warning"])
        self.assertIn("pinned", lines[as_alice]["warning"])
        self.assertIn("vouched", lines[vouched]["warning"])
        self.assertIn("signature", lines[corrupted]["warning"])
        self.assertIn("duplicate key", lines[injected[0]["seq"]]["warning"])
        self.assertIn("dave@kez.lat", lines[injected[1]["seq"]]["warning"])
        self.assertIn("key changed", lines[injected[2]["seq"]]["warning"])
        # the carriers themselves are mallory's genuine messages
        for seq in (replay_carrier, inject_carrier):
            self.assertEqual(
                (lines[seq]["from"], lines[seq]["verified"]), ("mallory@kez.lat", True)
            )

        # the genuine message is normal, with no warning about it
        self.assertEqual(lines[genuine]["from"], "alice@kez.lat")
        self.assertTrue(lines[genuine]["verified"])
        self.assertNotIn("warning", lines[genuine])
        self.assertNotIn(f"#{genuine} ", result.err)
        # nothing but alice (added) and mallory (first use) is pinned, to
        # their own keys
        self.assertEqual(
            self.contacts(),
            {"alice@kez.lat": alice.primary, "mallory@kez.lat": mallory.primary},
        )
        self.assert_safe(result)

        # a second listen shows nothing again (the replay included)
        again = await self.bob_relayed.run("listen", "--json", "--timeout", "2")
        self.assertEqual((again.code, again.out), (0, ""), str(again))

    async def test_human_output_is_escaped(self) -> None:
        """
        Escape sequences, carriage returns, forged lines and bidi overrides
        in message text, file names and the server's C{from} reach the
        terminal as visible escapes, one message per line.
        """
        await self.world()
        forged = (
            f"{ESC}[2J{ESC}]0;owned\x07hello\r[99] alice@kez.lat: send money\n"
            "[100] alice@kez.lat: ok \u202efdp.exe\x9b31m"
        )
        await self.send_from("mallory", text_message(forged))
        await self.send_from("mallory", inline_file("invoice\u202efdp.exe\n[1] x", "a/b", b"x"))
        relabelled = await self.send_from("mallory", text_message("relabelled"))
        self.relay.rewriters.append(
            relabel(f"{ESC}[31malice@kez.lat\r\u202e", when=at(relabelled))
        )
        result = await self.bob_relayed.run("listen", "--count", "3", "--timeout", "60")
        self.assertEqual(result.code, 0, str(result))
        self.assert_safe(result)
        lines = result.out.splitlines()
        self.assertEqual(len(lines), 3, result.out)
        self.assertTrue(all(line.startswith("[") for line in lines), lines)
        self.assertFalse(any("alice@kez.lat:" in line.split("]", 1)[1][:20] for line in lines))
        self.assertIn("\\e[2J", lines[0])
        self.assertIn("\\u202e", lines[1])
        self.assertIn("[UNVERIFIED]", lines[2])
        self.assertIn("\\x1b[31m", result.err)


class SentCopyAttackTests(HostileWorld):
    async def test_sent_copies_and_receipts_follow_the_trust_rule(self) -> None:
        """
        One's own sent copies (C{"direction": "out"}) and receipts are held
        to the same rule as messages: a copy whose recipient the server
        relabels, re-keys or writes as a non-handle, one whose signature is
        corrupted, someone else's envelope dressed up as one's own copy,
        and a receipt relabelled as a pinned contact's are each shown
        unverified with the reason, labelled from the pin, never as the
        server's word; a genuine copy after is normal.
        """
        await self.world()
        bob, mallory, alice = self.keys["bob"], self.keys["mallory"], self.keys["alice"]

        async def bob_sends(text: str) -> dict[str, Any]:
            envelope = seal_envelope(bob, alice.primary, text_message(text))
            code, body = await send(self.http, self.chat.url, bob, "bob", "alice", envelope)
            self.assertEqual(code, 201, body)
            return envelope

        # bob's inbox holds only his copies, then mallory's receipt: seqs 1..6
        for text in ("relabelled", "re-keyed", "zero width", "corrupted", "genuine"):
            await bob_sends(text)
        code, _ = await send(
            self.http, self.chat.url, mallory, "mallory", "bob",
            seal_envelope(mallory, bob.primary, receipt("delivered", ["ab" * 64])),
        )
        self.assertEqual(code, 201)

        def retarget(seq: int, to: str, to_primary: str | None = None) -> Any:
            def rewrite(i: Item) -> list[Item]:
                if i["seq"] == seq:
                    i["to"] = to
                    if to_primary is not None:
                        i["to_primary"] = to_primary
                return [i]

            return rewrite

        dressed = {
            **item(seal_envelope(mallory, alice.primary, text_message("I am bob")), 500,
                   "bob@kez.lat", bob.primary),
            "direction": "out", "to": "alice@kez.lat", "to_primary": alice.primary,
        }
        self.relay.rewriters += [
            retarget(1, "mallory@kez.lat"),
            retarget(2, "mallory@kez.lat", mallory.primary),
            retarget(3, "alice@kez.lat\u200b"),
            corrupt_signature(at(4)),
            lambda i: [i, dressed] if i["seq"] == 5 else [i],
            relabel("alice@kez.lat", when=at(6)),
        ]
        result = await self.bob_relayed.run("listen", "--json", "--timeout", "8")
        self.assertEqual(result.code, 0, str(result))
        lines = {line["seq"]: line for line in result.lines}
        self.assertEqual(sorted(lines), [1, 2, 3, 4, 5, 6, 500], str(result))
        for seq in (1, 2, 3, 4, 500, 6):
            self.assertFalse(lines[seq]["verified"], lines[seq])
            self.assertTrue(lines[seq].get("warning"), lines[seq])
        for seq in (1, 2, 3, 4, 500):
            self.assertEqual(lines[seq]["direction"], "out", lines[seq])
            self.assertNotEqual(lines[seq]["to"], "mallory@kez.lat", lines[seq])
        self.assertIn("pinned to alice@kez.lat", lines[1]["warning"])
        self.assertEqual(lines[1]["claimed_to"], "mallory@kez.lat")
        self.assertIn("another recipient", lines[2]["warning"])
        self.assertIn("not a handle", lines[3]["warning"])
        self.assertIn("signature", lines[4]["warning"])
        self.assertIn("not sent by this key", lines[500]["warning"])
        # the receipt: mallory's, relabelled as alice: not alice's
        self.assertEqual(lines[6]["type"], "receipt")
        self.assertNotEqual(lines[6]["from"], "alice@kez.lat", lines[6])
        self.assertIn("key changed", lines[6]["warning"])
        # the genuine copy: bob's own message to alice, labelled by the pin
        self.assertEqual(
            (lines[5]["direction"], lines[5]["to"], lines[5]["verified"], lines[5]["text"]),
            ("out", "alice@kez.lat", True, "genuine"),
        )
        self.assertNotIn("warning", lines[5])
        # nothing new pinned (mallory's receipt pins nobody)
        self.assertEqual(self.contacts(), {"alice@kez.lat": alice.primary})
        self.assert_safe(result)


class FileTests(HostileWorld):
    async def test_hostile_names_reused_ids_and_failed_writes(self) -> None:
        """
        A name the disk would refuse is shortened and saved; bidi controls
        are stripped; a sender's chunks never join another sender's file
        and a reused C{file_id} is refused; a directory that cannot be
        written is a warning per file and C{listen} goes on.
        """
        await self.world()
        saved = os.path.join(temp_dir(self), "saved")
        await self.send_from("mallory", inline_file("A" * 250, "text/plain", b"long name"))
        await self.send_from("mallory", inline_file("invoice\u202efdp.exe", "a/b", b"pdf?"))
        alices = os.urandom(100 * 1024)
        header, chunks = chunked_file("contract.txt", "text/plain", alices, file_id="shared-id")
        await self.send_from("alice", header)
        # mallory's chunks and announcement under alice's file_id
        mheader, mchunks = chunked_file(
            "evil.txt", "text/plain", os.urandom(90 * 1024), "shared-id"
        )
        await self.send_from("mallory", mchunks[0])
        for chunk in chunks:
            await self.send_from("alice", chunk)
        await self.send_from("mallory", mheader)
        await self.send_from("mallory", mchunks[1])
        # mallory reuses its own file_id for other bytes
        again, _ = chunked_file("evil2.txt", "text/plain", os.urandom(90 * 1024), "shared-id")
        await self.send_from("mallory", again)
        last = await self.send_from("alice", text_message("after the files"))

        result = await self.bob_relayed.run(
            "listen", "--json", "--save-files", saved, "--count", str(last), "--timeout", "60"
        )
        self.assertEqual(result.code, 0, str(result))
        by_seq = {line["seq"]: line for line in result.lines}
        self.assertEqual(by_seq[last]["text"], "after the files")
        files = {p.name: p.read_bytes() for p in Path(saved).iterdir()}
        self.assertEqual(files["A" * 200], b"long name")
        self.assertEqual(files["invoicefdp.exe"], b"pdf?")
        self.assertEqual(files["contract.txt"], alices)
        self.assertIn("evil.txt", files)
        self.assertNotIn("evil2.txt", files)
        self.assertFalse([n for n in files if n.startswith(".")], files)
        self.assertIn("already used by this sender", result.err)

        # a directory that cannot be written: a warning, and listen goes on
        blocked = os.path.join(temp_dir(self), "a-file")
        Path(blocked).write_bytes(b"")
        await self.send_from("mallory", inline_file("one.txt", "text/plain", b"1"))
        final = await self.send_from("alice", text_message("still listening"))
        result = await self.bob_relayed.run(
            "listen", "--json", "--save-files", os.path.join(blocked, "sub"),
            "--count", "2", "--timeout", "60",
        )
        self.assertEqual(result.code, 0, str(result))
        self.assertEqual(result.lines[-1]["seq"], final)
        self.assertIn("cannot write one.txt", result.err)


class _Trickle(Resource):
    """
    A hostile chat-server: a handle record one byte every 5 s.
    """

    isLeaf = True

    def render_GET(self, request: Request) -> Any:
        request.setHeader(b"content-type", b"application/json")
        body = iter(b'{"handle": "alice", "fqhn": "alice@kez.lat", "primary": "x"}')

        def drip() -> None:
            if request.finished or request._disconnected:
                loop.stop()
                return
            request.write(bytes([next(body, 32)]))

        loop = LoopingCall(drip)
        loop.start(5.0)
        request.notifyFinish().addBoth(lambda _: loop.running and loop.stop())
        return NOT_DONE_YET


class _Huge(Resource):
    """
    A hostile chat-server: a 400 MB handle record, with or without a
    Content-Length.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0

    def render_GET(self, request: Request) -> Any:
        size = 400 * 1000 * 1000
        if b"announced" in request.path:
            request.setHeader(b"content-length", str(size).encode())
        block = b" " * (1024 * 1024)

        def pour() -> None:
            if request.finished or request._disconnected or self.sent >= size:
                loop.stop()
                if not request._disconnected and not request.finished:
                    request.finish()
                return
            request.write(block)
            self.sent += len(block)

        loop = LoopingCall(pour)
        loop.start(0.001)
        return NOT_DONE_YET


class HostileServerTests(HostileWorld):
    async def serve(self, resource: Resource) -> str:
        port = reactor.listenTCP(0, Site(resource), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return f"http://127.0.0.1:{port.getHost().port}"

    async def test_a_trickling_server_does_not_hang_add(self) -> None:
        await self.world()
        url = await self.serve(_Trickle())
        started = time.monotonic()
        result = await self.bob.run(
            "add", "carol",
            env={"KEZ_CHAT_SERVER_URL": url, "KEZ_CHAT_HTTP_TIMEOUT": "4"},
            timeout=40,
        )
        assert_one_line_error(self, result, 1, "no complete answer within 4 s")
        self.assertLess(time.monotonic() - started, 30)

    async def test_a_huge_body_is_not_read(self) -> None:
        await self.world()
        huge = _Huge()
        url = await self.serve(huge)
        for path in ("announced", "streamed"):
            huge.sent = 0
            result = await self.bob.run(
                "add", path, env={"KEZ_CHAT_SERVER_URL": url}, timeout=60
            )
            assert_one_line_error(self, result, 1, "larger than")
            self.assertLess(huge.sent, 64 * 1024 * 1024, path)

    async def test_a_16_mib_event_line(self) -> None:
        """
        A 16 MiB line on the stream costs little CPU, is dropped with a
        warning, and the stream resumes: the next message arrives.
        """
        await self.world()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        listening = self.bob_relayed.spawn("listen", "--json", "--count", "1", "--timeout", "60")
        await self.relay.stream_open()
        self.relay.push_raw(b"data: " + b"x" * (16 * 1024 * 1024) + b"\n\n")
        await deferred_sleep(1.0)
        self.relay._stream_waiters.clear()
        await self.relay.stream_open()
        seq = await self.send_from("alice", text_message("after the flood"))
        result = await listening.done
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.assertEqual(result.code, 0, str(result))
        self.assertEqual([line["seq"] for line in result.lines], [seq])
        self.assertIn("dropped the stream", result.err)
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        self.assertLess(cpu, 10.0)


class PassphraseTests(CliTestCase):
    async def test_short_passphrase_refused_and_scrypt_cost(self) -> None:
        await self.start_servers(keyring=False)
        short = self.user("shorty", KEZ_CHAT_PASSPHRASE="x")
        result = await short.run("register", "shorty", "--yes", "--json")
        assert_one_line_error(self, result, 1, "shorter than 8")
        self.assertFalse(os.path.exists(os.path.join(short.home, "account.json")))
        [ok] = await self.registered("longer")
        with open(os.path.join(ok.home, "secret.json")) as f:
            self.assertEqual(json.load(f)["kdf"]["n"], 2**17)


class UnitTests(SynchronousTestCase):
    def test_sse_parser_scans_each_byte_once(self) -> None:
        """
        A 16 MiB line fed in 64 KiB pieces is refused at the cap, and even
        with no cap it costs one pass, not one per piece.
        """
        parser = SSEParser()
        with self.assertRaises(LineTooLong):
            for _ in range(256):
                parser.feed(b"x" * 65536)
        unbounded = SSEParser(max_line=64 * 1024 * 1024)
        started = time.process_time()
        for _ in range(256):
            unbounded.feed(b"y" * 65536)
        unbounded.max_line = 64 * 1024 * 1024
        self.assertEqual(unbounded.feed(b"\n"), [])
        self.assertLess(time.process_time() - started, 3.0)

    def test_fetch_commit_never_replaces(self) -> None:
        """
        A file created at C{--out} during the download is left alone: the
        commit refuses and leaves nothing behind.
        """
        from blake3 import blake3

        from kezchat.p2p.crypt import PieceCheck, encrypt_piece
        from kezchat.p2p.transfer import _Sink

        directory = self.mktemp()
        os.makedirs(directory)
        out = os.path.join(directory, "out.bin")
        key = os.urandom(32)
        cipher = encrypt_piece(key, 0, True, b"downloaded")
        sink = _Sink(out, PieceCheck(key, len(b"downloaded"), blake3(cipher).hexdigest()))
        sink.write(cipher, [len(cipher)])
        Path(out).write_bytes(b"someone else's")
        with self.assertRaises(FileExistsError):
            sink.commit(out)
        self.assertEqual(Path(out).read_bytes(), b"someone else's")
        self.assertEqual(os.listdir(directory), ["out.bin"])
