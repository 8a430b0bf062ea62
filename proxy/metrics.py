"""Every Prometheus series the relay exports, on a registry injected per app (never the global).

Label values come only from closed sets: endpoint names, region names, status classes and
rejection reasons. Never a path, token, IP or query.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["Metrics", "CONTENT_TYPE_LATEST", "REJECTION_REASONS"]

REJECTION_REASONS = (
    "limit", "bad_payload", "unknown_token", "not_found", "method", "cors", "bad_request",
    "rate_limit",
)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def status_class(status: int) -> str:
    return f"{status // 100}xx"


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "mixpanel_proxy_requests", "Client requests answered, by endpoint, region and status "
            "class.", ("endpoint", "region", "status"), registry=r)
        self.rejections = Counter(
            "mixpanel_proxy_rejections", "Requests the relay refused itself, by reason.",
            ("reason",), registry=r)
        self.upstream_seconds = Histogram(
            "mixpanel_proxy_upstream_seconds", "Upstream request latency.",
            ("region", "endpoint"), buckets=_LATENCY_BUCKETS, registry=r)
        self.upstream_failures = Counter(
            "mixpanel_proxy_upstream_failures", "Upstream attempts that failed, by kind "
            "(connect, timeout, status_5xx, status_429, redirect).", ("region", "kind"), registry=r)
        self.request_bytes = Counter(
            "mixpanel_proxy_request_bytes", "Request body bytes received from clients.",
            ("endpoint",), registry=r)
        self.upstream_bytes = Counter(
            "mixpanel_proxy_upstream_bytes", "Request body bytes sent upstream (after any "
            "re-encoding).", ("endpoint", "region"), registry=r)
        self.split_batches = Counter(
            "mixpanel_proxy_split_batches", "Batches split across regions.", registry=r)
        self.in_flight = Gauge(
            "mixpanel_proxy_in_flight_requests", "Client requests being handled.", registry=r)
        self._requests_children: dict[tuple[str, str, str], Counter] = {}
        for reason in REJECTION_REASONS:
            self.rejections.labels(reason)   # exported at 0 from the start: rates need a base

    def count_request(self, endpoint: str, region: str, status: int) -> None:
        key = (endpoint, region, status_class(status))
        child = self._requests_children.get(key)
        if child is None:
            child = self._requests_children[key] = self.requests.labels(*key)
        child.inc()

    def reject(self, reason: str) -> None:
        self.rejections.labels(reason).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
