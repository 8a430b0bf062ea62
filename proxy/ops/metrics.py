"""Every Prometheus series the relay exports, on a registry injected per app (never the global).

Label values come only from closed sets: endpoint names, region names, status classes and
rejection reasons. Never a path, token, IP or query.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import Metric

from . import multiproc
from .latency import LatencyHistogram, LatencySeries
from .tally import Tally, TallyFirst

T = TypeVar("T", Counter, Gauge)

__all__ = ["Metrics", "CONTENT_TYPE_LATEST", "REJECTION_REASONS"]

REJECTION_REASONS = (
    "limit", "bad_payload", "unknown_token", "not_found", "method", "cors", "bad_request",
    "rate_limit", "mixed_import", "ops_refused",
)
ASSET_CACHE_RESULTS = (
    "hit", "miss", "expired", "coalesced", "stale", "stale_error", "revalidated", "updated",
    "error",
)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def status_class(status: int) -> str:
    return f"{status // 100}xx"


EDGE_HANDOVER_REASONS = ("target", "method", "framing")


@dataclass(slots=True)
class RouteMeters:
    upstream_bytes: Counter
    upstream_seconds: LatencySeries
    upstream_response_bytes: Counter


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # The request path's updates, applied together (tally.py); any read of the registry
        # applies them first, so TallyFirst goes in before any metric.
        self.tally = Tally()
        r.register(TallyFirst(self.tally))
        # How each gauge combines over workers (multiproc.Publisher), noted as it is made.
        modes: dict[str, str] = {}

        def gauge(name: str, documentation: str, labels: tuple[str, ...] = (), *,
                  multiprocess_mode: str) -> Gauge:
            modes[name] = multiprocess_mode
            return Gauge(name, documentation, labels, registry=r,
                         multiprocess_mode=multiprocess_mode)  # type: ignore[arg-type]

        if not multiproc.active():   # in multiprocess mode the scrape adds these (multiproc.py)
            ProcessCollector(registry=r)
            r.register(multiproc.BuildInfo())
        self.requests = Counter(
            "mixpanel_proxy_requests", "Client requests answered, by endpoint, region and status "
            "class.", ("endpoint", "region", "status"), registry=r)
        self.rejections = Counter(
            "mixpanel_proxy_rejections", "Requests the relay refused itself, by reason.",
            ("reason",), registry=r)
        self.upstream_seconds = LatencyHistogram(     # observed per exchange: see latency.py
            "mixpanel_proxy_upstream_seconds", "Upstream request latency.",
            ("region", "endpoint"), _LATENCY_BUCKETS, r)
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
        self.rewritten = Counter(
            "mixpanel_proxy_rewritten_payloads", "Requests whose payload the relay re-encoded "
            "(a batch split across regions, or changed by [privacy] / [payload]).",
            ("endpoint",), registry=r)
        self.telemetry = Counter(
            "mixpanel_proxy_telemetry_records", "Records under Mixpanel's own SDK telemetry "
            "tokens that a strict relay answered itself and did not forward.", ("endpoint",),
            registry=r)
        self.in_flight = gauge(
            "mixpanel_proxy_in_flight_requests", "Client requests being handled.",
            multiprocess_mode="livesum")
        # The durable spool (issue 6, proxy/spool/). Each worker follows the one spool file
        # (refreshed every poll_interval): over workers the gauges combine as the max, the
        # freshest count, the same whichever worker a scrape reaches.
        self.spool_entries = gauge(
            "mixpanel_proxy_spool_entries", "Requests stored and waiting to be sent upstream.",
            ("region",), multiprocess_mode="livemax")
        self.spool_bytes = gauge(
            "mixpanel_proxy_spool_bytes", "Bytes held by the spool, by kind (live: waiting; "
            "dead: dead letters). Their sum is bounded by [spool] max_bytes.", ("kind",),
            multiprocess_mode="livemax")
        self.spool_oldest_age = gauge(
            "mixpanel_proxy_spool_oldest_age_seconds", "Age of the oldest waiting request.",
            ("region",), multiprocess_mode="livemax")
        self.spool_stored = Counter(
            "mixpanel_proxy_spool_stored", "Requests stored (durably) by the spool.",
            ("region", "endpoint"), registry=r)
        self.spool_delivered = Counter(
            "mixpanel_proxy_spool_delivered", "Stored requests the upstream accepted.",
            ("region",), registry=r)
        self.spool_dead_lettered = Counter(
            "mixpanel_proxy_spool_dead_lettered", "Stored requests moved to dead letter, by cause "
            "(upstream_4xx, upstream_refused, track_window, other_status).", ("region", "cause"),
            registry=r)
        self.spool_dead_entries = gauge(
            "mixpanel_proxy_spool_dead_entries", "Requests in the dead-letter table.",
            multiprocess_mode="livemax")
        self.spool_refused = Counter(
            "mixpanel_proxy_spool_refused", "Requests the spool could not take (full, "
            "write_error): the client got 503.", ("reason",), registry=r)
        self.spool_redeliveries = Counter(
            "mixpanel_proxy_spool_redeliveries", "Stored requests sent again after a stop "
            "interrupted their delivery: possible duplicates at Mixpanel.", registry=r)
        # Observability (issue 7): answers in both directions, region health, config reloads.
        self.response_bytes = Counter(
            "mixpanel_proxy_response_bytes", "Response body bytes sent to clients, by endpoint "
            "(assets: the asset relay; none: refused before an endpoint matched).",
            ("endpoint",), registry=r)
        self.upstream_response_bytes = Counter(
            "mixpanel_proxy_upstream_response_bytes", "Response body bytes received from the "
            "upstream.", ("endpoint", "region"), registry=r)
        self.region_up = gauge(
            "mixpanel_proxy_region_up", "1 when the region's latest upstream exchange or probe "
            "got an answer, 0 when it failed.", ("region",), multiprocess_mode="livemostrecent")
        self.region_last_success = gauge(
            "mixpanel_proxy_region_last_success_timestamp_seconds", "Unix time of the region's "
            "latest successful upstream exchange or probe.", ("region",), multiprocess_mode="max")
        self.probes = Counter(
            "mixpanel_proxy_region_probes", "Background reachability probes, by region and "
            "result (ok, failed).", ("region", "result"), registry=r)
        self.ready = gauge(
            "mixpanel_proxy_ready", "1 when /readyz answers ready at its latest evaluation.",
            multiprocess_mode="livemin")
        self.config_reloads = Counter(
            "mixpanel_proxy_config_reloads", "Config reloads, by result (ok, error).",
            ("result",), registry=r)
        self.config_loaded = gauge(
            "mixpanel_proxy_config_loaded_timestamp_seconds", "Unix time the running config "
            "was loaded.", multiprocess_mode="max")
        for result in ("ok", "error"):
            self.config_reloads.labels(result)
        self.config_loaded.set_to_current_time()
        # Asset relay (issue 3): bundle cache outcomes, refused CDN answers, memory held.
        self.asset_cache = Counter(
            "mixpanel_proxy_asset_cache", "Bundle lookups by result (hit, miss, expired, "
            "coalesced, stale, stale_error, revalidated, updated, error).", ("result",),
            registry=r)
        self.asset_cdn_failures = Counter(
            "mixpanel_proxy_asset_cdn_failures", "CDN answers refused as broken or failed, by "
            "kind (status, content_type, html, truncated, too_large, empty, encoding, connect, "
            "timeout, protocol).", ("kind",), registry=r)
        self.asset_cache_bytes = gauge(
            "mixpanel_proxy_asset_cache_bytes", "Bytes the bundle cache holds, every variant "
            "counted.", multiprocess_mode="livesum")
        self.asset_cache_entries = gauge(
            "mixpanel_proxy_asset_cache_entries", "Bundle versions the cache holds.",
            multiprocess_mode="livesum")
        for result in ASSET_CACHE_RESULTS:
            self.asset_cache.labels(result)
        # The lean edge (server/edge/): connections handed to aiohttp, by what made the request
        # not plain (target: not an SDK endpoint; method; framing: chunked, Expect, Upgrade or a
        # body past its limit). Heads the edge cannot serve it refuses itself, in JSON.
        self.edge_handovers = Counter(
            "mixpanel_proxy_edge_handovers", "Connections the lean edge handed to aiohttp, by "
            "reason (target, method, framing).", ("reason",), registry=r)
        for reason in EDGE_HANDOVER_REASONS:
            self.edge_handovers.labels(reason)
        self._publisher = multiproc.Publisher(self.registry, modes) \
            if multiproc.active() else None
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._routes: dict[tuple[str, str], RouteMeters] = {}
        for reason in REJECTION_REASONS:
            self.rejections.labels(reason)   # exported at 0 from the start: rates need a base

    def count_request(self, endpoint: str, region: str, status: int) -> None:
        self.tally.add(self.child(self.requests, endpoint, region, status_class(status)))

    def route(self, endpoint: str, region: str) -> RouteMeters:
        """The per-exchange series of one endpoint in one region, looked up once."""
        meters = self._routes.get((endpoint, region))
        if meters is None:
            meters = self._routes[(endpoint, region)] = RouteMeters(
                self.upstream_bytes.labels(endpoint, region),
                self.upstream_seconds.labels(region, endpoint),
                self.upstream_response_bytes.labels(endpoint, region))
        return meters

    def child(self, metric: T, *labels: str) -> T:
        """`metric.labels(*labels)`, looked up once: prometheus_client validates the labels on
        every call, a cost the per-request path should not pay. Labels come from closed sets,
        so the cache stays small."""
        key = (id(metric), labels)
        found: Any = self._children.get(key)
        if found is None:
            found = metric.labels(*labels)
            self._children[key] = found
        return cast(T, found)

    def reject(self, reason: str) -> None:
        self.rejections.labels(reason).inc()

    def exposition(self) -> bytes:
        """The whole relay's view: every worker's, when several serve (ops/multiproc.py)."""
        self.tally.flush()
        if self._publisher is not None:
            self._publisher.publish()     # this worker exact, the others at most a second old
            return generate_latest(multiproc.aggregated_registry())
        return generate_latest(self.registry)

    def families(self) -> Iterable[Metric]:
        """The series a page shows, with the same scope as `exposition`."""
        self.tally.flush()
        if self._publisher is not None:
            self._publisher.publish()
        return multiproc.families(self.registry)

    def publish(self) -> None:
        """Copy this process's values to the shared directory (multiprocess mode only)."""
        self.tally.flush()
        if self._publisher is not None:
            self._publisher.publish()
