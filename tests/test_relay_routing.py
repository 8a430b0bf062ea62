"""Per-token region routing, batch splitting across regions, and strict mode."""

from __future__ import annotations

import gzip
import json

from proxy.codec import decode_data, extract_data
from tests.conftest import EU_TOKEN, IN_TOKEN, US_TOKEN, RelayFactory
from tests.support.fakes import FakeUpstream
from tests.support.helpers import FORM, basic, browser_form, event, python_sdk_form, raw_url


def counts(upstreams: dict[str, FakeUpstream]) -> list[int]:
    return [len(upstreams[name].received) for name in ("us", "eu", "in")]


async def test_token_decides_over_prefix_and_default(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay(projects=True)
    for fmt in ("base64", "json"):
        body = browser_form([event(EU_TOKEN)], fmt)
        assert (await client.post("/in/track/?ip=1", data=body, headers=FORM)).status == 200
        assert upstreams["eu"].received[-1].body == body          # whole, unchanged
    engage = browser_form([{"$token": IN_TOKEN, "$distinct_id": "u", "$set": {"a": 1}}])
    assert (await client.post("/engage/?ip=1", data=engage, headers=FORM)).status == 200
    groups = browser_form({"$token": EU_TOKEN, "$group_key": "company", "$group_id": "c1",
                           "$set": {"n": 1}})
    assert (await client.post("/groups/", data=groups, headers=FORM)).status == 200
    unlisted = browser_form([event("someone-else")])
    assert (await client.post("/in/track/", data=unlisted, headers=FORM)).status == 200
    assert (await client.post("/track/", data=unlisted, headers=FORM)).status == 200
    assert counts(upstreams) == [1, 3, 2]
    assert upstreams["in"].received[0].body == engage


async def test_header_query_and_project_id_tokens(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay(projects=True)
    await client.post("/record/?seq=0&format=gzip", data=gzip.compress(b"[]"),
                      headers={"Authorization": basic(IN_TOKEN)})
    await client.get("/settings/?sdk_config=1", headers={"Authorization": basic(EU_TOKEN)})
    await client.session.get(raw_url(client, f"/flags/?context=%7B%7D&token={EU_TOKEN}"))
    await client.post("/import?strict=1&project_id=3", data=b"[]",
                      headers={"Content-Type": "application/json",
                               "Authorization": "Basic c2E6c2VjcmV0"})
    assert [r.path for r in upstreams["in"].received] == ["/record/", "/import"]
    assert [r.path for r in upstreams["eu"].received] == ["/settings/", "/flags/"]
    assert not upstreams["us"].received


async def test_mixed_batch_is_split_per_region(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay(projects=True)
    batch = [event(US_TOKEN, "a"), event(EU_TOKEN, "b"), event(US_TOKEN, "c"),
             event(IN_TOKEN, "d")]
    query = "verbose=1&ip=1&_=99"
    response = await client.session.post(raw_url(client, f"/track/?{query}"),
                                         data=browser_form(batch), headers=FORM)
    assert response.status == 200
    assert await response.json() == {"status": 1, "error": None}
    assert counts(upstreams) == [1, 1, 1]
    us, eu, in_ = (upstreams[name].received[0] for name in ("us", "eu", "in"))
    assert us.records() == [batch[0], batch[2]]                 # order kept, values intact
    assert eu.records() == [batch[1]] and in_.records() == [batch[3]]
    assert us.query == query and eu.query == query              # ip=1 untouched everywhere
    # Split parts go as compact JSON data=; every record value survives byte-exact.
    value = extract_data(us.plain_body(), b"")
    assert value is not None and value.startswith(b"[{") and b", " not in value
    assert decode_data(value)[0]["properties"]["$insert_id"] == "abc123def456ghi7"


async def test_mixed_get_batch_and_python_sdk_split(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay(projects=True)
    body = python_sdk_form([event(US_TOKEN), event(EU_TOKEN)])
    response = await client.post("/track", data=body, headers=FORM)
    assert await response.json() == {"status": 1, "error": None}
    assert upstreams["us"].received[0].body.count(b"verbose=1") == 1   # other fields kept
    assert upstreams["eu"].received[0].records() == [event(EU_TOKEN)]
    data = json.dumps([event(US_TOKEN), event(IN_TOKEN)], separators=(",", ":"))
    response = await client.get("/track/", params={"data": data, "ip": "1"})
    assert response.status == 200 and await response.text() == "1"
    assert upstreams["in"].received[0].method == "GET"
    assert upstreams["in"].received[0].records() == [event(IN_TOKEN)]


async def test_split_answers_retryable_when_any_part_fails(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay(projects=True)
    upstreams["eu"].answer(502, b"bad gateway")
    body = browser_form([event(US_TOKEN), event(EU_TOKEN)])
    response = await client.post("/track/?verbose=1", data=body, headers=FORM)
    assert response.status == 503
    assert response.headers["Retry-After"] == "10"
    assert "502" in (await response.json())["error"]
    upstreams["eu"].answer(429, b"slow down", {"Retry-After": "7"})
    response = await client.post("/track/?verbose=1", data=body, headers=FORM)
    assert (response.status, response.headers["Retry-After"]) == (503, "7")


async def test_strict_mode_refuses_unknown_tokens(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay({"routing": {"strict": True}}, projects=True)
    refused = [
        await client.post("/track/", data=browser_form([event("stranger")]), headers=FORM),
        await client.post("/track/", data=browser_form([event(US_TOKEN), event("x")]),
                          headers=FORM),
        await client.post("/record/?seq=0", data=b"\x1f\x8b",
                          headers={"Authorization": basic("stranger")}),
        await client.post("/record/?seq=0", data=b"\x1f\x8b"),
        await client.get("/flags/?token=stranger"),
        await client.post("/track/", data=b"", headers=FORM),
    ]
    for response in refused:
        assert response.status == 403
        assert "not a project this relay serves" in (await response.json())["error"]
    assert counts(upstreams) == [0, 0, 0]
    ok = await client.post("/track/", data=browser_form([event(US_TOKEN)]), headers=FORM)
    assert ok.status == 200 and counts(upstreams) == [1, 0, 0]


async def test_undecodable_payload_is_400_when_routing_must_decode(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay(projects=True)
    for body in (b"data=%%%not-base64", b"data=" + b"eyJub3QganNvbg", b"data=%5B%7B"):
        response = await client.post("/track/", data=body, headers=FORM)
        assert response.status == 400
        assert (await response.json())["error"].startswith("data=")
    too_many = browser_form([event(US_TOKEN)] * 2001)
    response = await client.post("/track/", data=too_many, headers=FORM)
    assert response.status == 413 and "2001 records" in (await response.json())["error"]
    assert (await client.post("/track/", data=browser_form([event(US_TOKEN)] * 2000),
                              headers=FORM)).status == 200
    assert counts(upstreams) == [1, 0, 0]


async def test_no_projects_means_no_decoding(make_relay: RelayFactory,
                                             upstreams: dict[str, FakeUpstream]) -> None:
    # Without [[projects]] or strict mode nothing depends on the payload: garbage is relayed
    # as received, and Mixpanel is the judge.
    client = await make_relay()
    assert (await client.post("/track/", data=b"data=%%%", headers=FORM)).status == 200
    assert upstreams["us"].received[0].body == b"data=%%%"
