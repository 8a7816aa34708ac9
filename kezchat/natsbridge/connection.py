"""
The chat-server's own NATS connection, kept alive across broker outages.

nats-py reconnects by itself once it has connected, replaying every
subscription; what it does not do is wait for a broker that is down when
the chat-server starts. L{NatsConnection} adds that, reports the link
state for C{/v1/healthz}, and runs start-up work (subscriptions, stream
creation) on every (re)connection, since a broker may come back empty.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import nats
import nats.errors
from twisted.logger import Logger

from kezchat.natsbridge.keys import NKey

OnConnect = Callable[[Any], Awaitable[None]]


class NatsConnection:
    """
    One nats-py client, logged in with the callout user's seed.

    @param on_connect: coroutines run after the first connection, in order
        (for subscriptions, which nats-py replays on reconnection).
    @param on_reconnect: coroutines run after every reconnection.
    """

    log = Logger()

    def __init__(
        self,
        url: str,
        seed: NKey,
        name: str = "kezchat",
        reconnect_wait: float = 1.0,
        connect_timeout: float = 2.0,
    ) -> None:
        self.url = url
        self.seed = seed
        self.name = name
        self.reconnect_wait = reconnect_wait
        self.connect_timeout = connect_timeout
        self.nc: Any = None
        self.on_connect: list[OnConnect] = []
        self.on_reconnect: list[OnConnect] = []
        self._down_logged = False
        #: the start-up hooks (callout subscription, stream, bridges) ran
        self._started = False

    @property
    def connected(self) -> bool:
        """
        Connected and set up: a client that sees C{"connected"} in healthz
        can log in at once, since the callout is already subscribed.
        """
        return self._started and self.nc is not None and self.nc.is_connected

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
        for hook in self.on_connect:
            try:
                await hook(nc)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.failure("NATS start-up hook failed")
        self._started = True

    async def close(self, timeout: float = 5.0) -> None:
        """
        Drain (deliver what is in flight, then unsubscribe) and close.

        Each step is bounded: a shutdown must finish even when nats-py is
        wedged mid-reconnect (seen under load: C{close} never returning).
        """
        self._started = False
        nc, self.nc = self.nc, None
        if nc is None or nc.is_closed:
            return
        try:
            if nc.is_connected:
                await asyncio.wait_for(nc.drain(), timeout)
        except (TimeoutError, nats.errors.Error, OSError):
            pass
        finally:
            try:
                await asyncio.wait_for(nc.close(), timeout)
            except (TimeoutError, nats.errors.Error, OSError):
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
        for hook in self.on_reconnect:
            try:
                await hook(self.nc)
            except Exception:
                self.log.failure("NATS reconnection hook failed")
