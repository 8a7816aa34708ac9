"""
A hypothesis state machine over the relay: send, open a stream, drop a
stream, resume, acknowledge — in any order — against the real server over
real HTTP and SSE connections.

The invariant: every open stream has seen exactly the messages of its own
handle that it should have (those stored after it went live, and, for a
resumed stream, those still stored after its Last-Event-ID), each once, in
seq order.

Hypothesis drives the machine from a worker thread; each step runs on the
reactor with C{blockingCallFromThread} and waits for its result, so the
reactor keeps serving the connections while hypothesis thinks.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
)
from twisted.internet import defer, reactor, threads
from twisted.internet.defer import ensureDeferred
from twisted.internet.threads import blockingCallFromThread
from twisted.trial.unittest import TestCase

from kezchat.identity.keys import KeyPair
from tests.backends import on_postgresql
from tests.relaysupport import SSEStream, inbox, open_stream, send
from tests.support import http_client, register, start_server

_names = itertools.count()
_envelopes = itertools.count()


def on_reactor(coroutine_function: Any, *args: Any) -> Any:
    return blockingCallFromThread(reactor, lambda: ensureDeferred(coroutine_function(*args)))


class OpenStream:
    def __init__(self, handle: str, stream: SSEStream, expected: list[int]) -> None:
        self.handle = handle
        self.stream = stream
        self.expected = expected


class RelayMachine(RuleBasedStateMachine):
    #: set by the test before running: the TestCase, server URL and client
    case: TestCase
    url: str
    client: Any

    streams = Bundle("streams")
    dropped = Bundle("dropped")

    def __init__(self) -> None:
        super().__init__()
        self.keys: dict[str, KeyPair] = {}
        suffix = next(_names)
        for letter in "abc":
            handle = f"{letter}{suffix:04d}x"
            key, _ = on_reactor(register, self.client, self.url, handle)
            self.keys[handle] = key
        self.handles = sorted(self.keys)
        #: seqs stored and not yet acknowledged, per handle
        self.stored: dict[str, list[int]] = {h: [] for h in self.handles}
        #: the last seq given out per inbox (seqs are consecutive)
        self.last: dict[str, int] = {h: 0 for h in self.handles}
        self.open: list[OpenStream] = []

    # -- rules --------------------------------------------------------------

    @rule(sender=st.integers(0, 2), recipient=st.integers(0, 2))
    def send(self, sender: int, recipient: int) -> None:
        frm, to = self.handles[sender], self.handles[recipient]
        # a distinct envelope each time: the same signed request twice in
        # one second is a replay, answered 200 and not stored again
        envelope = {"x": next(_envelopes)}
        code, body = on_reactor(send, self.client, self.url, self.keys[frm], frm, to, envelope)
        assert code == 201, (code, body)
        self.last[to] += 1
        assert body["seq"] == self.last[to], (body, self.last)
        # the sender's copy lands in the sender's own inbox next, unless
        # the message was to the sender itself (then it is there once)
        owners = [to] if frm == to else [to, frm]
        if frm != to:
            self.last[frm] += 1
        for owner in owners:
            self.stored[owner].append(self.last[owner])
            for s in self.open:
                if s.handle == owner:
                    s.expected.append(self.last[owner])

    @rule(target=streams, who=st.integers(0, 2))
    def open_live(self, who: int) -> OpenStream:
        handle = self.handles[who]
        stream = on_reactor(open_stream, self.case, self.url, self.keys[handle], handle)
        opened = OpenStream(handle, stream, [])
        self.open.append(opened)
        return opened

    @rule(target=dropped, opened=consumes(streams))
    def drop(self, opened: OpenStream) -> OpenStream:
        self._settle(opened)
        blockingCallFromThread(reactor, opened.stream.close)
        self.open.remove(opened)
        return opened

    @rule(target=streams, gone=consumes(dropped), rewind=st.integers(0, 3))
    def resume(self, gone: OpenStream, rewind: int) -> OpenStream:
        seen = gone.stream.seqs
        last = max(0, (seen[-1] if seen else 0) - rewind)
        handle = gone.handle
        stream = on_reactor(
            open_stream, self.case, self.url, self.keys[handle], handle, last
        )
        expected = [seq for seq in self.stored[handle] if seq > last]
        opened = OpenStream(handle, stream, expected)
        self.open.append(opened)
        return opened

    @rule(who=st.integers(0, 2), keep=st.integers(0, 3))
    def acknowledge(self, who: int, keep: int) -> None:
        from kezchat.protocol.auth import sign_request
        from tests.relaysupport import now

        handle = self.handles[who]
        stored = self.stored[handle]
        if len(stored) <= keep:
            return
        upto = stored[-keep - 1]

        async def delete() -> int:
            auth = sign_request(self.keys[handle], "DELETE", f"/v1/inbox/{handle}",
                                [f"upto={upto}"], now())
            response = await self.client.delete(
                f"{self.url}/v1/inbox/{handle}", params={"upto": str(upto)},
                headers={"X-KEZ-Auth": auth},
            )
            await response.content()
            return response.code

        assert on_reactor(delete) == 200
        self.stored[handle] = [seq for seq in stored if seq > upto]

    # -- the invariant --------------------------------------------------------

    def _settle(self, opened: OpenStream) -> None:
        """
        Wait until the stream has as many events as expected; if they never
        come, the comparison that follows says what is missing.
        """
        try:
            blockingCallFromThread(
                reactor, lambda: opened.stream.wait_for(len(opened.expected), timeout=3)
            )
        except defer.TimeoutError:
            pass

    @invariant()
    def every_stream_saw_exactly_its_messages(self) -> None:
        for opened in self.open:
            self._settle(opened)
            assert opened.stream.seqs == opened.expected, (
                opened.handle, opened.stream.seqs, opened.expected
            )

    @invariant()
    def stored_messages_are_what_the_model_says(self) -> None:
        for handle in self.handles:
            code, page = on_reactor(inbox, self.client, self.url, self.keys[handle], handle)
            assert code == 200
            assert [m["seq"] for m in page["messages"]] == self.stored[handle]

    def teardown(self) -> None:
        for opened in self.open:
            blockingCallFromThread(reactor, opened.stream.close)


class RelayStateMachineTests(TestCase):
    timeout = 300

    async def test_streams_see_every_message_once_in_order(self) -> None:
        server = await start_server(self)
        RelayMachine.case = self
        RelayMachine.url = server.url
        RelayMachine.client = http_client(self)
        run = RelayMachine.TestCase(methodName="runTest")
        run.settings = settings(
            max_examples=25,
            stateful_step_count=15,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        await threads.deferToThread(run.runTest)


# the same state machine on PostgreSQL
on_postgresql(globals(), RelayStateMachineTests)
