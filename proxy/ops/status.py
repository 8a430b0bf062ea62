"""The operator's status page (`GET /status`): one self-contained HTML document, no assets.

Everything on it comes from what the relay already keeps: region health, the metrics registry
(request totals, upstream latency, rejections, asset-cache and spool series), a rate window
sampled in the background, and optional panels that components register (the asset cache lists
its contents with `board.add_panel("Asset cache", rows)`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from html import escape

from prometheus_client import Metric

from .. import __version__
from ..config import Config
from . import multiproc
from .health import Readiness, RegionState
from .metrics import Metrics

__all__ = ["CSP", "Rows", "StatusBoard", "age_text", "size_text"]

Rows = Sequence[Mapping[str, object]]
# The page needs nothing from anywhere: the browser is told so, and refuses any fetch.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_RATE_WINDOW = 13          # samples kept; at a 5 s interval, rates cover the last minute
# Components with a section of their own: title, series prefix, and whether the config has it on.
_SECTIONS: tuple[tuple[str, str, Callable[[Config], bool]], ...] = (
    ("Asset cache", "mixpanel_proxy_asset", lambda config: config.assets.enabled),
    ("Spool", "mixpanel_proxy_spool", lambda config: config.spool.enabled),
)


class StatusBoard:
    def __init__(self, config: Config, metrics: Metrics, readiness: Readiness,
                 clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._metrics = metrics
        self._readiness = readiness
        self._clock = clock
        self._started = clock()
        self._samples: deque[tuple[float, dict[str, float]]] = deque(maxlen=_RATE_WINDOW)
        self._panels: dict[str, Callable[[], Rows]] = {}

    def add_panel(self, title: str, rows: Callable[[], Rows]) -> None:
        """Show a component's table (e.g. the asset cache's name, version, age, variants)."""
        self._panels[title] = rows

    def sample(self) -> None:
        """Remember request totals by endpoint; called every few seconds by the app."""
        self._samples.append((self._clock(), self._request_totals()))

    def rates(self) -> dict[str, float]:
        """Requests per second by endpoint over the sampled window (empty until two samples)."""
        if len(self._samples) < 2:
            return {}
        (first_at, first), (last_at, last) = self._samples[0], self._samples[-1]
        span = last_at - first_at
        if span <= 0:
            return {}
        return {name: (total - first.get(name, 0.0)) / span for name, total in last.items()}

    async def render(self) -> str:
        ready, verdict = await self._readiness.evaluate()
        families = {metric.name: metric for metric in self._metrics.families()}
        parts = [
            _head(ready),
            self._summary(ready, verdict, families),
            self._regions(families),
            self._requests(families),
            _rejections(families),
        ]
        for title, prefix, enabled in _SECTIONS:
            parts.append(self._component(title, prefix, families, enabled(self._config)))
        known = {title for title, _, _ in _SECTIONS}
        parts.extend(self._component(title, "", {}, True) for title in self._panels
                     if title not in known)
        parts.append("</main></body></html>\n")
        return "".join(parts)

    def _request_totals(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        # Through `families`, as the page reads: every worker's requests (multiprocess mode),
        # the tally's pending updates applied.
        requests = [family for family in self._metrics.families()
                    if family.name == "mixpanel_proxy_requests"]
        for metric in requests:
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    endpoint = sample.labels["endpoint"]
                    totals[endpoint] = totals.get(endpoint, 0.0) + sample.value
        return totals

    def _summary(self, ready: bool, verdict: Mapping[str, object],
                 families: Mapping[str, Metric]) -> str:
        # With the supervisor (multiprocess mode) the relay's uptime is the supervisor's, which a
        # reload does not reset; this worker's own start would be the last reload.
        started = families.get("process_start_time_seconds") if multiproc.active() else None
        since = started.samples[0].value if started and started.samples else self._started
        uptime = self._clock() - since
        failed = ", ".join(str(name) for name in _as_list(verdict.get("failed")))
        rows = [("version", __version__), ("config", self._config.source),
                ("uptime", age_text(uptime)), ("ready", "yes" if ready else f"no ({failed})"),
                ("in flight", _gauge(families.get("mixpanel_proxy_in_flight_requests")))]
        body = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
        state = "ready" if ready else "not-ready"
        return (f'<section id="summary" data-state="{state}"><h2>Relay</h2>'
                f"<table>{body}</table></section>")

    def _regions(self, families: Mapping[str, Metric]) -> str:
        latency = _latency_by_region(families.get("mixpanel_proxy_upstream_seconds"))
        rows = []
        for state in self._readiness.health.states():
            verdict = self._readiness.health.verdict(state.name)
            health = "up" if verdict.ok else "down"
            mean, p95, count = latency.get(state.name, (None, None, 0))
            url = self._config.regions[state.name].url
            rows.append(
                f'<tr data-region="{escape(state.name)}" data-health="{health}">'
                f"<td>{escape(state.name)}</td><td>{escape(str(url))}</td>"
                f'<td class="{health}">{health}</td><td>{escape(verdict.detail)}</td>'
                f"<td>{_ms(state.latency)}</td><td>{_ms(mean)}</td><td>{_ms(p95, '≤ ')}</td>"
                f"<td>{count:g}</td><td>{_last(state, self._clock())}</td></tr>")
        head = _header_row(("region", "upstream", "health", "detail", "latency (smoothed)",
                            "mean", "p95", "exchanges", "last failure"))
        return (f'<section id="regions"><h2>Regions</h2><table>{head}{"".join(rows)}</table>'
                "</section>")

    def _requests(self, families: Mapping[str, Metric]) -> str:
        counts: dict[str, dict[str, float]] = {}
        metric = families.get("mixpanel_proxy_requests")
        for sample in metric.samples if metric else ():
            if sample.name.endswith("_total"):
                by_status = counts.setdefault(sample.labels["endpoint"], {})
                status = sample.labels["status"]
                by_status[status] = by_status.get(status, 0.0) + sample.value
        rates = self.rates()
        stored = _stored_by_endpoint(families.get("mixpanel_proxy_spool_stored"))
        rows = []
        for endpoint in sorted(counts):
            by_status = counts[endpoint]
            cells = "".join(f"<td>{by_status.get(cls, 0):g}</td>" for cls in ("2xx", "4xx", "5xx"))
            rate = f"{rates[endpoint]:.2f}" if endpoint in rates else "–"
            rows.append(f'<tr data-endpoint="{escape(endpoint)}"><td>{escape(endpoint)}</td>'
                        f"<td>{sum(by_status.values()):g}</td>{cells}<td>{rate}</td>"
                        f"<td>{stored.get(endpoint, 0):g}</td></tr>")
        if not rows:
            rows.append('<tr><td colspan="7" class="empty">no requests yet</td></tr>')
        # "stored": answered 2xx by the spool, not yet by Mixpanel (a drainer delivers them).
        head = _header_row(("endpoint", "answered", "2xx", "4xx", "5xx", "per second (1 min)",
                            "stored (spool)"))
        return (f'<section id="requests"><h2>Requests</h2><table>{head}{"".join(rows)}'
                "</table></section>")

    def _component(self, title: str, prefix: str, families: Mapping[str, Metric],
                   enabled: bool) -> str:
        section_id = title.lower().replace(" ", "-")
        parts = [f'<section id="{section_id}" data-enabled="{str(enabled).lower()}">'
                 f"<h2>{escape(title)}</h2>"]
        if not enabled:
            return "".join(parts) + '<p class="empty">not enabled in the config</p></section>'
        panel = self._panels.get(title)
        series = _series_rows(families, prefix) if prefix else []
        if panel is not None:
            parts.append(_table(panel(), "contents"))
        if series:
            parts.append(_table(series, "series"))
        parts.append("</section>")
        return "".join(parts)


def size_text(count: int) -> str:
    return f"{count} B" if count < 1024 else f"{count / 1024:.1f} KiB"


def _head(ready: bool) -> str:
    title = "mixpanel-proxy status: " + ("ready" if ready else "NOT READY")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta http-equiv="refresh" content="15"><title>{escape(title)}</title><style>'
        "body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1b1b1b;background:#fafafa}"
        "h1{font-size:1.3rem}h2{font-size:1.05rem;margin:1.4rem 0 .4rem}"
        "table{border-collapse:collapse;background:#fff}"
        "td,th{border:1px solid #ddd;padding:.25rem .6rem;text-align:left}"
        "th{background:#f0f0f0}.up{color:#11772b;font-weight:600}"
        ".down{color:#b3261e;font-weight:600}.empty{color:#777;font-style:italic}"
        f"</style></head><body><main><h1>{escape(title)}</h1>"
    )


def _rejections(families: Mapping[str, Metric]) -> str:
    metric = families.get("mixpanel_proxy_rejections")
    rows = [{"reason": s.labels["reason"], "count": f"{s.value:g}"}
            for s in (metric.samples if metric else ()) if s.name.endswith("_total") and s.value]
    table = _table(rows, "rejections") if rows else '<p class="empty">none</p>'
    return f'<section id="rejections"><h2>Rejections</h2>{table}</section>'


def _series_rows(families: Mapping[str, Metric], prefix: str) -> list[dict[str, object]]:
    """One row per series family: its samples as `label=value` pairs (or the bare value)."""
    rows: list[dict[str, object]] = []
    for name in sorted(families):
        if not name.startswith(prefix):
            continue
        values = [f"{_label_text(sample.labels)}{sample.value:g}"
                  for sample in families[name].samples if not sample.name.endswith("_created")]
        if values:
            rows.append({"series": name.removeprefix("mixpanel_proxy_"),
                         "values": " · ".join(values)})
    return rows


def _label_text(labels: Mapping[str, str]) -> str:
    return "".join(f"{value}=" for _, value in sorted(labels.items()))


def _table(rows: Rows, css_class: str) -> str:
    if not rows:
        return '<p class="empty">empty</p>'
    columns = list(rows[0])
    body = "".join("<tr>" + "".join(f"<td>{escape(str(row.get(c, '')))}</td>" for c in columns)
                   + "</tr>" for row in rows)
    return f'<table class="{css_class}">{_header_row(columns)}{body}</table>'


def _header_row(columns: Iterable[str]) -> str:
    return "<tr>" + "".join(f"<th>{escape(c)}</th>" for c in columns) + "</tr>"


def _latency_by_region(
        metric: Metric | None) -> dict[str, tuple[float | None, float | None, float]]:
    """Mean and a p95 upper bound (from the histogram buckets) per region, over all endpoints."""
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    buckets: dict[str, dict[float, float]] = {}
    for sample in metric.samples if metric else ():
        region = sample.labels.get("region", "")
        if sample.name.endswith("_sum"):
            sums[region] = sums.get(region, 0.0) + sample.value
        elif sample.name.endswith("_count"):
            counts[region] = counts.get(region, 0.0) + sample.value
        elif sample.name.endswith("_bucket"):
            bound = float(sample.labels["le"])
            per_region = buckets.setdefault(region, {})
            per_region[bound] = per_region.get(bound, 0.0) + sample.value
    result: dict[str, tuple[float | None, float | None, float]] = {}
    for region, count in counts.items():
        if count:
            result[region] = (sums[region] / count, _bound(buckets[region], 0.95 * count), count)
    return result


def _bound(cumulative: Mapping[float, float], wanted: float) -> float | None:
    for bound in sorted(cumulative):
        if cumulative[bound] >= wanted:
            return bound if bound != float("inf") else None
    return None


def _ms(seconds: float | None, prefix: str = "") -> str:
    return "–" if seconds is None else f"{prefix}{seconds * 1000:.1f} ms"


def age_text(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _last(state: RegionState, now: float) -> str:
    if state.last_failure is None:
        return "never"
    return escape(f"{age_text(now - state.last_failure)} ago: {state.last_error}")


def _gauge(metric: Metric | None) -> str:
    return f"{metric.samples[0].value:g}" if metric and metric.samples else "–"


def _as_list(value: object) -> list[object]:
    return list(value) if isinstance(value, list) else []


def _stored_by_endpoint(metric: Metric | None) -> dict[str, float]:
    stored: dict[str, float] = {}
    for sample in metric.samples if metric else ():
        if sample.name.endswith("_total"):
            endpoint = sample.labels["endpoint"]
            stored[endpoint] = stored.get(endpoint, 0.0) + sample.value
    return stored
