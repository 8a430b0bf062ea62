"""The real `mixpanel` PyPI SDK, pointed at the relay, for projects in two regions."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from mixpanel import BufferedConsumer, Consumer, Mixpanel
from mixpanel.credentials import ServiceAccountCredentials

from tests.conftest import EU_TOKEN, IN_TOKEN, RelayFactory
from tests.support.fakes import FakeUpstream


def consumer_for(base: str, credentials: Any = None) -> Consumer:
    return Consumer(events_url=f"{base}/track", people_url=f"{base}/engage",
                    groups_url=f"{base}/groups", import_url=f"{base}/import",
                    request_timeout=5, credentials=credentials)


def drive_sdk(base: str) -> None:
    """Everything a server-side integration does, for an EU and an India project."""
    eu_credentials = ServiceAccountCredentials("svc-eu", "s3cret", "2")
    eu = Mixpanel(EU_TOKEN, consumer=consumer_for(base, eu_credentials))
    eu.track("user-eu", "Signed up", {"plan": "pro"})
    eu.people_set("user-eu", {"$email": "eu@example.com"})
    eu.group_set("company", "acme-eu", {"seats": 10})
    eu.import_data(None, "user-eu", "Old event", 1_600_000_000, {"source": "backfill"})
    india = Mixpanel(IN_TOKEN, consumer=consumer_for(base))
    india.track("user-in", "Signed up")
    india.people_set("user-in", {"$name": "Asha"})
    india.group_set("company", "acme-in", {"seats": 3})
    buffered = BufferedConsumer(max_size=10, events_url=f"{base}/track", request_timeout=5)
    batch = Mixpanel(IN_TOKEN, consumer=buffered)
    for n in range(3):
        batch.track("user-in", f"Batched {n}")
    buffered.flush()


async def test_python_sdk_two_regions(make_relay: RelayFactory,
                                      upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay(projects=True)
    base = f"http://127.0.0.1:{client.port}"
    # The SDK raises MixpanelException unless every answer is JSON with status 1.
    await asyncio.to_thread(drive_sdk, base)

    eu = upstreams["eu"].received
    assert [r.path for r in eu] == ["/track", "/engage", "/groups", "/import"]
    assert eu[0].records()[0]["properties"]["token"] == EU_TOKEN
    assert eu[0].records()[0]["properties"]["plan"] == "pro"
    assert eu[1].records()[0]["$set"] == {"$email": "eu@example.com"}
    assert eu[2].records()[0]["$group_id"] == "acme-eu"
    assert eu[3].query == "project_id=2"
    assert eu[3].headers["Authorization"] == "Basic " + base64.b64encode(
        b"svc-eu:s3cret").decode()
    assert eu[3].records()[0]["properties"]["time"] == 1_600_000_000
    assert all(b"ip=0" in r.body and b"verbose=1" in r.body for r in eu)

    india = upstreams["in"].received
    assert [r.path for r in india] == ["/track", "/engage", "/groups", "/track"]
    assert [e["event"] for e in india[3].records()] == ["Batched 0", "Batched 1", "Batched 2"]
    assert india[1].records()[0]["$token"] == IN_TOKEN
    assert not upstreams["us"].received
