"""
Federation between two real C{twistd kezchat} processes of different
domains on loopback, wired to each other with C{--resolve} (and the
environment variables an operator would use): lookups both ways with a
proof the client verifies, and C{KEZ_CHAT_FEDERATION=off} honoured.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.trial.unittest import TestCase

from kezchat.client.keydir import KeyDirectory
from kezchat.federation.remote import _Answers, _NoHeads
from tests.chatprocess import ChatProcess, domain_process, until_ready
from tests.relaysupport import inbox, send
from tests.support import deferred_sleep, http_client, json_of, register


class TwoDomainsTests(TestCase):
    timeout = 120

    async def setUp(self) -> None:
        self.client = http_client(self)

    async def start(self, domain: str, *args: str) -> ChatProcess:
        return domain_process(self, domain, *args)

    def launch(self, process: ChatProcess, env: dict[str, str] | None = None) -> None:
        if env:
            saved = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            try:
                process.start()
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
        else:
            process.start()
        self.addCleanup(process.stop)

    async def until_ready(self, process: ChatProcess) -> None:
        await until_ready(self.client, process, tries=400)

    async def lookup(self, process: ChatProcess, handle: str) -> tuple[int, Any]:
        response = await self.client.get(f"{process.url}/v1/u/{handle}")
        return response.code, await json_of(response)

    async def test_lookups_both_ways(self) -> None:
        a = await self.start("a.example")
        b = await self.start("b.example")
        a.args += ["--resolve", f"b.example={b.url}"]
        self.launch(a)
        self.launch(b, env={"KEZ_CHAT_RESOLVE": f"a.example={a.url}"})
        await gatherResults([ensureDeferred(self.until_ready(p)) for p in (a, b)])
        _, alice = await register(self.client, a.url, "alice", server="a.example")
        _, bob = await register(self.client, b.url, "bob", server="b.example")
        for home, handle, record, domain in (
            (a, "bob@b.example", bob, "b.example"), (b, "alice@a.example", alice, "a.example")
        ):
            code, answer = await self.lookup(home, handle)
            self.assertEqual(code, 200, answer)
            directory = answer.pop("directory")
            self.assertEqual(answer, record)
            await KeyDirectory(
                domain, _Answers(directory["head"], directory["inclusion"]), _NoHeads()
            ).vouch(answer)

    async def test_federation_off_from_the_environment(self) -> None:
        b = await self.start("b.example")
        a = await self.start("a.example", "--resolve", f"b.example={b.url}")
        self.launch(b)
        self.launch(a, env={"KEZ_CHAT_FEDERATION": "off"})
        await gatherResults([ensureDeferred(self.until_ready(p)) for p in (a, b)])
        await register(self.client, b.url, "bob", server="b.example")
        code, answer = await self.lookup(a, "bob@b.example")
        self.assertEqual((code, answer["error"]["code"]), (400, "federation_disabled"))

    async def test_chat_both_ways_across_an_outage(self) -> None:
        """
        alice@a.example and bob@b.example write to each other; b.example
        is killed (as a crash) while alice keeps writing, and comes back:
        every message arrives once, in order, both ways.
        """
        a = await self.start("a.example")
        b = await self.start("b.example")
        a.args += ["--resolve", f"b.example={b.url}"]
        b.args += ["--resolve", f"a.example={a.url}"]
        self.launch(a)
        self.launch(b)
        await gatherResults([ensureDeferred(self.until_ready(p)) for p in (a, b)])
        alice, _ = await register(self.client, a.url, "alice", server="a.example")
        bob, _ = await register(self.client, b.url, "bob", server="b.example")

        async def say(key: Any, sender: str, home: ChatProcess, to: str, n: int) -> None:
            code, answer = await send(self.client, home.url, key, sender, to,
                                      {"from": key.primary, "n": n})
            self.assertEqual(code, 202, answer)

        async def received(home: ChatProcess, key: Any, handle: str, count: int) -> list[int]:
            for _ in range(600):
                _, page = await inbox(self.client, home.url, key, handle)
                if len(page["messages"]) >= count:
                    await deferred_sleep(0.5)
                    _, page = await inbox(self.client, home.url, key, handle)
                    break
                await deferred_sleep(0.1)
            return [m["envelope"]["n"] for m in page["messages"]]

        await say(alice, "alice@a.example", a, "bob@b.example", 0)
        await say(bob, "bob@b.example", b, "alice@a.example", 0)
        self.assertEqual(await received(b, bob, "bob", 1), [0])
        await b.kill()
        for n in range(1, 6):
            await say(alice, "alice@a.example", a, "bob@b.example", n)
        await deferred_sleep(2.0)
        again = ChatProcess([], b.workdir)
        again.port, again.url, again.args = b.port, b.url, b.args
        self.launch(again)
        await self.until_ready(again)
        await say(bob, "bob@b.example", again, "alice@a.example", 1)
        self.assertEqual(await received(again, bob, "bob", 6), list(range(6)))
        self.assertEqual(await received(a, alice, "alice", 2), [0, 1])
