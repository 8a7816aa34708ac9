"""
Serving a factory on Twisted endpoint strings (C{tcp:6969}, C{ssl:…},
C{systemd:…}), with the bound port available to whoever asks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, cast

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, FirstError, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from kezchat.reactor import IServerReactor
from kezchat.startup import StartupError

if TYPE_CHECKING:
    from kezchat.storage.database import Database


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
        reactor: IServerReactor,
        description: str,
        factory: IProtocolFactory,
        ready: Callable[[], Deferred[None]] = lambda: succeed(None),
        on_failure: Callable[[str, Failure], None] | None = None,
    ) -> None:
        """
        @param on_failure: called with the description and the failure when
            listening fails (a port in use, a socket systemd did not pass).
        @raise StartupError: C{description} is not an endpoint this reactor
            can serve on; found here, at once, rather than when the reactor
            runs.
        """
        self._reactor = reactor
        self.description = description
        self._endpoint = parse_endpoint(reactor, description)
        self._factory = factory
        self._ready = ready
        self._on_failure = on_failure or self._log_failure
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
        def listen(_: None) -> Deferred[IListeningPort]:
            listening = self._endpoint.listen(self._factory)
            return listening.addErrback(self._cannot_listen)

        self._ready().addCallback(listen).addCallbacks(self._listening, self._failed)

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

    def _cannot_listen(self, failure: Failure) -> Failure:
        self._on_failure(self.description, failure)
        return failure

    def _log_failure(self, description: str, failure: Failure) -> None:
        self.log.failure("cannot serve on {description}", failure, description=description)

    def _failed(self, failure: Failure) -> None:
        self._failure = failure
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
        stopped = port.stopListening() if port is not None else None
        close_connections = getattr(self._factory, "close_connections", None)
        if close_connections is not None:
            close_connections()
        return stopped


def parse_endpoint(reactor: IServerReactor, description: str) -> IStreamServerEndpoint:
    """
    The server endpoint C{description} names.

    @raise StartupError: with one line saying what is wrong and what to do.
    """
    try:
        # serverFromString is unannotated upstream; it returns this interface
        endpoint: IStreamServerEndpoint = serverFromString(reactor, description)
        return endpoint
    except Exception as e:
        if description.startswith("systemd:") and isinstance(e, (IndexError, KeyError)):
            reason = "systemd passed no such socket (is the .socket unit running?)"
        else:
            reason = str(e) or type(e).__name__
        raise StartupError(
            f"--listen {description!r} cannot be used: {reason}. Use an endpoint such as "
            "tcp:6969, tcp:6969:interface=127.0.0.1, ssl:8443:privateKey=key.pem:certKey=cert.pem"
            " or systemd:domain=INET:index=0"
        ) from None


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
    def ports(results: list[tuple[bool, IListeningPort]]) -> list[IListeningPort]:
        return [port for _ok, port in results]

    def first_failure(failure: Failure) -> Failure:
        return cast(FirstError, failure.value).subFailure

    return d.addCallback(ports).addErrback(first_failure)


class ServerService(MultiService):
    """
    A server made of a database, other parts and HTTP listeners: the
    common frame of C{twistd kezchat} and C{twistd kezsig}.

    Children start in the order they were added (the database first) and
    stop in reverse (the listeners first). Listeners wait for the database,
    so no request arrives before it can be answered.
    """

    log = Logger()

    def __init__(
        self,
        db: Database,
        reactor: IServerReactor,
        on_fatal: Callable[[str], None] | None = None,
    ) -> None:
        """
        @param on_fatal: called with one line when the server cannot work
            (its database does not open, a listener cannot listen). The
            twistd plugins pass L{kezchat.startup.ExitOnFatal}, which ends
            the process with status 1; the default only logs it, for
            embedders and tests.
        """
        super().__init__()
        self.db = db
        self._reactor = reactor
        self.on_fatal = on_fatal or self._log_fatal
        self.listeners: list[EndpointService] = []

    def listen(self, descriptions: Iterable[str], factory: IProtocolFactory) -> None:
        """
        Serve C{factory} on every endpoint description.
        """
        for description in descriptions:
            listener = EndpointService(
                self._reactor, description, factory, self.db.when_ready, self._listen_failed
            )
            listener.setServiceParent(self)
            self.listeners.append(listener)

    def startService(self) -> None:
        super().startService()
        self.db.when_ready().addErrback(self._fatal)

    def _fatal(self, failure: Failure) -> None:
        if failure.check(StartupError):
            self.on_fatal(f"{self.db.path}: {failure.getErrorMessage()}")
            return
        advice = {
            "cannot_open": "check that its directory exists and this user may write there",
            "readonly": "this user must be able to write the file and its directory",
            "corrupt": "it is not a SQLite database or it is damaged: restore a backup",
            "disk_full": "free some space on its disk",
            "busy": "another process holds it locked: stop that process",
        }.get(getattr(failure.value, "cause", None) or "", "fix the cause above")
        self.on_fatal(
            f"cannot open the database {self.db.path} ({failure.getErrorMessage()}): "
            f"{advice}, or choose another file with --db"
        )

    def _listen_failed(self, description: str, failure: Failure) -> None:
        if failure.check(CannotListenError):
            what = "stop whatever holds that address or choose another with --listen"
        else:
            what = "check the --listen value"
        self.on_fatal(
            f"cannot listen on {description} ({failure.getErrorMessage()}): {what}"
        )

    def _log_fatal(self, message: str) -> None:
        self.log.critical("{message}", message=message)

    def when_listening(self) -> Deferred[list[IListeningPort]]:
        """
        The bound ports of every listener, once all listen.
        """
        return all_listening(self.listeners)
