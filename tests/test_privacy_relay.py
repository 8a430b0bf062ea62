"""The payload policy through the relay: what the fake Mixpanel receives, on the wire."""

from __future__ import annotations

import asyncio
import gzip
import json
from typing import Any

from mixpanel import Consumer, Mixpanel
from prometheus_client import CollectorRegistry

from proxy.codec import extract_data
from tests.conftest import EU_TOKEN, US_TOKEN, RelayFactory
from tests.support.bombs import gzip_zeros
from tests.support.fakes import FakeUpstream
from tests.support.helpers import BEACON, FORM, as_base64, basic, browser_form, event, raw_url
from tests.support.metrics import sample

EMAIL = r"[\w.+-]+@[\w-]+\.[\w.]+"
SCRUB = {"privacy": {"drop_properties": ["$email"], "redact_patterns": [EMAIL],
                     "ip": "truncated"}}
QUERY = "verbose=1&ip=1&_=1764330000123"
CLIENT = {"X-Forwarded-For": "203.0.113.77"}      # believed: the test client is a trusted peer


def page_view(token: str, index: int = 0, **props: Any) -> dict[str, Any]:
    record = event(token, "page view", **props)
    record["properties"]["$insert_id"] = f"insert{index:010d}"
    return record


def scrubbed(record: dict[str, Any]) -> dict[str, Any]:
    """What SCRUB should leave of a `page_view` built with $email, note and ip properties."""
    properties = {k: v for k, v in record["properties"].items() if k != "$email"}
    if "note" in properties:
        properties["note"] = "write to [redacted] please"
    if "ip" in properties:
        properties["ip"] = "198.51.100.0"
    return {**record, "properties": properties}


def rewritten(registry: CollectorRegistry) -> float:
    return sample(registry, "mixpanel_proxy_rewritten_payloads_total", endpoint="track")


