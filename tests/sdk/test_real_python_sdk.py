"""The real `mixpanel` PyPI SDK (pinned in pyproject) reads the answers the relay makes itself.

It raises `MixpanelException` unless every answer is JSON with `status == 1`
(mixpanel-python `mixpanel/__init__.py`, `Consumer._write_request`), and it sends `verbose=1`
in the form body, not the query: a spooled or split answer of `1` would break it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from mixpanel import BufferedConsumer, Consumer, Mixpanel

from tests.conftest import EU_TOKEN, US_TOKEN, RelayFactory
from tests.sdk import shapes
from tests.support.fakes import FakeUpstream


def consumer_for(base: str) -> Consumer:
    return Consumer(events_url=f"{base}/track", people_url=f"{base}/engage",
                    groups_url=f"{base}/groups", import_url=f"{base}/import",
                    request_timeout=5)


async def test_spooled_answers_satisfy_the_real_python_sdk(
        tmp_path: Path, make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay({"spool": {"enabled": True, "mode": "always",
                                         "path": str(tmp_path / "spool.db")}})
    base = f"http://127.0.0.1:{client.port}"

    def drive() -> None:
        sdk = Mixpanel(US_TOKEN, consumer=consumer_for(base))
        sdk.track("user-1", "Signed up")
        sdk.people_set("user-1", {"plan": "pro"})
        sdk.group_set("company", "acme", {"seats": 3})
        sdk.import_data(None, "user-1", "Old event", 1_600_000_000, api_secret="project-secret")

    await asyncio.to_thread(drive)       # raises MixpanelException on an answer it rejects


async def test_oversize_buffered_batch_is_delivered_for_the_real_python_sdk(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    """50 events of ~52 KB in one BufferedConsumer flush (the SDK's batch size): over 2 MiB."""
    client = await make_relay(projects=True)
    base = f"http://127.0.0.1:{client.port}"

    def drive() -> None:
        buffered = BufferedConsumer(max_size=50, events_url=f"{base}/track", request_timeout=10)
        for token, count in ((US_TOKEN, 45), (EU_TOKEN, 5)):
            sdk = Mixpanel(token, consumer=buffered)
            for n in range(count):
                sdk.track(f"user-{n}", "Big", {"blob": "x" * 52_000, "n": n})
        buffered.flush()

    await asyncio.to_thread(drive)
    delivered = [record for region in ("us", "eu") for received in upstreams[region].received
                 for record in shapes.records_of(received)]
    assert len(delivered) == 50
    assert len(upstreams["us"].received) >= 2     # 45 US events alone pass 2 MiB: cut
    assert len(upstreams["eu"].received) == 1
    assert all(len(received.plain_body()) <= 2 * 1024 * 1024
               for region in ("us", "eu") for received in upstreams[region].received)
