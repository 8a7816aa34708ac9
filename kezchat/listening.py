"""
Serving a factory on Twisted endpoint strings (C{tcp:6969}, C{ssl:…},
C{systemd:…}), with the bound port available to whoever asks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from kezchat.storage.sqlite.database import SQLiteDatabase


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


class ServerService(MultiService):
    """
    A server made of a database, other parts and HTTP listeners: the
    common frame of C{twistd kezchat} and C{twistd kezsig}.

    Children start in the order they were added (the database first) and
    stop in reverse (the listeners first). Listeners wait for the database,
    so no request arrives before it can be answered.
    """

    log = Logger()

    #: set by the twistd plugins: a database that cannot be opened ends the
    #: process instead of leaving a server that answers nothing
    stop_reactor_on_failure = False

    def __init__(self, db: SQLiteDatabase, reactor: object) -> None:
        super().__init__()
        self.db = db
        self._reactor = reactor
        self.listeners: list[EndpointService] = []

    def listen(self, descriptions: Iterable[str], factory: IProtocolFactory) -> None:
        """
        Serve C{factory} on every endpoint description.
        """
        for description in descriptions:
            listener = EndpointService(self._reactor, description, factory, self.db.when_ready)
            listener.setServiceParent(self)
            self.listeners.append(listener)

    def startService(self) -> None:
        super().startService()
        self.db.when_ready().addErrback(self._fatal)

    def _fatal(self, failure: Failure) -> None:
        self.log.critical(
            "cannot open the database {path}: {error}",
            path=self.db.path,
            error=failure.getErrorMessage(),
        )
        if self.stop_reactor_on_failure and self._reactor.running:
            self._reactor.stop()

    def when_listening(self) -> Deferred[list[IListeningPort]]:
        """
        The bound ports of every listener, once all listen.
        """
        return all_listening(self.listeners)
