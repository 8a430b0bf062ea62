"""deploy/grafana/relay-dashboard.json: it parses, it is laid out, and every query names a series
(and labels) that a live relay exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import US_TOKEN, RelayFactory
from tests.support.fakes import FakeUpstream
from tests.support.helpers import FORM, browser_form, event

DASHBOARD = Path(__file__).parent.parent / "deploy" / "grafana" / "relay-dashboard.json"
SELECTOR = re.compile(r"\b(mixpanel_proxy_\w+)(?:\{([^}]*)\})?")
MATCHER = re.compile(r"(\w+)\s*(?:=~|!=|!~|=)\s*\"")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",),
            "histogram": ("_bucket", "_sum", "_count", "_created")}


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def queries(data: dict[str, Any]) -> list[str]:
    found = [target["expr"] for panel in data["panels"] for target in panel.get("targets", [])]
    for variable in data["templating"]["list"]:
        if isinstance(variable.get("query"), dict):
            found.append(variable["query"]["query"])
    return found


async def exported(make_relay: RelayFactory, upstreams: dict[str, FakeUpstream],
                   tmp_path: Path) -> tuple[dict[str, str], dict[str, set[str]]]:
    """Sample names a live relay exports (name -> family type), and label names seen per name."""
    client = await make_relay({"spool": {"enabled": True, "path": str(tmp_path / "spool.db")},
                               "health": {"probe_interval": 0.05}})
    # Traffic that gives the labelled families samples: answered, refused, failed upstream.
    assert (await client.post("/track", data=browser_form([event(US_TOKEN)]),
                              headers=FORM)).status == 200
    await client.get("/nope")
    text = await (await client.get("/metrics")).text()
    names: dict[str, str] = {}
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for suffix in SUFFIXES[family.type]:
            names[family.name + suffix] = family.type
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return names, labels


async def test_every_query_names_an_exported_series_and_its_labels(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream], tmp_path: Path) -> None:
    names, labels = await exported(make_relay, upstreams, tmp_path)
    exprs = queries(dashboard())
    assert len(exprs) >= 25
    used: set[str] = set()
    for expr in exprs:
        assert expr.count("(") == expr.count(")"), expr
        selectors = SELECTOR.findall(expr)
        assert selectors, f"no relay series in {expr!r}"
        for name, matchers in selectors:
            assert name in names, f"{name} (in {expr!r}) is not exported by the relay"
            used.add(name)
            for label in MATCHER.findall(matchers):
                assert label in labels.get(name, {label}), f"{name} has no label {label!r}"
        grouped = {label.strip() for group in GROUPING.findall(expr)
                   for label in group.split(",") if label.strip()}
        known = set().union(*(labels.get(name, set()) for name, _ in selectors))
        if known:                       # the labels a sampled family really carries
            assert grouped <= known | {"le"}, f"{grouped - known} not labels of {expr!r}"
        for function in ("rate", "increase"):
            for name in re.findall(rf"\b{function}\((mixpanel_proxy_\w+)", expr):
                assert name.endswith(("_total", "_bucket")), f"{function}() of a gauge: {expr!r}"
        if "histogram_quantile" in expr:
            assert "_bucket" in expr and "le" in grouped
    # The list: rates, error ratios, latency quantiles, cache hit ratio, spool depth.
    for needed in ("mixpanel_proxy_requests_total", "mixpanel_proxy_rejections_total",
                   "mixpanel_proxy_upstream_seconds_bucket", "mixpanel_proxy_asset_cache_total",
                   "mixpanel_proxy_spool_entries", "mixpanel_proxy_region_up"):
        assert needed in used


def test_layout_is_grafana_shaped() -> None:
    data = dashboard()
    assert data["uid"] == "mixpanel-proxy-relay" and data["schemaVersion"] >= 36
    ids = [panel["id"] for panel in data["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in data["panels"]:
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24, panel["title"]
        area = {(x, y) for x in range(box["x"], box["x"] + box["w"])
                for y in range(box["y"], box["y"] + box["h"])}
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"], panel["title"]
            assert panel["fieldConfig"]["defaults"]["unit"]
