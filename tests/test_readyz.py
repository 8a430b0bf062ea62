"""/readyz: ready with the config loaded and the spool writable; regions reported, and required
only when `[health] require_regions` asks (see tests/test_ops_private.py for the default)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from proxy.ops.health import RegionHealth
from proxy.ops.metrics import Metrics
from proxy.ops.routes import READINESS_KEY
from tests.conftest import EU_TOKEN, IN_TOKEN, US_TOKEN, RelayFactory
from tests.support.fakes import FakeUpstream
from tests.support.helpers import FORM, browser_form, event
from tests.support.waits import eventually

ALL = {"regions": ["us", "eu", "in"], "require_regions": True}
PROBING = {"health": {"probe_interval": 0.05, "probe_timeout": 0.5, "max_age": 0, **ALL}}
TRAFFIC_ONLY = {"health": {"probe_interval": 0, "max_age": 0, **ALL}}
TOKENS = {"us": US_TOKEN, "eu": EU_TOKEN, "in": IN_TOKEN}


async def readyz(client: TestClient[Any, Any]) -> tuple[int, dict[str, Any]]:
    response = await client.get("/readyz")
    body: dict[str, Any] = await response.json()
    return response.status, body


async def wait_for(client: TestClient[Any, Any], ready: bool) -> dict[str, Any]:
    """Poll /readyz (as a load balancer would) until it says `ready`."""
    async def answer() -> dict[str, Any] | None:
        status, body = await readyz(client)
        return body if (status == 200) == ready else None

    body: dict[str, Any] = await eventually(answer, f"/readyz to say ready={ready}", timeout=10)
    assert body["ready"] is ready
    return body


async def send(client: TestClient[Any, Any], region: str) -> int:
    response = await client.post("/track", data=browser_form([event(TOKENS[region])]),
                                 headers=FORM)
    return response.status


async def test_flips_with_a_region_and_back_through_probes(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay(PROBING)
    body = await wait_for(client, ready=True)
    assert body["failed"] == []
    assert set(body["checks"]) == {"config", "region.us", "region.eu", "region.in"}
    # The probes crossed the wire: a plain GET of the probe path, nothing else.
    probe = upstreams["eu"].received[0]
    assert (probe.method, probe.path, probe.body) == ("GET", "/", b"")

    await upstreams["eu"].go_down()
    body = await wait_for(client, ready=False)
    assert body["failed"] == ["region.eu"]
    assert body["checks"]["region.eu"]["ok"] is False
    assert "cannot connect" in body["checks"]["region.eu"]["detail"]
    assert body["checks"]["region.us"]["ok"] is True

    await upstreams["eu"].come_back()
    body = await wait_for(client, ready=True)
    assert body["failed"] == []
    metrics = (await client.get("/metrics")).text
    text = await metrics()
    assert 'mixpanel_proxy_region_up{region="eu"} 1.0' in text
    assert 'mixpanel_proxy_region_probes_total{region="eu",result="failed"}' in text


async def test_flips_with_real_traffic_alone(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay(TRAFFIC_ONLY, projects=True)
    status, body = await readyz(client)
    assert status == 503
    assert body["failed"] == ["region.us", "region.eu", "region.in"]
    assert body["checks"]["region.us"]["detail"] == "not probed yet"
    for region in ("us", "eu", "in"):
        assert await send(client, region) == 200
    await wait_for(client, ready=True)

    await upstreams["in"].go_down()
    assert await send(client, "in") == 503
    status, body = await readyz(client)
    assert status == 503
    assert body["failed"] == ["region.in"]
    await upstreams["in"].come_back()
    assert await send(client, "in") == 200
    await wait_for(client, ready=True)


async def test_an_upstream_5xx_counts_as_not_serving(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay({**TRAFFIC_ONLY, "health": {"probe_interval": 0, "max_age": 0,
                                                          "regions": ["us"],
                                                          "require_regions": True}})
    upstreams["us"].answer(502, b"bad gateway")
    assert await send(client, "us") == 503
    status, body = await readyz(client)
    assert (status, body["failed"]) == (503, ["region.us"])
    assert body["checks"]["region.us"]["detail"].endswith("answered 502")
    upstreams["us"].answer(200)
    assert await send(client, "us") == 200
    assert (await readyz(client))[0] == 200


async def test_spool_directory_must_take_writes(
        make_relay: RelayFactory, tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    config = {"health": {"probe_interval": 0, "max_age": 0, "regions": []},
              "spool": {"enabled": True, "path": str(spool_dir / "spool.db")}}
    client = await make_relay(config)
    status, body = await readyz(client)
    assert (status, body["failed"]) == (200, [])
    assert body["checks"]["spool"] == {"ok": True, "detail": f"{spool_dir} is writable"}
    spool_dir.rename(tmp_path / "gone")          # the volume went away under the relay
    status, body = await readyz(client)
    assert (status, body["failed"]) == (503, ["spool"])
    assert "not writable" in body["checks"]["spool"]["detail"]
    leftovers = [path.name for path in (tmp_path / "gone").iterdir()]
    assert not [name for name in leftovers if name.startswith(".readyz-")]


async def test_registered_checks_join_and_a_raising_one_fails_cleanly(
        make_relay: RelayFactory) -> None:
    client = await make_relay({"health": {"probe_interval": 0, "regions": []}})

    def broken() -> Any:
        raise OSError("disk on fire")

    client.app[READINESS_KEY].add_check("replica", broken)
    status, body = await readyz(client)
    assert (status, body["failed"]) == (503, ["replica"])
    assert body["checks"]["replica"]["detail"] == "check raised OSError: disk on fire"


async def test_other_peers_learn_only_the_verdict(make_relay: RelayFactory) -> None:
    client = await make_relay({**TRAFFIC_ONLY, "metrics": {"allow": ["10.0.0.0/8"]}})
    status, body = await readyz(client)
    assert status == 503
    regions = ["region.us", "region.eu", "region.in"]
    assert body == {"ready": False, "failed": regions, "unreachable": ["us", "eu", "in"]}
    liveness = await client.get("/healthz")
    assert (liveness.status, await liveness.json()) == (200, {"status": "ok"})


def test_a_quiet_region_goes_stale_after_max_age() -> None:
    now = [1000.0]
    health = RegionHealth(["us"], Metrics(CollectorRegistry()), max_age=60,
                          clock=lambda: now[0])
    health.succeeded("us", 0.02)
    now[0] += 60
    assert health.verdict("us").ok
    now[0] += 1
    verdict = health.verdict("us")
    assert not verdict.ok
    assert verdict.detail == "no answer for 61 s (max_age 60 s)"
    assert health.needs_probe("us", interval=15)
