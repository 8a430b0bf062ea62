"""Coalescing units: which requests may merge, and how a lane batches them."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import unquote

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from proxy.relay.coalesce import Lane, MergedAnswer, accepted, coalescible_events, merged_body
from tests.conftest import RelayFactory
from tests.support.fakes import FakeUpstream
from tests.support.helpers import FORM, browser_form, event, python_sdk_form
from tests.support.metrics import sample
from tests.support.waits import eventually

Client = TestClient[Any, Any]
Pending = asyncio.Future[ClientResponse]


def test_browser_batches_get_their_clients_ip_and_plain_ones_merge() -> None:
    events = coalescible_events(b"verbose=1&ip=1&_=17", browser_form([event("t", "a")]),
                                "198.51.100.7")
    assert events is not None and events[0]["properties"]["ip"] == "198.51.100.7"
    assert events[0]["properties"]["$insert_id"] == "abc123def456ghi7"   # nothing else changes
    kept = coalescible_events(b"ip=1", browser_form([event("t", ip="203.0.113.1")]), "1.1.1.1")
    assert kept is not None and kept[0]["properties"]["ip"] == "203.0.113.1"
    for query, body in ((b"ip=0&_=1", browser_form([event("t")])),
                        (b"", python_sdk_form([event("t")]))):      # the Python SDK: ip=0
        unlocated = coalescible_events(query, body, "1.1.1.1")
        assert unlocated is not None and "ip" not in unlocated[0]["properties"]


def test_anything_unusual_is_sent_alone() -> None:
    good = browser_form([event("t")])
    assert coalescible_events(b"ip=1&test=1", good, "1.1.1.1") is None      # unknown params
    assert coalescible_events(b"ip=1", good + b"&api_key=x", "1.1.1.1") is None
    assert coalescible_events(b"ip=1", b"data=%%%", "1.1.1.1") is None       # Mixpanel judges
    assert coalescible_events(b"ip=1", browser_form([1, 2]), "1.1.1.1") is None
    assert coalescible_events(b"ip=1", b"", "1.1.1.1") is None


def test_merged_body_and_acceptance() -> None:
    body = merged_body([event("t", "a"), event("t", "b")])
    assert body.startswith(b"data=")
    assert [e["event"] for e in json.loads(unquote(body[5:].decode()))] == ["a", "b"]
    assert accepted(200, b'{"status":1,"error":null}') and accepted(200, b"1")
    assert not accepted(200, b'{"status":0,"error":"bad"}') and not accepted(503, b"1")


async def test_a_lane_merges_what_arrives_while_its_slots_are_busy() -> None:
    sent: list[list[str]] = []
    release = asyncio.Event()

    async def send_merged(body: bytes) -> MergedAnswer:
        sent.append([e["event"] for e in json.loads(unquote(body[5:].decode()))])
        await release.wait()
        return MergedAnswer(accepted=True)

    lane = Lane(send_merged, slots=1, max_events=3)
    assert not lane.busy
    lane.enter_alone()                               # a request going alone takes the slot
    assert lane.busy
    waiters = [asyncio.ensure_future(lane.merge([event("t", name)])) for name in "abcde"]
    await asyncio.sleep(0)     # one turn of the loop, not a timed wait: the tasks reach the lane
    assert sent == []                                # nothing goes while the slot is taken
    lane.leave_alone()
    await eventually(lambda: sent, "the first merged send")
    assert sent == [["a", "b", "c"]]                 # one send, up to max_events
    release.set()
    answers = await asyncio.gather(*waiters)
    assert sent == [["a", "b", "c"], ["d", "e"]]
    assert all(answer.accepted for answer in answers)
    assert not lane.busy


async def test_a_failed_merged_send_tells_every_waiter() -> None:
    async def send_merged(body: bytes) -> MergedAnswer:
        raise ConnectionError("boom")

    loop = asyncio.get_running_loop()
    errors: list[object] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context["exception"]))
    lane = Lane(send_merged, slots=1)
    lane.enter_alone()
    waiters = [asyncio.ensure_future(lane.merge([event("t")])) for _ in range(3)]
    await asyncio.sleep(0)     # one turn of the loop, not a timed wait: the tasks reach the lane
    lane.leave_alone()
    answers = await asyncio.gather(*waiters)
    assert [answer.accepted for answer in answers] == [False, False, False]
    await eventually(lambda: errors, "the failed send's error to be reported")
    assert len(errors) == 1 and isinstance(errors[0], ConnectionError)
    assert not lane.busy
    loop.set_exception_handler(None)


async def busy_slot(make_relay: RelayFactory, us: FakeUpstream, query: str,
                    headers: dict[str, str]) -> tuple[Client, CollectorRegistry, Pending]:
    """A relay with one coalescing slot, taken by a request alone that `us` holds (until
    `us.release()`): what comes next waits to merge."""
    registry = CollectorRegistry()
    client = await make_relay({"coalesce": {"enabled": True, "slots": 1}}, registry=registry)
    us.hold()
    first = asyncio.ensure_future(client.post(f"/track/?{query}", headers={**FORM, **headers},
                                              data=browser_form([event("t", "alone")])))
    await eventually(lambda: len(us.received) == 1, "the first request upstream")
    return client, registry, first


async def waiting_behind(registry: CollectorRegistry, count: int) -> None:
    """Wait until `count` requests are in the relay besides the one held upstream: read and
    their bodies already read, nothing between there and the lane waits: they wait to merge."""
    await eventually(lambda: sample(registry, "mixpanel_proxy_in_flight_requests") == count + 1,
                     f"{count} requests waiting behind the busy slot")


async def test_through_the_relay_concurrent_tracks_merge_with_their_own_ips(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    us = upstreams["us"]
    client, registry, first = await busy_slot(make_relay, us, "ip=1&_=1",
                                              {"X-Forwarded-For": "198.51.100.1"})
    ips = [f"203.0.113.{n}" for n in range(1, 6)]
    queries = ["verbose=1&ip=1&_=2", "ip=1&_=3", "ip=0&_=4", "verbose=1&ip=1", "ip=1"]
    merged = [asyncio.ensure_future(client.post(
        f"/track/?{query}", data=browser_form([event("t", f"e{n}")]),
        headers={**FORM, "X-Forwarded-For": ip}))
        for n, (query, ip) in enumerate(zip(queries, ips, strict=True))]
    await waiting_behind(registry, 5)              # the only slot is busy upstream
    assert len(us.received) == 1
    us.release()
    responses = [*await asyncio.gather(first, *merged)]
    assert [r.status for r in responses] == [200] * 6
    assert [await r.text() for r in responses[1:]] == [
        '{"status":1,"error":null}', "1", "1", '{"status":1,"error":null}', "1"]
    alone, batch = upstreams["us"].received
    assert alone.query == "ip=1&_=1"               # sent as it came: bytes, ip=1, its XFF
    assert alone.headers["X-Forwarded-For"] == "198.51.100.1"
    assert (batch.path, batch.query) == ("/track", "ip=0&verbose=1")
    assert "X-Forwarded-For" not in batch.headers
    got = {e["event"]: e["properties"].get("ip") for e in batch.records()}
    assert got == {"e0": ips[0], "e1": ips[1], "e2": None, "e3": ips[3], "e4": ips[4]}
    assert all(e["properties"]["$insert_id"] == "abc123def456ghi7" for e in batch.records())


async def test_a_refused_merged_batch_falls_back_to_each_request_alone(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    us = upstreams["us"]
    us.answer(200, {"status": 0, "error": "invalid data"}, {"Content-Type": "application/json"})
    client, registry, first = await busy_slot(make_relay, us, "ip=1", {})
    bodies = [browser_form([event("t", f"e{n}")]) for n in range(3)]
    waiting = [asyncio.ensure_future(client.post("/track/?ip=1&verbose=1", data=body,
                                                 headers=FORM)) for body in bodies]
    await waiting_behind(registry, 3)
    us.release()
    others = (await asyncio.gather(first, *waiting))[1:]
    # Each client is answered from its own upstream exchange: Mixpanel's own refusal.
    assert [await r.json() for r in others] == [{"status": 0, "error": "invalid data"}] * 3
    received = upstreams["us"].received
    assert received[1].query == "ip=0&verbose=1" and len(received[1].records()) == 3
    assert sorted(r.body for r in received[2:]) == sorted(bodies)   # originals, byte for byte
    assert all(r.query == "ip=1&verbose=1" for r in received[2:])
