"""
The chat-server as one Twisted service (the "tap").

L{makeService} composes a C{MultiService} from a L{ChatConfig}: database,
domain objects, streams, timers, HTTP listeners. The reactor is a
parameter, so tests and embedding applications drive the very same code
twistd runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from kezchat.federation.identity import ServerIdentity
from kezchat.federation.inbound import Inbound
from kezchat.federation.metrics import FederationMetrics
from kezchat.federation.outbound import Outbound
from kezchat.federation.remote import RemoteServers
from kezchat.federation.resolve import Resolver
from kezchat.federation.s2s import ServerVerifier
from kezchat.http import federation, keylog, manifests, messages
from kezchat.http.app import ChatResource, KezChatHTTP
from kezchat.http.clientip import ClientAddress
from kezchat.http.sse import StreamHub
from kezchat.http.webapp import WebApp, packaged_web_dir
from kezchat.keylog.log import KeyLog
from kezchat.metrics import Metrics
from kezchat.protocol.auth import Authenticator
from kezchat.reactor import IServerReactor, global_reactor
from kezchat.registry import Registry, RegistryPolicy
from kezchat.registry.mirror import ManifestMirror
from kezchat.relay.broker import Broker, LocalBroker, Origin
from kezchat.relay.limits import InProcessLimiter, Limiter, SharedLimiter
from kezchat.relay.relay import Relay
from kezchat.server.config import REGISTER_LIMIT_WINDOW, SEND_LIMIT_WINDOW, ChatConfig
from kezchat.server.listening import ServerService
from kezchat.storage.backend import ChatStorage, chat_storage
from kezchat.storage.database import Database
from kezchat.storage.errors import DatabaseUnavailable

if TYPE_CHECKING:
    from kezchat.natsbridge.bridge import NatsBroker
    from kezchat.natsbridge.service import NatsService

log = Logger()


@dataclass
class ChatParts:
    """
    The domain objects of one server, for embedders and tests.
    """

    config: ChatConfig
    #: the database service: SQLite or PostgreSQL, from C{--db}
    db: Database
    registry: Registry
    relay: Relay
    broker: Broker
    hub: StreamHub
    mirror: ManifestMirror
    metrics: Metrics
    http: KezChatHTTP
    #: the NATS link, when configured
    nats: NatsService | None = None
    #: this server's own key (federation)
    identity: ServerIdentity | None = None
    #: the client for other servers (federation)
    remote: RemoteServers | None = None
    #: the queue of messages to other servers and its delivery workers
    outbound: Outbound | None = None


class ChatService(ServerService):
    """
    The whole chat-server: database, domain objects, streams, timers,
    listeners.
    """

    def __init__(
        self,
        parts: ChatParts,
        reactor: IServerReactor,
        on_fatal: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(parts.db, reactor, on_fatal)
        self.parts = parts

    @property
    def config(self) -> ChatConfig:
        return self.parts.config

    def resource(self) -> ChatResource:
        """
        The HTTP resource alone, to mount in another C{Site}.
        """
        return self.parts.http.resource()


def build_parts(config: ChatConfig, reactor: IServerReactor) -> ChatParts:
    """
    The domain objects and HTTP layer, unstarted, each built whole in
    dependency order: registry, broker, relay, streams, NATS, HTTP.

    @raise kezchat.natsbridge.errors.NatsSetupError: NATS is configured
        but cannot be set up (wrong reactor, missing seed files).
    """
    clock = reactor.seconds
    metrics = Metrics()
    storage = chat_storage(
        config.db, reactor,
        server=config.server,
        allow_server_change=config.allow_server_change,
        on_write_failure=lambda cause: metrics.db_write_failures.labels(cause).inc(),
    )
    db = storage.db
    registry = Registry(
        storage.registry,
        RegistryPolicy(
            server=config.server, base_url=config.base_url, sig_base_url=config.sig_base_url
        ),
        clock,
    )
    nats_broker = _nats_broker(config, registry, reactor) if config.nats_url else None
    broker: Broker = nats_broker if nats_broker is not None else LocalBroker()
    store = storage.messages
    authenticator = Authenticator(
        clock,
        config.server,
        legacy=config.legacy_auth,
        on_legacy=lambda method: metrics.legacy_auth.labels(method).inc(),
    )
    identity = ServerIdentity(config.server, storage.keylog.server_seed)
    remote = RemoteServers(
        Resolver.from_settings(
            config.server, config.resolve, enabled=config.federation,
            allow=config.federation_allow, deny=config.federation_deny,
        ),
        reactor, clock,
    )
    federation_metrics = FederationMetrics(metrics.registry)
    outbound = Outbound(
        storage.outbox, remote, identity, reactor, clock,
        retention_seconds=config.retention_days * 86400,
        metrics=federation_metrics,
        queue_limit=config.federation_queue_limit,
    )
    outbound.announce = lambda notice: broker.publish(notice, origin=Origin.HTTP)
    relay = Relay(
        outbound=outbound,
        registry=registry,
        store=store,
        broker=broker,
        authenticator=authenticator,
        send_limiter=limiter(storage, "send", config.send_limit, SEND_LIMIT_WINDOW, clock),
        metrics=metrics,
        clock=clock,
    )
    hub = StreamHub(
        broker, store, metrics, clock, reactor,
        ping_interval=config.sse_ping_seconds,
        max_per_recipient=config.max_streams_per_handle,
        max_per_client=config.max_streams_per_ip,
    )
    nats = None
    if nats_broker is not None:
        nats = _nats_service(config, registry, relay, nats_broker, reactor)
    client_address = ClientAddress(config.trusted_proxies)
    mirror = ManifestMirror(registry, storage.manifests, authenticator, clock)
    web_dir = config.web_dir or packaged_web_dir()
    web = None
    if os.path.isdir(web_dir):
        web = WebApp(web_dir, connect_sources=connect_sources(config))
    inbound = Inbound(
        registry, relay, remote, ServerVerifier(config.server, remote.server_key, clock), clock,
        federation_metrics,
        limiter(storage, "federation", config.federation_limit, SEND_LIMIT_WINDOW, clock),
    )
    http = KezChatHTTP(
        web=web,
        remote=remote,
        registry=registry,
        metrics=metrics,
        clock=clock,
        register_limiter=limiter(
            storage, "register", config.register_limit, REGISTER_LIMIT_WINDOW, clock
        ),
        client_address=client_address,
        db_health=db.health,
        nats_status=nats.status if nats is not None else (lambda: "disabled"),
        nats_ws_url=config.nats_ws_url if nats is not None else None,
        extensions=[
            lambda routes: messages.install(routes, relay, hub, client_address),
            lambda routes: manifests.install(routes, mirror, metrics),
            lambda routes: keylog.install(
                routes, KeyLog(storage.keylog, registry, clock), remote, config.server
            ),
            lambda routes: federation.install(routes, identity, inbound),
        ],
    )
    return ChatParts(
        config=config, db=db, registry=registry, relay=relay, broker=broker, hub=hub,
        mirror=mirror, metrics=metrics, http=http, nats=nats, identity=identity, remote=remote,
        outbound=outbound,
    )


def connect_sources(config: ChatConfig) -> list[str]:
    """
    What the web app may connect to besides its own origin: the sig-server,
    and the NATS WebSocket it is told about (only when NATS is configured).
    """
    sources = [config.sig_base_url] if config.sig_base_url else []
    if config.nats_url and config.nats_ws_url:
        sources.append(config.nats_ws_url)
    return sources


def limiter(
    storage: ChatStorage, name: str, limit: int, period: float, clock: Callable[[], float]
) -> Limiter:
    """
    The C{name} rate limit: counted in the database when several processes
    may share it, else in this process (see L{ChatStorage.limits}).
    """
    if storage.limits is None:
        return InProcessLimiter(limit, period, clock)
    return SharedLimiter(storage.limits, name, limit, period, clock)


def makeService(
    config: ChatConfig,
    reactor: IServerReactor | None = None,
    on_fatal: Callable[[str], None] | None = None,
) -> ChatService:
    """
    Build the chat-server service from C{config}.

    @param on_fatal: told (one line) when the server cannot work: its
        database does not open, a listener cannot listen. See
        L{kezchat.server.listening.ServerService}.
    @raise kezchat.startup.StartupError: a C{--listen} value is unusable.
    """
    if reactor is None:
        reactor = global_reactor()
    parts = build_parts(config, reactor)
    warn_without_nats(config)
    service = ChatService(parts, reactor, on_fatal)
    parts.db.setServiceParent(service)
    if parts.outbound is not None:
        # starts after the database (resumes its queue), stops before it
        parts.outbound.setServiceParent(service)
    if parts.nats is not None:
        # starts after the database, stops (drains) after the listeners
        parts.nats.setServiceParent(service)
    retention = TimerService(config.retention_sweep_seconds, _retention_sweep, parts)
    retention.clock = reactor
    retention.setServiceParent(service)
    parts.hub.setServiceParent(service)
    if parts.http.web is not None:
        parts.http.web.setServiceParent(service)
    service.listen(config.listen, parts.http.site(reactor, access_log=config.access_log))
    return service


def warn_without_nats(config: ChatConfig) -> None:
    """
    Warn when the database can be shared (PostgreSQL) but NATS is off:
    each instance then delivers to its streams only what it stored itself
    at once, and what other instances stored only at the streams'
    keep-alive tick, so several such instances look like a slow server.
    """
    from kezchat.storage.dburl import is_postgres_url

    if config.nats_url or not is_postgres_url(config.db):
        return
    log.warn(
        "PostgreSQL without NATS (--nats-url): if several kezchat instances share this"
        " database, a message stored by another instance reaches this instance's streams"
        " only at their next keep-alive tick (every {tick:g} s), not at once. Run one"
        " instance, or give every instance the same --nats-url.",
        tick=config.sse_ping_seconds,
    )


def _retention_sweep(parts: ChatParts) -> Deferred[None]:
    """
    One retention pass, once the database is open. A database that did not
    open is reported (and ends the process) elsewhere; one that cannot
    write now is retried at the next pass.
    """
    config = parts.config

    def sweep(_: object) -> Deferred[None]:
        return ensureDeferred(
            parts.relay.apply_retention(config.retention_days * 86400.0, config.retention_bytes)
        )

    def failed(failure: Failure) -> None:
        if failure.check(DatabaseUnavailable):
            log.warn("retention sweep skipped: {error}", error=failure.getErrorMessage())
        else:
            log.failure("retention sweep failed", failure)

    ready = parts.db.when_ready()
    ready.addCallbacks(sweep, lambda failure: None)
    return ready.addErrback(failed)


def _nats_broker(config: ChatConfig, registry: Registry, reactor: IServerReactor) -> NatsBroker:
    """
    The broker when NATS is configured: local fan-out plus NATS. The mark
    on our own inbox publications is keyed from our NATS seed: every
    instance has it, no client does.

    @raise kezchat.compat.aio.WrongReactorError: if the reactor is not
        the asyncio one — at once, rather than as a hang later.
    """
    from kezchat.compat.aio import require_asyncio_reactor
    from kezchat.natsbridge.bridge import NatsBroker, StoredMarker
    from kezchat.natsbridge.service import require_seeds
    from kezchat.protocol.natskeys import USER, read_seed_file

    require_asyncio_reactor(reactor)
    _url, seed_file, _issuer_file = require_seeds(config)

    def primary_of(fqhn: str) -> Deferred[str]:
        return Deferred.fromCoroutine(registry.lookup(fqhn)).addCallback(lambda r: r.primary)

    return NatsBroker(primary_of, StoredMarker(read_seed_file(seed_file, USER).seed))


def _nats_service(
    config: ChatConfig,
    registry: Registry,
    relay: Relay,
    broker: NatsBroker,
    reactor: IServerReactor,
) -> NatsService:
    """
    NATS (SPEC §5): the callout answers from the registry, the bridge joins
    the relay to NATS, healthz reports the link.
    """
    from kezchat.natsbridge.callout import registry_lookup
    from kezchat.natsbridge.ingest import Ingest
    from kezchat.natsbridge.service import build_nats_service
    from kezchat.natsbridge.stream import StreamLimits

    return build_nats_service(
        config,
        registry_lookup(registry),
        reactor,
        bridges=[broker, Ingest(relay, broker.marker)],
        stream_limits=StreamLimits(
            max_age=config.retention_days * 86400, max_bytes=config.nats_stream_max_bytes
        ),
        metrics=relay.metrics,
    )