async def test_browser_batch_arrives_scrubbed_and_gzipped(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    registry = CollectorRegistry()
    client = await make_relay(SCRUB, registry=registry)
    batch = [page_view(US_TOKEN, i, **{"$email": f"u{i}@x.io"}, note="write to u@x.io please",
                       ip="198.51.100.9", plan="pro") for i in range(40)]
    response = await client.session.post(raw_url(client, f"/track/?{QUERY}"),
                                         data=browser_form(batch), headers={**FORM, **CLIENT})
    assert response.status == 200 and await response.json() == {"status": 1, "error": None}
    [got] = upstreams["us"].received
    assert got.headers["Content-Encoding"] == "gzip"            # rewritten /track: gzipped
    assert got.records() == [scrubbed(record) for record in batch]
    assert b"x.io" not in got.plain_body()
    assert got.query == QUERY                                  # ip=1 kept: city-level geo
    assert got.headers["X-Forwarded-For"] == got.headers["X-Real-IP"] == "203.0.113.0"
    assert got.plain_body().startswith(b"data=%5B%7B%22event%22%3A%22page%20view%22")
    assert rewritten(registry) == 1


async def test_unaffected_payload_keeps_its_original_bytes(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    registry = CollectorRegistry()
    client = await make_relay(SCRUB, registry=registry)
    body = browser_form([page_view(US_TOKEN, plan="pro")])       # base64, nothing to scrub
    assert (await client.post(f"/track/?{QUERY}", data=body, headers={**FORM, **CLIENT})
            ).status == 200
    [got] = upstreams["us"].received
    assert got.body == body and "Content-Encoding" not in got.headers
    assert got.headers["X-Forwarded-For"] == "203.0.113.0"      # headers follow policy anyway
    assert rewritten(registry) == 0


async def test_replay_bodies_are_byte_identical(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay({"privacy": {**SCRUB["privacy"], "drop_properties": ["data"]}})
    rrweb = json.dumps([{"type": 2, "data": {"text": "ann@example.com"}}]).encode()
    query = "replay_id=r1&seq=0&distinct_id=ann%40example.com&format="
    for body, fmt in ((gzip.compress(rrweb), "gzip"), (rrweb, "body"),
                      (b"data=" + rrweb, "body")):
        response = await client.session.post(raw_url(client, f"/record/?{query}{fmt}"),
                                             data=body, headers={
            "Authorization": basic(US_TOKEN), "Content-Type": "application/octet-stream",
            **CLIENT})
        assert response.status == 200
        got = upstreams["us"].received[-1]
        assert (got.body, got.query) == (body, query + fmt)
        assert "Content-Encoding" not in got.headers
        assert got.headers["X-Real-IP"] == "203.0.113.0"


async def test_profiles_groups_get_and_beacon_forms(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay(SCRUB)
    profile = {"$token": US_TOKEN, "$distinct_id": "ann@example.com", "$ip": "198.51.100.9",
               "$set": {"$email": "ann@example.com", "$name": "Ann <ann@example.com>"}}
    group = {"$token": US_TOKEN, "$group_key": "company", "$group_id": "c1",
             "$set": {"owner": "bob@corp.example"}}
    await client.post(f"/engage/?{QUERY}", data=browser_form([profile]), headers=FORM)
    await client.post(f"/groups/?{QUERY}", data=browser_form(group), headers=BEACON)
    view = page_view(US_TOKEN, note="write to u@x.io please")
    await client.get("/track/", params={"data": as_base64(view), "ip": "1", "img": "1"})
    engage, groups, track = upstreams["us"].received
    assert engage.records() == [{"$token": US_TOKEN, "$distinct_id": "ann@example.com",
                                 "$ip": "198.51.100.0", "$set": {"$name": "Ann <[redacted]>"}}]
    assert "Content-Encoding" not in engage.headers            # /engage takes no gzip
    assert groups.data() == {**group, "$set": {"owner": "[redacted]"}}   # an object stays one
    assert groups.headers["Content-Type"] == BEACON["Content-Type"]
    assert (track.method, track.body) == ("GET", b"")
    assert track.records() == [scrubbed(view)]
    assert "ip=1&img=1" in track.query


async def test_omitted_ip_turns_ip_one_into_zero(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay({"privacy": {"ip": "omitted"}})
    with_ip = page_view(US_TOKEN, ip="198.51.100.9")
    await client.post(f"/track/?{QUERY}", data=browser_form([with_ip]),
                      headers={**FORM, **CLIENT})
    await client.post("/engage/", data=browser_form([{"$token": US_TOKEN, "$distinct_id": "d",
                                                      "$set": {"a": 1}}]), headers=FORM)
    await client.post("/track", data=b"data=" + json.dumps([page_view(US_TOKEN)]).encode()
                      + b"&ip=1", headers=FORM)
    track, engage, python_like = upstreams["us"].received
    assert "X-Forwarded-For" not in track.headers and "X-Real-IP" not in track.headers
    assert track.query == QUERY.replace("ip=1", "ip=0")
    assert "ip" not in track.records()[0]["properties"]
    assert engage.query == "ip=0"              # /engage geolocates unless told ip=0
    assert engage.body == browser_form([{"$token": US_TOKEN, "$distinct_id": "d",
                                         "$set": {"a": 1}}])        # payload untouched
    assert b"&ip=0" in python_like.plain_body() and b"ip=1" not in python_like.plain_body()


async def test_import_json_scrubbed_with_project_id_routing(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay(SCRUB, projects=True)
    rows = [page_view(EU_TOKEN, i, **{"$email": "a@b.io"}) for i in range(30)]
    ndjson = b"".join(json.dumps(row).encode() + b"\n" for row in rows)
    response = await client.post("/import?strict=1&project_id=2", data=gzip.compress(ndjson),
                                 headers={"Content-Type": "application/x-ndjson",
                                          "Content-Encoding": "gzip",
                                          "Authorization": "Basic c2E6c2VjcmV0"})
    assert response.status == 200
    [got] = upstreams["eu"].received
    assert got.headers["Content-Encoding"] == "gzip"
    lines = got.plain_body().splitlines()
    assert [json.loads(line) for line in lines] == [scrubbed(row) for row in rows]


async def test_split_batch_gets_stable_insert_ids(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay(projects=True)
    batch = [event(US_TOKEN, "a"), event(EU_TOKEN, "b")]
    for record in batch:
        del record["properties"]["$insert_id"]
    for _ in range(2):           # the SDK resends the same batch: the same ids go out
        await client.post(f"/track/?{QUERY}", data=browser_form(batch), headers=FORM)
    us_ids = [r.records()[0]["properties"]["$insert_id"] for r in upstreams["us"].received]
    eu_ids = [r.records()[0]["properties"]["$insert_id"] for r in upstreams["eu"].received]
    assert us_ids[0] == us_ids[1] and eu_ids[0] == eu_ids[1] and us_ids[0] != eu_ids[0]
    assert len(us_ids[0]) == 32
    # A whole, unchanged batch keeps its exact bytes: no id is added behind the SDK's back.
    whole = browser_form([batch[0]])
    await client.post("/track/", data=whole, headers=FORM)
    assert upstreams["us"].received[-1].body == whole


async def test_codec_refusals_through_the_relay(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay(SCRUB)
    bomb = gzip_zeros(9537)            # 10 GB of zeros in 9.4 MiB: under /import's 10 MiB
    response = await client.post("/import", data=bomb, headers={
        "Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert response.status == 413
    assert (await response.json())["error"] == \
        "the decompressed body exceeds the 10485760-byte limit"
    deep = b"data=" + b"[" * 65 + b"]" * 65
    response = await client.post("/track/", data=deep, headers=FORM)
    assert response.status == 400 and "nests deeper than 64 levels" in \
        (await response.json())["error"]
    value = extract_data(browser_form([event(US_TOKEN)] * 2001), b"")
    assert value is not None
    response = await client.post("/engage/", data=b"data=" + value, headers=FORM)
    assert response.status == 413 and "2001 records" in (await response.json())["error"]
    assert not any(fake.received for fake in upstreams.values())


def drive_python_sdk(base: str) -> None:
    consumer = Consumer(events_url=f"{base}/track", people_url=f"{base}/engage",
                        import_url=f"{base}/import", request_timeout=5)
    mp = Mixpanel(US_TOKEN, consumer=consumer)
    mp.track("user-1", "Signed up", {"ip": "198.51.100.9", "$email": "u@x.io", "plan": "pro"})
    mp.people_set("user-1", {"$email": "u@x.io", "$name": "U <u@x.io>"})
    mp.import_data("secret", "user-1", "Old event", 1_600_000_000, {"note": "by u@x.io"})


async def test_real_python_sdk_through_the_policy(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay(SCRUB)
    # The SDK raises unless each answer is JSON with status 1, and sends ip=0 in its form.
    await asyncio.to_thread(drive_python_sdk, f"http://127.0.0.1:{client.port}")
    track, engage, imported = upstreams["us"].received
    [event_sent] = track.records()
    assert event_sent["event"] == "Signed up" and event_sent["properties"]["ip"] == "198.51.100.0"
    assert "$email" not in event_sent["properties"] and len(
        event_sent["properties"]["$insert_id"]) == 32               # the SDK's own uuid4 hex
    assert engage.records()[0]["$set"] == {"$name": "U <[redacted]>"}
    assert imported.records()[0]["properties"]["note"] == "by [redacted]"
    assert imported.records()[0]["properties"]["time"] == 1_600_000_000
    for got in (track, engage, imported):
        assert b"ip=0" in got.plain_body() and b"verbose=1" in got.plain_body()
