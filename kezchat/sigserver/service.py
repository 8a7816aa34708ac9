"""
C{kezsig} as one Twisted service: the database, then one listener per
C{--listen} endpoint.  The reactor is a parameter, so tests and embedding
applications run the very code twistd runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure

from kezchat.listening import EndpointService, all_listening
from kezchat.sigserver.config import SigConfig
from kezchat.sigserver.http import SigResource, build_resource, build_site
from kezchat.sigserver.metrics import SigMetrics
from kezchat.sigserver.sigchains import Sigchains
from kezchat.sigserver.store import SCHEMA_PACKAGE, SQLiteSigchainStore
from kezchat.storage.sqlite.database import SQLiteDatabase

log = Logger()


@dataclass
class SigParts:
    config: SigConfig
    db: SQLiteDatabase
    sigchains: Sigchains
    metrics: SigMetrics
    resource: SigResource


class SigService(MultiService):
    """
    The whole sig-server; children start database first and stop it last.
    """

    #: set by the twistd plugin: a database that cannot be opened ends the
    #: process instead of leaving a server that answers nothing
    stop_reactor_on_failure = False

    def __init__(self, parts: SigParts, reactor: object) -> None:
        super().__init__()
        self.parts = parts
        self._reactor = reactor
        self.listeners: list[EndpointService] = []

    def startService(self) -> None:
        super().startService()
        self.parts.db.when_ready().addErrback(self._fatal)

    def _fatal(self, failure: Failure) -> None:
        log.critical(
            "cannot open the database {path}: {error}",
            path=self.parts.db.path,
            error=failure.getErrorMessage(),
        )
        if self.stop_reactor_on_failure and self._reactor.running:
            self._reactor.stop()

    def when_listening(self) -> Deferred[list[IListeningPort]]:
        return all_listening(self.listeners)


def build_parts(config: SigConfig, reactor: object) -> SigParts:
    """
    The domain objects and the HTTP resource, unstarted.
    """
    clock = reactor.seconds
    metrics = SigMetrics()
    db = SQLiteDatabase(config.db, reactor, schema_package=SCHEMA_PACKAGE)
    sigchains = Sigchains(SQLiteSigchainStore(db), clock)
    resource = build_resource(sigchains, metrics, clock, config.base_url)
    return SigParts(config, db, sigchains, metrics, resource)


def makeService(config: SigConfig, reactor: object | None = None) -> SigService:
    """
    Build the sig-server service from C{config}.
    """
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    parts = build_parts(config, reactor)
    service = SigService(parts, reactor)
    parts.db.setServiceParent(service)
    site = build_site(parts.resource, parts.metrics, reactor)
    for description in config.listen:
        listener = EndpointService(reactor, description, site, ready=parts.db.when_ready)
        listener.setServiceParent(service)
        service.listeners.append(listener)
    return service
