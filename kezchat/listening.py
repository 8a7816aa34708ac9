"""
Serving a factory on Twisted endpoint strings (C{tcp:6969}, C{ssl:…},
C{systemd:…}), with the bound port available to whoever asks.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.logger import Logger
from twisted.python.failure import Failure


class EndpointService(Service):
    """
    Listens on one endpoint description once C{ready()} fires (so no
    request arrives before the database is usable).

    Unlike L{twisted.application.internet.StreamServerEndpointService} it
    exposes L{when_listening}, which tests and embedders use to learn the
    port of C{tcp:0}.
    """

    log = Logger()

    def __init__(
        self,
        reactor: object,
        description: str,
        factory: IProtocolFactory,
        ready: Callable[[], Deferred[object]] = lambda: succeed(None),
    ) -> None:
        self._reactor = reactor
        self.description = description
        self._factory = factory
        self._ready = ready
        self._port: IListeningPort | None = None
        self._waiters: list[Deferred[IListeningPort]] = []
        self._failure: Failure | None = None

    @property
    def factory(self) -> IProtocolFactory:
        """
        The factory served (for the chat-server, its C{KezSite}): lets
        tests and operators' tooling tune it, e.g. its request deadline.
        """
        return self._factory

    def startService(self) -> None:
        super().startService()
        self._failure = None
        endpoint = serverFromString(self._reactor, self.description)
        d = self._ready()
        d.addCallback(lambda _: endpoint.listen(self._factory))
        d.addCallbacks(self._listening, self._failed)

    def _listening(self, port: IListeningPort) -> None:
        if not self.running:
            port.stopListening()
            return
        self._port = port
        # the address as text: an IAddress is unpersistable in JSON logs,
        # and the bound port is what an operator (or a test) looks for
        self.log.info("listening on {description}: {address}",
                      description=self.description, address=str(port.getHost()))
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(port)

    def _failed(self, failure: Failure) -> None:
        self._failure = failure
        self.log.failure("cannot serve on {description}", failure, description=self.description)
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.errback(failure)

    def when_listening(self) -> Deferred[IListeningPort]:
        if self._port is not None:
            return succeed(self._port)
        d: Deferred[IListeningPort] = Deferred()
        if self._failure is not None:
            d.errback(self._failure)
        else:
            self._waiters.append(d)
        return d

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        port, self._port = self._port, None
        if port is not None:
            return port.stopListening()
        return None


def all_listening(listeners: list[EndpointService]) -> Deferred[list[IListeningPort]]:
    """
    The bound ports of C{listeners}, once every one listens (or the first
    failure).
    """
    d = DeferredList(
        [listener.when_listening() for listener in listeners],
        fireOnOneErrback=True,
        consumeErrors=True,
    )
    d.addCallback(lambda results: [port for _ok, port in results])
    d.addErrback(lambda f: f.value.subFailure)
    return d
