"""
Federation's metrics, per other server: what is queued for it, delivered,
dropped, the failed attempts and how long delivery took; and what it
delivered here.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class FederationMetrics:
    def __init__(self, registry: CollectorRegistry, namespace: str = "kezchat") -> None:
        self.queued = Counter(
            "federation_queued", "messages queued for another server, by destination",
            ["destination"], namespace=namespace, registry=registry,
        )
        self.delivered = Counter(
            "federation_delivered", "messages another server accepted, by destination",
            ["destination"], namespace=namespace, registry=registry,
        )
        self.dropped = Counter(
            "federation_dropped",
            "messages given up (refused for good, or past retention), by destination",
            ["destination"], namespace=namespace, registry=registry,
        )
        self.failed_attempts = Counter(
            "federation_failed_attempts",
            "delivery attempts that will be retried (server down, refused for now)",
            ["destination"], namespace=namespace, registry=registry,
        )
        self.latency = Histogram(
            "federation_delivery_seconds", "from queueing to the destination's acceptance",
            ["destination"], namespace=namespace, registry=registry,
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 30, 60, 300, 3600),
        )
        self.received = Counter(
            "federation_received", "messages other servers delivered here, by origin",
            ["origin"], namespace=namespace, registry=registry,
        )
