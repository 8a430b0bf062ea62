"""The Prometheus series of a fleet on Redis ([redis], the Redis spool and rate limit backends),
on the app's registry. Label values come from closed sets only."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from .metrics import Metrics

SPOOL_STORES = ("redis", "sqlite", "none")


class FleetMetrics:
    def __init__(self, metrics: Metrics) -> None:
        r = metrics.registry
        self.redis_up = Gauge(
            "mixpanel_proxy_redis_up", "1 when the latest Redis command answered, 0 when Redis "
            "was unreachable.", registry=r)
        self.redis_up.set(1)
        self.rate_fallback = Counter(
            "mixpanel_proxy_rate_limit_fallback", "Rate-limit checks answered by this process's "
            "local buckets because Redis was unreachable (the fleet limit failed open).",
            registry=r)
        self.spool_store = Gauge(
            "mixpanel_proxy_spool_store", "1 for where accepted requests go now: redis, sqlite "
            "(the local fallback while Redis is down) or none (503 while Redis is down).",
            ("store",), registry=r)
        self.spool_moved = Counter(
            "mixpanel_proxy_spool_fallback_moved", "Requests moved from the local SQLite "
            "fallback into the Redis spool once Redis answered again.", registry=r)
        self.spool_claimed = Counter(
            "mixpanel_proxy_spool_claimed", "Redis spool entries taken over from another relay "
            "process (stopped, or silent past [spool] claim_after) and sent again: possible "
            "duplicates, also counted in mixpanel_proxy_spool_redeliveries.", registry=r)

    def spool_goes_to(self, store: str) -> None:
        for name in SPOOL_STORES:
            self.spool_store.labels(name).set(1 if name == store else 0)
