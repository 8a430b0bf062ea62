"""/metrics after known traffic: exact sample values, read over HTTP from the exposition."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from proxy.app import METRICS_KEY
from proxy.ops.routes import OPS_LISTENER_KEY
from tests.conftest import EU_TOKEN, US_TOKEN, RelayFactory
from tests.support.fakes import FakeUpstream
from tests.support.helpers import FORM, browser_form, event
from tests.support.metrics import Samples, sample, scrape, value

STRICT = {"routing": {"strict": True}, "cors": {"allowed_origins": ["https://shop.example"]},
          "limits": {"body": {"track": 400}}}


async def post(client: TestClient[Any, Any], body: bytes, **headers: str) -> tuple[int, bytes]:
    response = await client.post("/track", data=body, headers={**FORM, **headers})
    return response.status, await response.read()


def total(samples: Samples, name: str, **labels: str) -> float:
    found = value(samples, name, **labels)
    assert found is not None, f"{name}{labels} is not exported"
    return found


async def test_known_traffic_gives_exact_samples(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay(STRICT, projects=True)
    us_body, eu_body = browser_form([event(US_TOKEN)]), browser_form([event(EU_TOKEN)])
    unknown_body, bad_body = browser_form([event("tok_nobody")]), b"data=%21%21not-base64"
    answers = [await post(client, us_body) for _ in range(3)]
    answers.append(await post(client, eu_body))
    assert [status for status, _ in answers] == [200, 200, 200, 200]
    refused = [
        await post(client, b"data=" + b"A" * 500),                       # limit
        await post(client, us_body, Origin="https://evil.example"),      # cors
        await post(client, unknown_body),                                # unknown_token
        await post(client, bad_body),                                    # bad_payload
    ]
    assert [status for status, _ in refused] == [413, 403, 403, 400]
    not_found = await client.get("/no/such/thing")
    assert not_found.status == 404
    none_bytes = len(await not_found.read())

    samples = await scrape(client)
    assert total(samples, "mixpanel_proxy_requests_total",
                 endpoint="track", region="us", status="2xx") == 3
    assert total(samples, "mixpanel_proxy_requests_total",
                 endpoint="track", region="eu", status="2xx") == 1
    for reason, count in {"limit": 1, "cors": 1, "unknown_token": 1, "bad_payload": 1,
                          "not_found": 1, "rate_limit": 0, "method": 0}.items():
        assert total(samples, "mixpanel_proxy_rejections_total", reason=reason) == count, reason
    # Bytes in: every body the relay read (the CORS refusal is never read; the over-limit body
    # is, since a batch of valid records over the limit would be sent in parts).
    read = 3 * len(us_body) + len(eu_body) + len(unknown_body) + len(bad_body) + 505
    assert total(samples, "mixpanel_proxy_request_bytes_total", endpoint="track") == read
    # Bytes out to the upstream: exactly what the fakes received.
    for region in ("us", "eu"):
        wire = sum(len(got.body) for got in upstreams[region].received)
        assert total(samples, "mixpanel_proxy_upstream_bytes_total",
                     endpoint="track", region=region) == wire
        assert total(samples, "mixpanel_proxy_upstream_seconds_count",
                     region=region, endpoint="track") == len(upstreams[region].received)
        assert total(samples, "mixpanel_proxy_upstream_response_bytes_total",
                     endpoint="track", region=region) == len(upstreams[region].received)  # "1"
    assert upstreams["in"].received == []
    answered = sum(len(body) for _, body in answers + refused)
    assert total(samples, "mixpanel_proxy_response_bytes_total", endpoint="track") == answered
    assert total(samples, "mixpanel_proxy_response_bytes_total", endpoint="none") == none_bytes
    assert total(samples, "mixpanel_proxy_in_flight_requests") == 0
    assert total(samples, "mixpanel_proxy_region_up", region="us") == 1
    assert total(samples, "mixpanel_proxy_config_reloads_total", result="ok") == 0


async def test_labels_never_carry_client_text(make_relay: RelayFactory) -> None:
    client = await make_relay(projects=True)
    await post(client, browser_form([event(US_TOKEN)]))
    await client.get("/track/../../etc/passwd?token=secret-query")
    text = await (await client.get("/metrics")).text()
    for leaked in (US_TOKEN, "passwd", "secret-query", "127.0.0.1"):
        assert leaked not in text


async def test_upstream_failure_is_counted_by_kind(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay(projects=True)
    assert upstreams["eu"].server is not None
    await upstreams["eu"].server.close()
    status, _ = await post(client, browser_form([event(EU_TOKEN)]))
    assert status == 503
    assert (await post(client, browser_form([event(US_TOKEN)])))[0] == 200
    samples = await scrape(client)
    assert total(samples, "mixpanel_proxy_upstream_failures_total",
                 region="eu", kind="connect") == 1
    assert total(samples, "mixpanel_proxy_requests_total",
                 endpoint="track", region="eu", status="5xx") == 1
    assert total(samples, "mixpanel_proxy_region_up", region="eu") == 0
    assert total(samples, "mixpanel_proxy_region_up", region="us") == 1


async def test_scrapes_only_from_allowed_peers(make_relay: RelayFactory) -> None:
    client = await make_relay({"metrics": {"allow": ["10.0.0.0/8"]}})
    for path in ("/metrics", "/status"):
        response = await client.get(path)
        assert response.status == 403      # refused, said as such: not a typo's 404
        assert await response.json() == {
            "status": 0, "error": f"{path} is served only to [metrics] allow addresses"}
    # Both refusals were counted (read through the registry: this relay lets nobody scrape).
    registry = client.app[METRICS_KEY].registry
    assert sample(registry, "mixpanel_proxy_rejections_total", reason="ops_refused") == 2


async def test_separate_listener_serves_scrapes_instead_of_the_main_one(
        make_relay: RelayFactory) -> None:
    client = await make_relay({"metrics": {"listen": "127.0.0.1:0"}})
    assert (await client.get("/metrics")).status == 404     # the relay's own "no such endpoint"
    assert (await client.get("/healthz")).status == 200
    ops_url = client.app[OPS_LISTENER_KEY].url
    await post(client, browser_form([event(US_TOKEN)]))
    response = await client.session.get(f"{ops_url}/metrics")
    assert response.status == 200
    text = await response.text()
    assert 'mixpanel_proxy_requests_total{endpoint="track",region="us",status="2xx"} 1.0' in text
    assert 'mixpanel_proxy_rejections_total{reason="not_found"} 1.0' in text
    status_page = await client.session.get(f"{ops_url}/status")
    assert status_page.status == 200
    assert "text/html" in status_page.headers["Content-Type"]
