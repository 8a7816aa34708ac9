"""
The CLI with several devices on one account, against the real servers:
its own sent messages come back (from the server's sender's copy) in the
right conversation; delivered receipts go out batched and come back as
lines of their own that pin nobody; C{recover} in a fresh home restores
the whole retained history, both directions, in order, with progress; and
two homes of one key on native NATS each read their own device consumer
and both get every message.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.trial.unittest import SynchronousTestCase

from kezchat.e2e import PlaintextError, parse_plaintext, receipt, seal_envelope
from kezchat.e2e.plaintext import MAX_RECEIPT_SIGS
from kezchat.identity.keys import KeyPair
from kezchat.identity.mnemonic import mnemonic_to_seed
from kezchat.protocol.subjects import check_device
from tests.clisupport import Cli, CliTestCase
from tests.natssupport import start_nats_server
from tests.relaysupport import send
from tests.support import http_client, register


def saved_items(cli: Cli) -> list[dict[str, Any]]:
    path = Path(cli.home) / "messages.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def key_of(cli: Cli) -> KeyPair:
    return KeyPair(mnemonic_to_seed(cli.mnemonic))


class SentCopyAndReceiptTests(CliTestCase):
    async def test_sent_copies_and_delivered_receipts(self) -> None:
        """
        Bob's listen stores alice's two messages and sends her one
        delivered receipt naming both; alice's listen shows her own sent
        messages (to bob, verified) and then that receipt.
        """
        await self.start_servers()
        alice, bob = await self.registered("alice", "bob")
        await alice.ok("send", "bob", "one")
        await alice.ok("send", "bob", "two")
        got = (await bob.ok("listen", "--json", "--count", "2", "--timeout", "20")).lines
        self.assertEqual(
            [(m["direction"], m["to"], m["from"], m["text"]) for m in got],
            [("in", "bob@kez.lat", "alice@kez.lat", t) for t in ("one", "two")],
        )
        sigs = [item["envelope"]["sig"] for item in saved_items(bob)]
        # bob's listen sent the receipt before it ended
        seen = (await alice.ok("listen", "--json", "--timeout", "2")).lines
        self.assertEqual(
            [(m["direction"], m["type"]) for m in seen],
            [("out", "text"), ("out", "text"), ("in", "receipt")],
        )
        sent, receipt_line = seen[:2], seen[2]
        self.assertEqual(
            [(m["to"], m["text"], m["verified"]) for m in sent],
            [("bob@kez.lat", t, True) for t in ("one", "two")],
        )
        self.assertEqual(
            {k: receipt_line[k] for k in ("status", "sigs", "from", "to", "verified")},
            {
                "status": "delivered",
                "sigs": sigs,
                "from": "bob@kez.lat",
                "to": "alice@kez.lat",
                "verified": True,
            },
        )
        # nothing new for alice, and no receipt for a receipt
        self.assertEqual((await alice.ok("listen", "--json", "--timeout", "1")).out, "")
        # bob sees his own receipt, as a sent one, on a line of its own
        [own] = (await bob.ok("listen", "--json", "--timeout", "1.5")).lines
        self.assertEqual(
            (own["direction"], own["type"], own["to"], own["sigs"]),
            ("out", "receipt", "alice@kez.lat", sigs),
        )

    async def test_human_lines_say_who_sent_what(self) -> None:
        await self.start_servers()
        alice, bob = await self.registered("alice", "bob")
        await alice.ok("send", "bob", "hello there")
        await bob.ok("listen", "--count", "1", "--timeout", "20", "--no-receipts")
        out = (await alice.ok("listen", "--timeout", "1.5")).out
        self.assertIn("you → bob@kez.lat: hello there", out)

    async def test_no_receipts_and_strangers_receipts(self) -> None:
        """
        With --no-receipts nothing goes back to the sender. A receipt from
        a stranger is shown unverified and pins nobody.
        """
        await self.start_servers()
        alice, bob = await self.registered("alice", "bob")
        await alice.ok("send", "bob", "quiet")
        await bob.ok("listen", "--json", "--count", "1", "--timeout", "20", "--no-receipts")
        # a stranger sends alice a receipt (straight over HTTP)
        client = http_client(self)
        mallory, _ = await register(client, self.chat.url, "mallory")
        alice_primary = alice.account["primary"]
        envelope = seal_envelope(mallory, alice_primary, receipt("read", ["ab" * 64]))
        code, _ = await send(client, self.chat.url, mallory, "mallory", "alice", envelope)
        self.assertEqual(code, 201)
        result = await alice.ok("listen", "--json", "--timeout", "2")
        kinds = [(m["direction"], m["type"], m["verified"]) for m in result.lines]
        self.assertEqual(kinds, [("out", "text", True), ("in", "receipt", False)])
        self.assertIn("not pinned", result.lines[1]["warning"])
        contacts = (await alice.ok("contacts", "--json")).lines
        self.assertEqual([c["fqhn"] for c in contacts], ["bob@kez.lat"])
        # and bob, with --no-receipts, sent none: alice's inbox holds her
        # copy and mallory's receipt only
        self.assertEqual(len(saved_items(alice)), 2)


class ReadStateTests(CliTestCase):
    async def test_read_state_reaches_every_home_of_the_key(self) -> None:
        """
        Bob's two homes count alice's two messages unread; reading them on
        one sends alice one read receipt naming both, and the other home
        (once its listen has the server's copy of that receipt) counts
        none unread. With --no-receipts alice is told nothing, and bob's
        other home learns it from a note to bob himself.
        """
        await self.start_servers()
        alice, bob = await self.registered("alice", "bob")
        laptop = self.user("bob-laptop")
        await laptop.ok("recover", "--yes", "--json", stdin=bob.mnemonic.encode())
        await alice.ok("send", "bob", "one")
        await alice.ok("send", "bob", "two")
        for home in (bob, laptop):
            await home.ok("listen", "--json", "--count", "2", "--timeout", "20", "--no-receipts")
            unread = (await home.ok("unread", "--json")).lines
            self.assertEqual(unread, [{"fqhn": "alice@kez.lat", "unread": 2}])
        shown = (await bob.ok("read", "alice", "--json")).lines
        self.assertEqual([m["text"] for m in shown], ["one", "two"])
        self.assertEqual((await bob.ok("unread", "--json")).out, "")
        self.assertEqual((await bob.ok("read", "alice", "--json")).out, "")
        sigs = [item["envelope"]["sig"] for item in saved_items(bob)]
        receipts = [
            m for m in (await alice.ok("listen", "--json", "--timeout", "2")).lines
            if m["type"] == "receipt"
        ]
        self.assertEqual(
            [(m["status"], m["sigs"], m["verified"]) for m in receipts], [("read", sigs, True)]
        )
        # the laptop reads the server's copy of bob's receipt: nothing unread there either
        self.assertEqual((await laptop.ok("unread", "--json")).lines[0]["unread"], 2)
        await laptop.ok("listen", "--json", "--timeout", "2", "--no-receipts")
        self.assertEqual((await laptop.ok("unread", "--json")).out, "")
        # --no-receipts: alice is told nothing
        await alice.ok("send", "bob", "three")
        await laptop.ok("listen", "--json", "--count", "1", "--timeout", "20", "--no-receipts")
        [three] = (await laptop.ok("read", "alice", "--json", "--no-receipts")).lines
        self.assertEqual(three["text"], "three")
        self.assertEqual((await laptop.ok("unread", "--json")).out, "")
        later = (await alice.ok("listen", "--json", "--timeout", "2")).lines
        self.assertEqual([m for m in later if m["type"] == "receipt"], [])
        # bob's other home learns it from the laptop's note to itself
        await bob.ok("listen", "--json", "--count", "1", "--timeout", "20", "--no-receipts")
        self.assertEqual(
            (await bob.ok("unread", "--json")).lines, [{"fqhn": "alice@kez.lat", "unread": 1}]
        )
        self.assertIn("1 unread", (await bob.ok("unread")).out)
        notes = (await bob.ok("listen", "--json", "--timeout", "2", "--no-receipts")).lines
        self.assertEqual(
            [(m["type"], m["status"], m["from"], m["verified"]) for m in notes],
            [("receipt", "read", "bob@kez.lat", True)],
        )
        self.assertEqual((await bob.ok("unread", "--json")).out, "")


class RecoverHistoryTests(CliTestCase):
    async def test_fresh_recover_restores_both_directions(self) -> None:
        await self.start_servers()
        alice, bob = await self.registered("alice", "bob")
        for i in range(3):
            await alice.ok("send", "bob", f"a{i}")
            await bob.ok("send", "alice", f"b{i}")
        # more than one page of history
        client = http_client(self)
        alice_key = key_of(alice)
        bob_key = key_of(bob)
        for i in range(520):
            envelope = seal_envelope(bob_key, alice_key.primary, {"type": "text", "text": f"n{i}"})
            code, _ = await send(client, self.chat.url, bob_key, "bob", "alice", envelope)
            self.assertEqual(code, 201)
        laptop = self.user("alice-laptop")
        result = await laptop.ok("recover", "--yes", stdin=alice.mnemonic.encode())
        self.assertIn("Restoring", result.err)  # tqdm, on stderr
        self.assertIn("Restored 526 messages (523 received, 3 sent, 0 receipts)", result.out)
        items = saved_items(laptop)
        self.assertEqual([m["seq"] for m in items], list(range(1, 527)))
        self.assertEqual(
            [m["direction"] for m in items[:6]], ["out", "in", "out", "in", "out", "in"]
        )
        # a later listen resumes after the history: nothing new
        self.assertEqual((await laptop.ok("listen", "--json", "--timeout", "1.5")).out, "")
        # the history is verified: bob is pinned from it
        contacts = (await laptop.ok("contacts", "--json")).lines
        self.assertEqual([c["fqhn"] for c in contacts], ["bob@kez.lat"])

        phone = self.user("alice-phone")
        quiet = await phone.ok("recover", "--yes", "--json", stdin=alice.mnemonic.encode())
        self.assertEqual(
            quiet.json["history"],
            {"messages": 526, "received": 523, "sent": 3, "receipts": 0, "unverified": 0},
        )
        self.assertNotIn("Restoring", quiet.err)


class NatsDeviceCliTests(CliTestCase):
    timeout = 150

    async def setUp(self) -> None:
        self.nats = await start_nats_server(self)

    async def test_two_homes_of_one_key_both_get_every_message(self) -> None:
        await self.start_servers_on_nats(self.nats)
        self.env["KEZ_CHAT_NATS_URL"] = self.nats.url
        alice, bob = await self.registered("alice", "bob")
        laptop = self.user("bob-laptop")
        await laptop.ok("recover", "--yes", "--json", stdin=bob.mnemonic.encode())
        nats = ("--nats", self.nats.url)
        await alice.ok("send", "bob", "to every device")
        await alice.ok("send", "bob", "again", *nats)
        one, two = await gatherResults(
            [
                ensureDeferred(
                    c.ok("listen", *nats, "--json", "--count", "2", "--timeout", "60")
                )
                for c in (bob, laptop)
            ]
        )
        for result in (one, two):
            received = [m for m in result.lines if m["direction"] == "in"]
            self.assertEqual([m["text"] for m in received], ["to every device", "again"])
        devices = [
            json.loads((Path(c.home) / "device.json").read_text())["device"] for c in (bob, laptop)
        ]
        self.assertNotEqual(devices[0], devices[1])
        for device in devices:
            check_device(device)
        # the device name is stable: a second listen resumes the same
        # consumer, which has nothing left
        again = await bob.ok("listen", *nats, "--json", "--timeout", "2")
        self.assertEqual([m for m in again.lines if m["direction"] == "in"], [])
        self.assertEqual(
            json.loads((Path(bob.home) / "device.json").read_text())["device"], devices[0]
        )
        # alice's native listen shows her sent copies, from the copy subject
        # (a listen of 3 s missed them once on a loaded machine: NATS log-in
        # and the consumer's creation come first)
        sent = await alice.ok("listen", *nats, "--json", "--timeout", "10", "--no-receipts")
        self.assertEqual(
            [(m["text"], m["to"]) for m in sent.lines if m["direction"] == "out"],
            [("to every device", "bob@kez.lat"), ("again", "bob@kez.lat")],
        )
        self.assertTrue(os.path.exists(os.path.join(alice.home, "device.json")))


class ReceiptPlaintextTests(SynchronousTestCase):
    """
    The receipt plaintext: what every client accepts, and refusals of
    anything else as a malformed plaintext (never another error).
    """

    def test_valid(self) -> None:
        sigs = ["ab" * 64, "cd" * 64]
        self.assertEqual(
            receipt("read", sigs), {"type": "receipt", "status": "read", "sigs": sigs}
        )
        self.assertEqual(parse_plaintext(receipt("delivered", sigs[:1]))["status"], "delivered")

    def test_refused(self) -> None:
        good = "ab" * 64
        for bad in (
            {"type": "receipt", "status": "seen", "sigs": [good]},
            {"type": "receipt", "status": "read", "sigs": []},
            {"type": "receipt", "status": "read", "sigs": [good] * (MAX_RECEIPT_SIGS + 1)},
            {"type": "receipt", "status": "read", "sigs": ["AB" * 64]},
            {"type": "receipt", "status": "read", "sigs": [good[:-1]]},
            {"type": "receipt", "status": "read", "sigs": good},
            {"type": "receipt", "status": "read"},
            {"type": "receipt", "sigs": [good]},
            {"type": "receipt", "status": True, "sigs": [good]},
        ):
            with self.assertRaises(PlaintextError, msg=repr(bad)):
                parse_plaintext(bad)

    # generating 130-character texts is slow on a loaded 2-core machine
    @settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        st.dictionaries(
            st.sampled_from(["status", "sigs", "extra"]),
            st.none() | st.booleans() | st.integers() | st.text(max_size=130)
            | st.lists(st.text(max_size=130), max_size=3),
        )
    )
    def test_anything_else_is_a_plaintext_error(self, fields: dict[str, Any]) -> None:
        try:
            parse_plaintext({"type": "receipt", **fields})
        except PlaintextError:
            return
        self.assertIn(fields["status"], ("delivered", "read"))
