"""
Prometheus metrics of one server instance.

Each instance owns its own C{CollectorRegistry}, so several servers in one
process (tests, embedders) never share or clash over counters.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class HTTPMetrics:
    """
    What every KEZ HTTP service counts: requests, latency, refusals.
    Services subclass it to add their own.
    """

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, namespace: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "http_requests", "HTTP requests by route and status", ["route", "method", "status"],
            namespace=namespace, registry=r,
        )
        self.latency = Histogram(
            "http_request_seconds", "time to the end of the response, by route", ["route"],
            namespace=namespace, registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.rejections = Counter(
            "rejections", "requests refused, by error code", ["code"],
            namespace=namespace, registry=r,
        )
        self.db_write_failures = Counter(
            "db_write_failures",
            "writes the database could not store, by cause (disk_full, busy, io, stopped, …)",
            ["cause"], namespace=namespace, registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class Metrics(HTTPMetrics):
    """
    The chat-server's metrics.
    """

    def __init__(self, namespace: str = "kezchat") -> None:
        super().__init__(namespace)
        r = self.registry
        self.registrations = Counter(
            "registrations", "handles registered", namespace=namespace, registry=r
        )
        self.messages_stored = Counter(
            "messages_stored", "messages durably stored", namespace=namespace, registry=r
        )
        self.messages_delivered = Counter(
            "messages_delivered", "message events written to live streams",
            namespace=namespace, registry=r,
        )
        self.streams_open = Gauge(
            "streams_open", "open SSE streams", namespace=namespace, registry=r
        )
        self.slow_consumer_disconnects = Counter(
            "slow_consumer_disconnects", "SSE streams cut because the client could not keep up",
            namespace=namespace, registry=r,
        )
        self.retention_dropped = Counter(
            "retention_dropped_messages", "messages dropped by retention, by reason", ["reason"],
            namespace=namespace, registry=r,
        )
        self.manifests_stored = Counter(
            "manifests_stored", "shared-files manifests stored in the mirror",
            namespace=namespace, registry=r,
        )
        self.retention_dropped_bytes = Counter(
            "retention_dropped_bytes", "bytes of envelopes dropped by retention", ["reason"],
            namespace=namespace, registry=r,
        )
        self.replays_refused = Counter(
            "replays_refused", "signed sends repeated within their window, not stored again",
            namespace=namespace, registry=r,
        )
        self.streams_refused = Counter(
            "streams_refused", "SSE streams refused past a cap, by cap (handle or ip)",
            ["cap"], namespace=namespace, registry=r,
        )
        self.nats_callout_busy = Counter(
            "nats_callout_busy",
            "NATS logins refused at once because too many registry look-ups were waiting",
            namespace=namespace, registry=r,
        )
        self.nats_dropped = Counter(
            "nats_dropped",
            "messages nats-py dropped because a subscription's queue was full (slow consumer)",
            namespace=namespace, registry=r,
        )
        self.nats_ingest_dropped = Counter(
            "nats_ingest_dropped", "messages from native NATS clients not stored, by reason",
            ["reason"], namespace=namespace, registry=r,
        )
        self.legacy_auth = Counter(
            "legacy_auth_requests",
            "requests accepted with a signature that does not name this server, by method",
            ["method"], namespace=namespace, registry=r,
        )
        for method in ("GET", "POST", "DELETE", "PUT"):
            # shown at zero from the start: zero for a while means no
            # client still signs the old way
            self.legacy_auth.labels(method)
