"""
The sig-server's Prometheus metrics, in a registry of its own.
"""

from __future__ import annotations

from prometheus_client import Counter

from kezchat.metrics import HTTPMetrics


class SigMetrics(HTTPMetrics):
    def __init__(self, namespace: str = "kezsig") -> None:
        super().__init__(namespace)
        self.events_appended = Counter(
            "events_appended",
            "sigchain events stored, by type",
            ["type"],
            namespace=namespace,
            registry=self.registry,
        )
