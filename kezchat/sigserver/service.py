"""
C{kezsig} as one Twisted service: the database, then one listener per
C{--listen} endpoint.  The reactor is a parameter, so tests and embedding
applications run the very code twistd runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from kezchat.reactor import IServerReactor, global_reactor
from kezchat.server.listening import ServerService
from kezchat.sigserver.config import SigConfig
from kezchat.sigserver.http import SigResource, build_resource, build_site
from kezchat.sigserver.metrics import SigMetrics
from kezchat.sigserver.sigchains import Sigchains
from kezchat.sigserver.storage import sigchain_storage
from kezchat.storage.database import Database

log = Logger()


@dataclass
class SigParts:
    config: SigConfig
    #: the database service: SQLite or PostgreSQL, from C{--db}
    db: Database
    sigchains: Sigchains
    metrics: SigMetrics
    resource: SigResource


class SigService(ServerService):
    """
    The whole sig-server; children start database first and stop it last.
    """

    def __init__(
        self,
        parts: SigParts,
        reactor: IServerReactor,
        on_fatal: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(parts.db, reactor, on_fatal)
        self.parts = parts


def build_parts(config: SigConfig, reactor: IServerReactor) -> SigParts:
    """
    The domain objects and the HTTP resource, unstarted.
    """
    clock = reactor.seconds
    metrics = SigMetrics()
    db, store = sigchain_storage(
        config.db, reactor,
        on_write_failure=lambda cause: metrics.db_write_failures.labels(cause).inc(),
    )
    sigchains = Sigchains(
        store, clock,
        max_events=config.max_chain_events,
        offload=partial(deferToThreadPool, reactor, reactor.getThreadPool()),
    )
    resource = build_resource(sigchains, metrics, clock, config.base_url, db.health)
    return SigParts(config, db, sigchains, metrics, resource)


def makeService(
    config: SigConfig,
    reactor: IServerReactor | None = None,
    on_fatal: Callable[[str], None] | None = None,
) -> SigService:
    """
    Build the sig-server service from C{config}; C{on_fatal} as for
    L{kezchat.server.listening.ServerService}.

    @raise kezchat.startup.StartupError: a C{--listen} value is unusable.
    """
    if reactor is None:
        reactor = global_reactor()
    parts = build_parts(config, reactor)
    service = SigService(parts, reactor, on_fatal)
    parts.db.setServiceParent(service)
    service.listen(config.listen, build_site(
        parts.resource, parts.metrics, reactor, access_log=config.access_log
    ))
    return service
