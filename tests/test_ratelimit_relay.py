"""Rate limits through the relay: per client IP before the body is read, per token after routing.

Over the limit: 503 JSON naming the limit, Retry-After, CORS headers, metric reason rate_limit,
nothing forwarded. Under it: the request crosses byte for byte, as without a limit.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from tests.conftest import EU_TOKEN, US_TOKEN, RelayFactory
from tests.support.fakes import FakeUpstream
from tests.support.helpers import FORM, browser_form, event
from tests.support.metrics import sample

ORIGIN = {"Origin": "https://shop.example"}
# A rate so slow that no token comes back during the test: the burst alone decides.
SLOW = 0.01


def rejected(registry: CollectorRegistry) -> float:
    return sample(registry, "mixpanel_proxy_rejections_total", reason="rate_limit")


async def post_track(client: Any, token: str, headers: dict[str, str] | None = None) -> Any:
    return await client.post("/track/", data=browser_form([event(token)]),
                             headers={**FORM, **ORIGIN, **(headers or {})})


async def test_ip_limit_refuses_past_the_burst_with_retry_after(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    registry = CollectorRegistry()
    client = await make_relay({"limits": {"rate": {"ip_per_second": SLOW, "ip_burst": 3}}},
                              registry=registry)
    statuses = [(await post_track(client, US_TOKEN)).status for _ in range(3)]
    assert statuses == [200, 200, 200]
    over = await post_track(client, US_TOKEN)
    assert over.status == 503
    assert over.headers["Content-Type"].startswith("application/json")
    assert int(over.headers["Retry-After"]) >= 1
    assert over.headers["Access-Control-Allow-Origin"] == ORIGIN["Origin"]
    body = await over.json()
    assert body["status"] == 0 and "ip_per_second" in body["error"]
    assert len(upstreams["us"].received) == 3          # the refused one never left the relay
    assert rejected(registry) == 1


async def test_ip_limit_uses_the_resolved_client_ip(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    """Behind a trusted proxy, each forwarded client has its own bucket."""
    client = await make_relay({"server": {"trusted_proxies": ["127.0.0.1/32"]},
                               "limits": {"rate": {"ip_per_second": SLOW, "ip_burst": 1}}})
    first = await post_track(client, US_TOKEN, {"X-Forwarded-For": "203.0.113.7"})
    again = await post_track(client, US_TOKEN, {"X-Forwarded-For": "203.0.113.7"})
    other = await post_track(client, US_TOKEN, {"X-Forwarded-For": "198.51.100.9"})
    assert (first.status, again.status, other.status) == (200, 503, 200)
    assert len(upstreams["us"].received) == 2


async def test_ip_limit_refuses_before_reading_an_oversized_body(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    """The IP check comes first: a limited client gets 503 even for a body the relay would 413."""
    client = await make_relay({"limits": {"rate": {"ip_per_second": SLOW, "ip_burst": 1}}})
    assert (await post_track(client, US_TOKEN)).status == 200
    huge = await client.post("/track/", data=b"data=" + b"A" * (3 * 1024 * 1024), headers=FORM)
    assert huge.status == 503
    assert len(upstreams["us"].received) == 1


async def test_token_limit_is_per_token(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    registry = CollectorRegistry()
    client = await make_relay({"limits": {"rate": {"token_per_second": SLOW, "token_burst": 2}}},
                              projects=True, registry=registry)
    assert [(await post_track(client, US_TOKEN)).status for _ in range(2)] == [200, 200]
    over = await post_track(client, US_TOKEN)
    assert over.status == 503
    assert "token_per_second" in (await over.json())["error"]
    assert over.headers["Access-Control-Allow-Origin"] == ORIGIN["Origin"]
    assert (await post_track(client, EU_TOKEN)).status == 200     # another project: own bucket
    assert len(upstreams["us"].received) == 2
    assert len(upstreams["eu"].received) == 1
    assert rejected(registry) == 1


async def test_under_the_limit_requests_are_untouched(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay({"limits": {"rate": {"ip_per_second": 1000, "ip_burst": 50,
                                                   "token_per_second": 1000,
                                                   "token_burst": 50}}}, projects=True)
    body = browser_form([event(US_TOKEN)])
    for _ in range(20):
        response = await client.post("/track/", data=body, headers=FORM)
        assert response.status == 200
        assert "Retry-After" not in response.headers
    assert [received.body for received in upstreams["us"].received] == [body] * 20


async def test_no_limits_by_default(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    registry = CollectorRegistry()
    client = await make_relay(projects=True, registry=registry)
    statuses = {(await post_track(client, US_TOKEN)).status for _ in range(150)}
    assert statuses == {200}     # past both default bursts (100 per IP), no limit applies
    assert len(upstreams["us"].received) == 150
    assert rejected(registry) == 0
