"""
The chat-server's own NATS connection, kept alive across broker outages.

nats-py reconnects by itself once it has connected, replaying every
subscription; what it does not do is wait for a broker that is down when
the chat-server starts. L{NatsConnection} adds that, reports the link
state for C{/v1/healthz}, and runs start-up work (subscriptions, stream
creation) on every (re)connection, since a broker may come back empty.

Start-up work is required: while any of it has failed (the callout's
subscription refused, the stream not created), healthz does not say
C{"connected"} (a client that trusted it would fail to log in), and the
failed steps are retried on the next reconnection and on a timer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import nats
import nats.errors
from twisted.logger import Logger

from kezchat.compat.aio import within
from kezchat.protocol.natskeys import NKey

OnConnect = Callable[[Any], Awaitable[None]]


class NatsConnection:
    """
    One nats-py client, logged in with the callout user's seed.

    @param on_connect: coroutines run after the first connection, in order
        (for subscriptions, which nats-py replays on reconnection).
    @param on_reconnect: coroutines run after every reconnection.

    A hook that fails is retried (alone: those that succeeded are not run
    again) after the next reconnection and every C{retry_interval}
    seconds until it succeeds; hooks must therefore be safe to run again
    after a failure.
    """

    log = Logger()

    def __init__(
        self,
        url: str,
        seed: NKey,
        name: str = "kezchat",
        reconnect_wait: float = 1.0,
        connect_timeout: float = 2.0,
        retry_interval: float = 5.0,
        on_dropped: Callable[[], None] = lambda: None,
        on_connect: Sequence[OnConnect] = (),
        on_reconnect: Sequence[OnConnect] = (),
    ) -> None:
        """
        @param on_dropped: told of each message nats-py drops because a
            subscription's queue is full (for the C{kezchat_nats_dropped_total}
            metric).
        """
        self.url = url
        self.seed = seed
        self.name = name
        self.reconnect_wait = reconnect_wait
        self.connect_timeout = connect_timeout
        self.retry_interval = retry_interval
        self.on_dropped = on_dropped
        self.nc: Any = None
        #: given whole at construction and never changed: what runs on
        #: this connection is known from the moment it exists
        self.on_connect: tuple[OnConnect, ...] = tuple(on_connect)
        self.on_reconnect: tuple[OnConnect, ...] = tuple(on_reconnect)
        self._down_logged = False
        #: the start-up hooks (callout subscription, stream, bridges) ran
        self._started = False
        #: hooks whose last run failed, in the order they run
        self._failed: list[OnConnect] = []
        self._retrying: asyncio.Task[None] | None = None
        self._hooks_lock = asyncio.Lock()
        #: times a failed hook was retried
        self.retries = 0
        #: messages nats-py dropped because a subscription's pending
        #: queue was full (a slow consumer)
        self.dropped = 0

    @property
    def connected(self) -> bool:
        """
        Connected and set up: a client that sees C{"connected"} in healthz
        can log in at once, since the callout is already subscribed.
        """
        return (
            self._started and not self._failed and self.nc is not None and self.nc.is_connected
        )

    def status(self) -> str:
        """
        C{"connected"} or C{"down"}, as C{/v1/healthz} reports it.
        """
        return "connected" if self.connected else "down"

    async def run(self) -> None:
        """
        Connect, retrying for as long as it takes, then run the start-up
        hooks. Returns once connected; cancel it to give up.

        (With C{max_reconnect_attempts=-1} nats-py's own C{connect} keeps
        trying until a broker answers; the loop here only covers errors it
        does give up on, such as a refused login.)
        """
        while True:
            try:
                nc = await nats.connect(
                    self.url,
                    name=self.name,
                    nkeys_seed_str=self.seed.seed_text,
                    # nothing this connection subscribes to is its own
                    # publication (announcements from other instances, the
                    # callout, JetStream replies): the server need not
                    # send our announcements back to us
                    no_echo=True,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=self.reconnect_wait,
                    connect_timeout=self.connect_timeout,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                )
                break
            except (TimeoutError, OSError, nats.errors.Error) as e:
                self._report_down(e)
                await asyncio.sleep(self.reconnect_wait)
        self.nc = nc
        self._down_logged = False
        self.log.info("Connected to NATS at {url}", url=self.url)
        async with self._hooks_lock:
            self._failed = await self._run_hooks(list(self.on_connect), nc)
        self._started = True
        self._retry_later()

    async def _run_hooks(self, hooks: list[OnConnect], nc: Any) -> list[OnConnect]:
        """
        Run C{hooks} in order; the ones that failed.
        """
        failed = []
        for hook in hooks:
            try:
                await hook(nc)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.failure(
                    "NATS start-up step {hook} failed; NATS stays down for clients"
                    " until it succeeds (retried every {interval} s)",
                    hook=getattr(hook, "__qualname__", repr(hook)),
                    interval=self.retry_interval,
                )
                failed.append(hook)
        return failed

    async def _retry_failed(self, also: list[OnConnect] | None = None) -> None:
        """
        Run C{also}, then the hooks that failed, again; those that fail
        stay failed. One run at a time: a hook never runs twice at once.
        """
        async with self._hooks_lock:
            if self.nc is None or not self.nc.is_connected:
                return
            again = list(also or ())
            retried = [h for h in self._failed if h not in again]
            if not again and not retried:
                return
            if retried:
                self.retries += 1
            self._failed = await self._run_hooks(again + retried, self.nc)
            if retried and not self._failed:
                self.log.info("NATS start-up steps now succeeded; NATS is up")

    def _retry_later(self) -> None:
        if self._failed and (self._retrying is None or self._retrying.done()):
            self._retrying = asyncio.ensure_future(self._retry_loop())

    async def _retry_loop(self) -> None:
        while self._failed and self.nc is not None:
            await asyncio.sleep(self.retry_interval)
            await self._retry_failed()

    async def close(self, timeout: float = 5.0) -> None:
        """
        Drain (deliver what is in flight, then unsubscribe) and close.

        Each step is bounded: a shutdown must finish even when nats-py is
        wedged mid-reconnect (seen under load: C{close} never returning).
        """
        self._started = False
        if self._retrying is not None:
            self._retrying.cancel()
            self._retrying = None
        nc, self.nc = self.nc, None
        if nc is None or nc.is_closed:
            return
        try:
            if nc.is_connected:
                # nats-py's own drain timeout, inside ours: cancelling drain()
                # from outside leaves its gathered subscription drains with
                # an exception nobody retrieves (a CancelledError traceback
                # printed at exit); its own timeout path retrieves it.
                nc.options["drain_timeout"] = timeout * 0.8
                await asyncio.wait_for(nc.drain(), timeout)
        except (TimeoutError, nats.errors.Error, OSError):
            pass
        finally:
            try:
                closed = await within(nc.close(), timeout)
            except (nats.errors.Error, OSError):
                closed = True
            if not closed:
                self.log.warn("NATS connection did not close in {t} s; abandoning it", t=timeout)

    def _report_down(self, error: BaseException) -> None:
        # nats-py reports every failed attempt; one line per outage will do.
        if not self._down_logged:
            self._down_logged = True
            self.log.warn(
                "NATS at {url} is unreachable ({error}); retrying",
                url=self.url,
                error=str(error) or type(error).__name__,
            )

    async def _on_error(self, error: Exception) -> None:
        if isinstance(error, nats.errors.SlowConsumerError):
            self.dropped += 1
            self.on_dropped()
            if self.dropped == 1 or self.dropped % 1000 == 0:
                self.log.warn(
                    "NATS: dropped a message on {subject}, its queue is full"
                    " ({count} dropped so far)", subject=error.subject, count=self.dropped,
                )
            return
        if isinstance(error, (TimeoutError, OSError)):
            self._report_down(error)
        else:
            self.log.warn("NATS error: {error}", error=str(error) or type(error).__name__)

    async def _on_disconnected(self) -> None:
        if self.nc is not None and not self.nc.is_closed and not self._down_logged:
            self._down_logged = True
            self.log.warn("Lost the NATS connection to {url}; reconnecting", url=self.url)

    async def _on_reconnected(self) -> None:
        self._down_logged = False
        self.log.info("Reconnected to NATS at {url}", url=self.url)
        if not self._started:
            return  # run() has the start-up hooks still to go
        await self._retry_failed(list(self.on_reconnect))
        self._retry_later()
