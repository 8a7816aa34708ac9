"""
Crash safety: a real C{twistd -r asyncio -n kezchat} process is killed with
SIGKILL in the middle of a send storm, then started again on the same
database. Every message that got its 201 is there exactly once, and no
message is there twice (a 201 is only sent after the commit).
"""

from __future__ import annotations

import os

from twisted.internet.defer import Deferred, gatherResults
from twisted.trial.unittest import TestCase

from tests.crashsupport import free_port, spawn_twistd, until_up
from tests.relaysupport import inbox, message_request
from tests.support import deferred_sleep, http_client, json_of, register, temp_dir

#: concurrent senders in the storm, and how long it runs before the kill
SENDERS = 24
STORM_SECONDS = 1.5


class CrashTests(TestCase):
    timeout = 60

    async def test_kill_during_a_send_storm_loses_and_doubles_nothing(self) -> None:
        self.client = http_client(self)
        db = os.path.join(temp_dir(self), "chat.db")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        args = ["--db", db, "--listen", f"tcp:{port}:interface=127.0.0.1"]
        process, proto = spawn_twistd(self, args, os.path.dirname(db))
        await until_up(self, self.client, url, proto)
        alice, _ = await register(self.client, url, "alice")
        bob, _ = await register(self.client, url, "bob")

        acknowledged: list[int] = []
        attempted: list[int] = []
        counter = iter(range(1, 10**9))
        killed = []

        async def sender() -> None:
            # until the process dies under a request
            while not killed:
                n = next(counter)
                raw, headers = message_request(alice, "alice", "bob", {"n": n})
                attempted.append(n)
                try:
                    response = await self.client.post(
                        f"{url}/v1/messages", data=raw, headers=headers
                    )
                    body = await json_of(response)
                except Exception:
                    return  # the server died under this request
                if response.code == 201:
                    acknowledged.append(n)
                else:
                    raise AssertionError(f"{response.code} {body}")

        storm = gatherResults(
            [Deferred.fromCoroutine(sender()) for _ in range(SENDERS)], consumeErrors=True
        )
        await deferred_sleep(STORM_SECONDS)
        process.signalProcess("KILL")
        killed.append(True)
        await storm
        await proto.ended
        self.assertGreater(len(acknowledged), 0)

        process, proto = spawn_twistd(self, args, os.path.dirname(db))
        await until_up(self, self.client, url, proto)
        stored: list[dict] = []
        since = 0
        while True:
            code, page = await inbox(self.client, url, bob, "bob", since=since)
            self.assertEqual(code, 200, page)
            stored.extend(page["messages"])
            if not page["messages"]:
                break
            since = page["next"]
        ns = [m["envelope"]["n"] for m in stored]
        seqs = [m["seq"] for m in stored]
        self.assertEqual(seqs, sorted(set(seqs)))
        self.assertEqual(len(ns), len(set(ns)), "a message was stored twice")
        missing = set(acknowledged) - set(ns)
        self.assertEqual(missing, set(), "acknowledged messages were lost")
        self.assertLessEqual(set(ns), set(attempted))
        # what the test measured, for whoever reads the log
        print(f"\n{len(acknowledged)} acknowledged, {len(ns)} stored, "
              f"{len(attempted)} attempted before the kill")
