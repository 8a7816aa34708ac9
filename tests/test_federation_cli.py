"""
The CLI across servers: users of real C{twistd kezchat} processes of
different domains on loopback, each CLI told where its own server is only
with C{--resolve} (or C{KEZ_CHAT_RESOLVE}), chatting with handles of the
other domains through their home servers; and a message another server
never takes, shown as not delivered once the queue gives it up.
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.trial.unittest import TestCase

from tests.chatprocess import ChatProcess, domain_process, resolve_each_other, until_ready
from tests.clisupport import Cli, base_env
from tests.support import deferred_sleep, http_client, json_of


class FederatedCli(TestCase):
    timeout = 240

    async def setUp(self) -> None:
        self.client = http_client(self)

    async def servers(self, *domains: str, **extra: list[str]) -> dict[str, ChatProcess]:
        """
        One process per domain, each resolving all the others; C{extra}
        (keyword C{a_example}) adds arguments to one of them.
        """
        processes = {domain: domain_process(self, domain) for domain in domains}
        resolve_each_other(processes)
        for domain, process in processes.items():
            process.args += extra.get(domain.replace(".", "_"), [])
            process.start()
            self.addCleanup(process.stop)
        await gatherResults([ensureDeferred(until_ready(self.client, p))
                             for p in processes.values()])
        return processes

    async def user(self, fqhn: str, home: ChatProcess, how: str = "flag") -> Cli:
        """
        A CLI registered as C{fqhn}, finding its server with C{--resolve}
        (C{how="flag"}) or C{KEZ_CHAT_RESOLVE} (C{"env"}) alone.
        """
        domain = fqhn.partition("@")[2]
        env = base_env("")
        del env["KEZ_CHAT_SERVER_URL"]
        resolve = f"{domain}={home.url}"
        cli = Cli(os.path.abspath(self.mktemp()), env)
        if how == "env":
            cli.env["KEZ_CHAT_RESOLVE"] = f"other.example=https://127.0.0.1:1 {resolve}"
            prefix: tuple[str, ...] = ()
        else:
            prefix = ("--resolve", resolve)
        original = cli.run

        def run(*args: str, **kwargs: Any) -> Any:
            return original(*prefix, *args, **kwargs)

        cli.run = run  # type: ignore[method-assign]
        await cli.ok("register", fqhn, "--yes", "--json")
        self.assertEqual(cli.account["fqhn"], fqhn)
        return cli

    async def said(self, cli: Cli, count: int) -> list[tuple[str, str, bool]]:
        result = await cli.ok("listen", "--json", "--count", str(count), "--timeout", "60")
        return sorted((m["from"], m["text"], m["verified"]) for m in result.received)

    async def test_chat_both_ways(self) -> None:
        """
        alice@a.example and bob@b.example: each send is queued by the home
        server (printed as queued, exit 0), each listen shows the other's
        message verified and labelled with the full remote handle; each
        CLI keeps the other domain's log head (its log key) after checking
        the proof the home server attached.
        """
        servers = await self.servers("a.example", "b.example")
        alice = await self.user("alice@a.example", servers["a.example"])
        bob = await self.user("bob@b.example", servers["b.example"], how="env")
        sent = await alice.ok("send", "bob@b.example", "hello bob, from a", "--json")
        self.assertEqual(sent.json, {"to": "bob@b.example", "queued": True})
        human = await alice.ok("send", "bob@b.example", "second")
        self.assertIn("Queued for bob@b.example", human.out)
        self.assertEqual(
            await self.said(bob, 2),
            [("alice@a.example", "hello bob, from a", True), ("alice@a.example", "second", True)],
        )
        await bob.ok("send", "alice@a.example", "hi alice, from b")
        self.assertEqual(await self.said(alice, 1), [("bob@b.example", "hi alice, from b", True)])
        for cli, domain in ((alice, "b.example"), (bob, "a.example")):
            with open(os.path.join(cli.home, "keydir.json")) as f:
                kept = json.load(f)
            head = await json_of(
                await self.client.get(f"{servers[domain].url}/v1/log/head")
            )
            self.assertEqual(kept[domain]["key"], head["key"])
        contacts = (await alice.ok("contacts", "--json")).lines
        self.assertEqual([c["fqhn"] for c in contacts], ["bob@b.example"])

    async def test_three_servers(self) -> None:
        """
        alice@a.example, bob@b.example and carol@c.example each write to
        the two others: everyone gets both messages, verified.
        """
        servers = await self.servers("a.example", "b.example", "c.example")
        names = {"alice": "a.example", "bob": "b.example", "carol": "c.example"}
        users = {}
        for name, domain in names.items():
            users[name] = await self.user(f"{name}@{domain}", servers[domain])
        for name, cli in users.items():
            for other, domain in names.items():
                if other != name:
                    await cli.ok("send", f"{other}@{domain}", f"{name} to {other}")
        for name, cli in users.items():
            expected = sorted(
                (f"{other}@{domain}", f"{other} to {name}", True)
                for other, domain in names.items() if other != name
            )
            self.assertEqual(await self.said(cli, 2), expected)

    async def test_undeliverable(self) -> None:
        """
        c.example's server is gone for good: alice's message to carol is
        queued, and once a.example gives it up (a retention period of a
        few seconds here) her listen shows it as not delivered, once.
        """
        servers = await self.servers(
            "a.example", "c.example", a_example=["--retention-days", str(4 / 86400)]
        )
        alice = await self.user("alice@a.example", servers["a.example"])
        await self.user("carol@c.example", servers["c.example"])
        await alice.ok("add", "carol@c.example")
        await servers["c.example"].stop()
        sent = await alice.ok("send", "carol@c.example", "are you there?", "--json")
        self.assertEqual(sent.json, {"to": "carol@c.example", "queued": True})
        shown = ""
        for _ in range(40):
            shown += (await alice.ok("listen", "--timeout", "1")).out
            if "NOT DELIVERED" in shown:
                break
            await deferred_sleep(0.5)
        lines = [line for line in shown.splitlines() if "are you there?" in line]
        self.assertEqual(len(lines), 2, shown)
        self.assertIn("you → carol@c.example", lines[0])
        self.assertNotIn("NOT DELIVERED", lines[0])
        self.assertIn("NOT DELIVERED: c.example never took this message", lines[1])
        # the items kept in the home: the copy, then the server's notice
        with open(os.path.join(alice.home, "messages.jsonl")) as f:
            items = [json.loads(line) for line in f]
        self.assertEqual(
            [(i["direction"], i["to"], i.get("undeliverable", False)) for i in items],
            [("out", "carol@c.example", False), ("out", "carol@c.example", True)],
        )


class ResolveFlagTests(TestCase):
    timeout = 60

    async def test_a_bad_value_is_one_clear_line(self) -> None:
        from tests.clisupport import assert_one_line_error

        env = base_env("")
        del env["KEZ_CHAT_SERVER_URL"]
        cli = Cli(os.path.abspath(self.mktemp()), env)
        for args, env_value in (
            (("--resolve", "a.example", "whoami"), None),
            (("--resolve", "a.example=ftp://127.0.0.1:1", "whoami"), None),
            (("whoami",), "a.example=nowhere"),
        ):
            result = await cli.run(
                *args, env={"KEZ_CHAT_RESOLVE": env_value} if env_value else None
            )
            assert_one_line_error(self, result, 1, "--resolve")
