"""
The chat-server as one Twisted service (the "tap").

L{makeService} composes a C{MultiService} from a L{ChatConfig}: database,
domain objects, HTTP listeners. The reactor is a parameter, so tests and
embedding applications drive the very same code twistd runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure

from kezchat.config import ChatConfig
from kezchat.http.app import ChatResource, KezChatHTTP
from kezchat.http.clientip import ClientAddress
from kezchat.listening import EndpointService
from kezchat.metrics import Metrics
from kezchat.ratelimit import RateLimiter
from kezchat.registry import Registry, RegistryPolicy
from kezchat.storage.sqlite import SQLiteDatabase, SQLiteRegistryStore

log = Logger()


@dataclass
class ChatParts:
    """
    The domain objects of one server, for embedders who want them.
    """

    config: ChatConfig
    db: SQLiteDatabase
    registry: Registry
    metrics: Metrics
    http: KezChatHTTP


class ChatService(MultiService):
    """
    The whole chat-server. Children start in order (database first) and
    stop in reverse (listeners first, database last).
    """

    #: set by the twistd plugin: a database that cannot be opened ends the
    #: process instead of leaving a server that answers nothing
    stop_reactor_on_failure = False

    def __init__(self, parts: ChatParts, reactor: object) -> None:
        super().__init__()
        self.parts = parts
        self._reactor = reactor
        self.listeners: list[EndpointService] = []

    @property
    def config(self) -> ChatConfig:
        return self.parts.config

    def resource(self) -> ChatResource:
        return self.parts.http.resource()

    def startService(self) -> None:
        super().startService()
        self.parts.db.when_ready().addErrback(self._fatal)

    def _fatal(self, failure: Failure) -> None:
        log.critical("cannot open the database {path}: {error}",
                     path=self.parts.db.path, error=failure.getErrorMessage())
        if self.stop_reactor_on_failure and self._reactor.running:
            self._reactor.stop()

    def when_listening(self) -> Deferred[list[IListeningPort]]:
        """
        The bound ports of every C{--listen} endpoint, once all listen.
        """
        d = DeferredList(
            [listener.when_listening() for listener in self.listeners],
            fireOnOneErrback=True,
            consumeErrors=True,
        )
        d.addCallback(lambda results: [port for _ok, port in results])
        d.addErrback(lambda f: f.value.subFailure)
        return d


def build_parts(config: ChatConfig, reactor: object) -> ChatParts:
    """
    The domain objects and HTTP layer, unstarted.
    """
    clock = reactor.seconds
    metrics = Metrics()
    db = SQLiteDatabase(config.db, reactor)
    registry = Registry(
        SQLiteRegistryStore(db),
        RegistryPolicy(
            server=config.server, base_url=config.base_url, sig_base_url=config.sig_base_url
        ),
        clock,
    )
    http = KezChatHTTP(
        registry=registry,
        metrics=metrics,
        clock=clock,
        register_limiter=RateLimiter(config.register_limit, 3600.0, clock),
        client_address=ClientAddress(config.trusted_proxies),
    )
    return ChatParts(config=config, db=db, registry=registry, metrics=metrics, http=http)


def makeService(config: ChatConfig, reactor: object | None = None) -> ChatService:
    """
    Build the chat-server service from C{config}.
    """
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    parts = build_parts(config, reactor)
    service = ChatService(parts, reactor)
    parts.db.setServiceParent(service)
    site = parts.http.site(reactor)
    for description in config.listen:
        listener = EndpointService(reactor, description, site, ready=parts.db.when_ready)
        listener.setServiceParent(service)
        service.listeners.append(listener)
    return service
