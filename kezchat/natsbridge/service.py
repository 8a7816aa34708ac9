"""
The NATS part of the chat-server as a Twisted service.

It owns the chat-server's NATS connection and what runs on it: the
auth-callout responder, the C{KEZ_INBOX} stream, and (when given one) the
bridge to the relay. Started, it connects in the background: a broker that
is down delays NATS, never the HTTP API (SPEC §5, "Outage").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from kezchat.compat.aio import deferred_from_coroutine, require_asyncio_reactor, within
from kezchat.natsbridge.callout import CalloutResponder, CalloutSubscription, Lookup
from kezchat.natsbridge.connection import NatsConnection, OnConnect
from kezchat.natsbridge.errors import NatsSetupError
from kezchat.natsbridge.stream import StreamLimits, ensure_inbox_stream
from kezchat.protocol.natskeys import ACCOUNT, USER, read_seed_file

if TYPE_CHECKING:
    from kezchat.metrics import Metrics
    from kezchat.server.config import ChatConfig


class Bridge(Protocol):
    """
    A part of the bridge that runs on the NATS connection once it is up.
    """

    async def start(self, nc: Any) -> None: ...

    async def stop(self) -> None: ...


class NatsService(Service):
    """
    Runs the callout responder (and the bridge) on one NATS connection.
    """

    log = Logger()
    name = "nats"

    def __init__(
        self,
        connection: NatsConnection,
        callout: CalloutSubscription,
        bridges: Sequence[Bridge] = (),
    ) -> None:
        """
        @param connection: made with what runs on it (L{nats_hooks}): this
            service starts and stops it, and stops C{callout} and
            C{bridges} in order, but changes nothing of it.
        """
        self.connection = connection
        self.callout = callout
        self.bridges = tuple(bridges)
        self._running: Deferred[None] | None = None
        #: seconds each shutdown step may take
        self.stop_timeout = 5.0

    def status(self) -> str:
        """
        For C{/v1/healthz}: C{"connected"} or C{"down"}.
        """
        return self.connection.status()

    def startService(self) -> None:
        super().startService()
        self._running = deferred_from_coroutine(self.connection.run())
        self._running.addErrback(self._run_failed)

    def _run_failed(self, failure: Failure) -> None:
        if not failure.check(CancelledError):
            self.log.failure("NATS start-up failed", failure)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._running is not None:
            self._running.cancel()
            self._running = None
        return deferred_from_coroutine(self._stop())

    async def _stop(self) -> None:
        for step in [*(bridge.stop for bridge in reversed(self.bridges)), self.callout.stop]:
            if not await within(step(), self.stop_timeout):
                self.log.warn("{step} did not finish in time; going on", step=step)
        await self.connection.close(self.stop_timeout)



class InboxStream:
    """
    The start-up step that creates C{KEZ_INBOX} if the broker lacks it.
    Required: without it native clients' offline messages and the
    bridge's intake are gone, so a failure (JetStream off, say) keeps NATS
    reported down and is retried (see L{NatsConnection}); it runs again
    after each reconnection (the broker may have lost it).
    """

    def __init__(self, limits: StreamLimits | None = None) -> None:
        self.limits = limits or StreamLimits()

    async def ensure(self, nc: Any) -> None:
        await ensure_inbox_stream(nc.jetstream(timeout=5), self.limits)


def nats_hooks(
    callout: CalloutSubscription, bridges: Sequence[Bridge], stream: InboxStream
) -> tuple[tuple[OnConnect, ...], tuple[OnConnect, ...]]:
    """
    What runs on the chat-server's connection, as L{NatsConnection}'s
    C{on_connect} and C{on_reconnect}: the stream, the callout
    subscription, then the bridges; the stream again on reconnection.
    """
    return (stream.ensure, callout.start, *(bridge.start for bridge in bridges)), (stream.ensure,)


def require_seeds(config: ChatConfig) -> tuple[str, str, str]:
    """
    The NATS URL, the seed file of our NATS user and that of the callout
    issuer.

    @raise NatsSetupError: unless all three are configured.
    """
    if not config.nats_url:
        raise NatsSetupError("NATS is not configured (--nats-url)")
    if not config.nats_seed or not config.callout_issuer_seed:
        raise NatsSetupError(
            "--nats-url needs --nats-seed and --callout-issuer-seed"
            " (create them with `kezchat-admin nats-keys --out DIR`)"
        )
    return config.nats_url, config.nats_seed, config.callout_issuer_seed


def build_nats_service(
    config: ChatConfig,
    lookup: Lookup,
    reactor: object,
    bridges: Sequence[Bridge] = (),
    stream_limits: StreamLimits | None = None,
    metrics: Metrics | None = None,
) -> NatsService:
    """
    The NATS service for a L{kezchat.server.config.ChatConfig} with a C{nats_url}.

    @raise kezchat.compat.aio.WrongReactorError: unless C{reactor} is
        the asyncio reactor.
    @raise kezchat.natsbridge.errors.NatsSetupError: for a missing or
        wrong seed file (and the wrong reactor).
    """
    require_asyncio_reactor(reactor)
    url, seed_file, issuer_file = require_seeds(config)
    seed = read_seed_file(seed_file, USER)
    issuer = read_seed_file(issuer_file, ACCOUNT)
    # the registry caches what it answers: a connect storm (mostly
    # reconnections) costs the database nothing
    responder = CalloutResponder(issuer, lookup)
    callout = CalloutSubscription(
        responder,
        on_busy=metrics.nats_callout_busy.inc if metrics is not None else lambda: None,
    )
    on_connect, on_reconnect = nats_hooks(callout, bridges, InboxStream(stream_limits))
    connection = NatsConnection(
        url, seed, name=f"kezchat {config.server}",
        on_dropped=metrics.nats_dropped.inc if metrics is not None else lambda: None,
        on_connect=on_connect, on_reconnect=on_reconnect,
    )
    return NatsService(connection, callout, bridges)
