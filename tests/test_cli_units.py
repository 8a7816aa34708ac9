"""
The CLI's local pieces on their own: the received-messages store and its
cursor, pinned contacts, JSON-lines output and the command-line parser.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from kezchat.cli.context import Context
from kezchat.cli.errors import CliError
from kezchat.cli.home import Home, write_json
from kezchat.cli.main import build_parser
from kezchat.cli.messages import Reader, output_json
from kezchat.cli.output import Output
from kezchat.cli.pins import ContactBook, KeyChanged
from kezchat.cli.received import NATS, SSE, ReceivedStore
from kezchat.e2e import seal_envelope, text_message
from kezchat.identity.keys import KeyPair
from kezchat.testing.requirements import missing


def item(seq: int, sig: str | None = None) -> dict:
    return {
        "seq": seq,
        "from": "alice@kez.lat",
        "from_primary": "ed25519:" + "a" * 64,
        "envelope": {"sig": sig or f"{seq:0128x}"},
        "created_at": "2026-01-01T00:00:00Z",
    }


class ReceivedStoreTests(SynchronousTestCase):
    def store(self) -> ReceivedStore:
        return ReceivedStore(Home(Path(self.mktemp())))

    def test_save_moves_the_cursor_per_transport(self) -> None:
        store = self.store()
        self.assertEqual((store.cursor(SSE), store.cursor(NATS)), (0, 0))
        store.save(item(1))
        store.save(item(2))
        store.save(item(7, sig="x" * 128), NATS)
        self.assertEqual((store.cursor(SSE), store.cursor(NATS)), (2, 7))
        self.assertEqual([i["seq"] for i in store.items()], [1, 2, 7])
        self.assertEqual([i["via"] for i in store.items()], ["sse", "sse", "nats"])

    def test_cursor_never_goes_back(self) -> None:
        store = self.store()
        store.save(item(5))
        store.save(item(3))
        self.assertEqual(store.cursor(), 5)

    def test_duplicates_and_a_torn_last_line(self) -> None:
        """
        A crash may leave a message stored twice (between the append and
        the cursor) or a half-written last line: readers see each message
        once and skip the torn line.
        """
        store = self.store()
        store.save(item(1))
        store.save(item(1))
        store.save(item(2))
        with open(store.home.messages_path, "ab") as f:
            f.write(b'{"seq": 3, "envel')
        self.assertEqual([i["seq"] for i in store.items()], [1, 2])
        self.assertEqual(len(store.seen()), 2)

    @settings(max_examples=30, deadline=None)
    @given(st.lists(st.integers(min_value=1, max_value=50), max_size=20))
    def test_cursor_is_the_highest_saved_seq(self, seqs: list[int]) -> None:
        store = self.store()
        for seq in seqs:
            store.save(item(seq))
        self.assertEqual(store.cursor(), max(seqs, default=0))
        self.assertEqual(sorted({i["seq"] for i in store.items()}), sorted(set(seqs)))

    def test_damaged_cursor_file_is_a_clear_error(self) -> None:
        store = self.store()
        store.home.ensure()
        store.home.cursor_path.write_text("{not json")
        error = self.assertRaises(CliError, store.cursor)
        self.assertIn("damaged", str(error))


class ContactBookTests(SynchronousTestCase):
    def test_pin_update_and_key_change(self) -> None:
        book = ContactBook(Home(Path(self.mktemp())))
        a, b = KeyPair.generate(), KeyPair.generate()
        first = {"handle": "bob", "fqhn": "bob@kez.lat", "primary": a.primary, "pinned_at": "t1"}
        book.pin(first)
        again = book.pin({**first, "pinned_at": "t2", "claims": ["github:bob"]})
        self.assertEqual((again["pinned_at"], again["claims"]), ("t1", ["github:bob"]))
        self.assertEqual(book.by_primary(a.primary)["fqhn"], "bob@kez.lat")
        error = self.assertRaises(KeyChanged, book.pin, {**first, "primary": b.primary})
        self.assertIn("key changed for bob@kez.lat", str(error))
        self.assertEqual(book.get("BOB@kez.lat")["primary"], a.primary)
        book.pin({**first, "primary": b.primary}, replace=True)
        self.assertEqual(book.get("bob@kez.lat")["primary"], b.primary)

    def test_damaged_file(self) -> None:
        home = Home(Path(self.mktemp()))
        home.ensure()
        write_json(home.contacts_path, {"contacts": []})
        self.assertRaises(CliError, ContactBook(home).all)


class OutputTests(SynchronousTestCase):
    def test_json_lines_only_on_stdout(self) -> None:
        out, err = io.StringIO(), io.StringIO()
        output = Output(True, out, err)
        output.emit({"text": "two\nlines ✓"}, "human")
        output.say("for people only")
        output.warn("careful")
        self.assertEqual(
            [json.loads(line) for line in out.getvalue().splitlines()], [{"text": "two\nlines ✓"}]
        )
        self.assertEqual(err.getvalue(), "kez-chat: warning: careful\n")

    def test_human(self) -> None:
        out = io.StringIO()
        Output(False, out, io.StringIO()).emit({"x": 1}, "one line")
        self.assertEqual(out.getvalue(), "one line\n")


class ParserTests(SynchronousTestCase):
    def test_json_before_or_after_the_command(self) -> None:
        parser = build_parser()
        self.assertTrue(parser.parse_args(["--json", "whoami"]).json)
        self.assertTrue(parser.parse_args(["whoami", "--json"]).json)
        self.assertFalse(parser.parse_args(["whoami"]).json)

    def test_every_command_has_help_and_a_handler(self) -> None:
        parser = build_parser()
        commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
        for name in ("register", "recover", "whoami", "add", "contacts", "send", "listen"):
            self.assertIn(name, commands)
            self.assertTrue(commands[name].description, name)
            self.assertTrue(callable(commands[name].get_default("handler")), name)


class ReaderTests(SynchronousTestCase):
    """
    What C{listen} makes of whatever the relay hands it: a genuine
    envelope verifies; anything else is shown unverified, never raises.
    """

    def setUp(self) -> None:
        self.me, self.alice = KeyPair.generate(), KeyPair.generate()
        home = Home(Path(self.mktemp()))
        ctx = Context(None, Namespace(), Output(True, io.StringIO(), io.StringIO()), home)
        account = {"fqhn": "me@kez.lat", "primary": self.me.primary}
        self.reader = Reader(ctx, self.me, account)
        self.ctx = ctx

    def read(self, item: dict) -> object:
        return self.successResultOf(Deferred.fromCoroutine(self.reader.read(item)))

    def test_genuine_then_changed_key(self) -> None:
        self.ctx.contacts.pin(
            {
                "handle": "alice",
                "fqhn": "alice@kez.lat",
                "primary": self.alice.primary,
                "pinned_at": "t",
            }
        )
        envelope = seal_envelope(self.alice, self.me.primary, text_message("hi"))
        good = self.read(
            {
                "seq": 1,
                "from": "alice@kez.lat",
                "from_primary": self.alice.primary,
                "envelope": envelope,
            }
        )
        self.assertEqual((good.verified, good.plaintext), (True, {"type": "text", "text": "hi"}))
        mallory = KeyPair.generate()
        forged = seal_envelope(mallory, self.me.primary, text_message("it is me, alice"))
        bad = self.read(
            {"seq": 2, "from": "alice@kez.lat", "from_primary": mallory.primary, "envelope": forged}
        )
        self.assertFalse(bad.verified)
        self.assertIn("key changed", bad.warning)

    @settings(max_examples=200, deadline=None)
    @given(
        st.dictionaries(
            st.sampled_from(["seq", "from", "from_primary", "envelope", "created_at", "x"]),
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                lambda children: (
                    st.lists(children, max_size=3)
                    | st.dictionaries(
                        st.sampled_from(["v", "from", "to", "ts", "salt", "ct", "sig", "y"]),
                        children,
                        max_size=7,
                    )
                ),
                max_leaves=10,
            ),
        )
    )
    def test_garbage_is_unverified_and_never_raises(self, item: dict) -> None:
        message = self.read(item)
        self.assertFalse(message.verified)
        self.assertTrue(message.warning)
        line = output_json(message)
        self.assertIs(line["verified"], False)
        json.dumps(line)


class ConsoleScriptTests(SynchronousTestCase):
    def test_kez_chat_console_script(self) -> None:
        """
        The installed C{kez-chat} script (when this venv has it) runs.
        """
        script = Path(sys.executable).parent / "kez-chat"
        if not script.exists():
            raise missing("kez-chat is not installed in this environment (pip install .)")
        result = subprocess.run(
            [str(script), "--help"], capture_output=True, text=True, timeout=60, check=False
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        for command in ("register", "recover", "whoami", "add", "contacts", "send", "listen"):
            self.assertIn(command, result.stdout)


class TerminalSafetyTests(SynchronousTestCase):
    """
    L{visible} and L{json_line}: what network text may do to a terminal.
    """

    @settings(max_examples=300, deadline=None)
    @given(st.text())
    def test_visible_leaves_nothing_a_terminal_acts_on(self, text: str) -> None:
        import unicodedata

        from kezchat.cli.output import visible

        shown = visible(text)
        self.assertFalse(
            [c for c in shown if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Cs")
             and c != "\u200d"],
            repr(shown),
        )
        if text.isascii() and text.isprintable():
            self.assertEqual(shown, text)

    def test_visible_examples(self) -> None:
        from kezchat.cli.output import visible

        self.assertEqual(visible("a\x1b[2Jb\r\nc"), "a\\e[2Jb\\r\\nc")
        self.assertEqual(visible("invoice\u202efdp.exe"), "invoice\\u202efdp.exe")
        self.assertEqual(visible("héllo 😀"), "héllo 😀")
        self.assertEqual(visible("\x9b\u200b\U000e0041"), "\\x9b\\u200b\\U000e0041")

    @settings(max_examples=300, deadline=None)
    @given(st.dictionaries(st.text(), st.text() | st.integers() | st.none()))
    def test_json_lines_are_the_same_value_and_safe(self, obj: dict) -> None:
        from kezchat.cli.output import _JSON_UNSAFE, json_line

        line = json_line(obj)
        self.assertEqual(json.loads(line), obj)
        self.assertNotIn("\n", line)
        self.assertIsNone(_JSON_UNSAFE.search(line))

    def test_human_output_keeps_only_its_own_line_breaks(self) -> None:
        out, err = io.StringIO(), io.StringIO()
        output = Output(False, out, err)
        output.emit({}, "Pinned x\n  key \x1b[31m")
        output.warn("bad\nline\x1b]0;title\x07")
        self.assertEqual(out.getvalue(), "Pinned x\n  key \\e[31m\n")
        self.assertEqual(err.getvalue(), "kez-chat: warning: bad\\nline\\e]0;title\\x07\n")


class TrustPieceTests(SynchronousTestCase):
    def test_canonical_handle(self) -> None:
        from kezchat.cli.messages import canonical_handle

        self.assertEqual(canonical_handle("alice@kez.lat"), "alice@kez.lat")
        for bad in (
            "alice", "Alice@kez.lat", "alice@kez.lat ", " alice@kez.lat", "alice@kez.lat\u200b",
            "alice@kez.lat\n", "\x1b[2Jalice@kez.lat", "alice@@kez.lat", None, 7, "",
            "al\u0130ce@kez.lat",
        ):
            self.assertIsNone(canonical_handle(bad), repr(bad))

    def test_clamped_ts(self) -> None:
        from kezchat.cli.messages import clamped_ts

        stored = "2026-01-01T00:00:10Z"
        self.assertEqual(clamped_ts("2026-01-01T00:00:05Z", stored), "2026-01-01T00:00:05Z")
        self.assertEqual(clamped_ts("9999-12-31T23:59:59Z", stored), stored)
        self.assertEqual(clamped_ts("not a time", stored), stored)
        self.assertEqual(clamped_ts("2026-01-01T00:00:05Z", None), "2026-01-01T00:00:05Z")

    @settings(max_examples=300, deadline=None)
    @given(st.text(min_size=1))
    def test_safe_file_names(self, name: str) -> None:
        import unicodedata

        from kezchat.cli.attachments import MAX_NAME_BYTES, safe_file_name

        safe = safe_file_name(name)
        self.assertTrue(safe)
        self.assertLessEqual(len(safe.encode("utf-8")), MAX_NAME_BYTES)
        self.assertFalse(safe.startswith("."))
        self.assertNotIn("/", safe)
        self.assertFalse(
            [c for c in safe if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Cs")]
        )

    def test_file_ids_are_per_sender_and_not_reused(self) -> None:
        from kezchat.cli.attachments import FileSaver, PlaintextError
        from kezchat.e2e import chunked_file

        saver = FileSaver(Path(self.mktemp()))
        alices, mallorys = b"a" * 100_000, b"m" * 100_000
        header, chunks = chunked_file("contract.txt", "text/plain", alices, "id")
        mheader, mchunks = chunked_file("evil.txt", "text/plain", mallorys, "id")
        self.assertIsNone(saver.take("mallory", mchunks[0]))
        self.assertIsNone(saver.take("alice", header))
        self.assertIsNone(saver.take("alice", chunks[0]))
        self.assertEqual(saver.take("alice", chunks[1]), ("contract.txt", alices))
        self.assertIsNone(saver.take("mallory", mheader))
        self.assertEqual(saver.take("mallory", mchunks[1]), ("evil.txt", mallorys))
        other, _ = chunked_file("evil2.txt", "text/plain", b"x" * 100_000, "id")
        with self.assertRaises(PlaintextError):
            saver.take("mallory", other)
