"""The mobile SDKs' exact requests through the relay: routed by token, bytes kept, answer read
by the SDK's own check (tests/sdk/shapes.py names each source file).

JSON-array bodies (`Content-Type: application/json`, optionally gzipped) are what mixpanel-swift
>= 3.1.1 (also React Native and Flutter on iOS), mixpanel-iphone >= 4.2 and mixpanel-go send to
/track, /engage and /groups; Android, Unity and React Native's JavaScript mode send forms.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import pytest

from tests.conftest import EU_TOKEN, IN_TOKEN, US_TOKEN, RelayFactory
from tests.sdk import shapes
from tests.sdk.shapes import Shape
from tests.support.fakes import FakeUpstream
from tests.support.helpers import event

Builder = Callable[[str, list[Any]], Shape]
MOBILE: dict[str, Builder] = {
    "android": shapes.android,
    "android-gzip": lambda endpoint, records: shapes.android(endpoint, records, gzipped=True),
    "swift": shapes.swift,
    "swift-gzip": lambda endpoint, records: shapes.swift(endpoint, records, gzipped=True),
    "iphone": shapes.iphone,
    "iphone-4.1": shapes.iphone_legacy,
    "unity": shapes.unity,
    "react-native-js": shapes.react_native_js,
    "go": lambda endpoint, records: shapes.go(endpoint, records),
}
GROUP_CAPABLE = {"android", "android-gzip", "swift", "swift-gzip", "iphone", "iphone-4.1",
                 "react-native-js", "go"}


def records_for(endpoint: str, token: str) -> list[dict[str, Any]]:
    if endpoint == "track":
        return [event(token, "opened", n=n) for n in range(3)]
    if endpoint == "engage":
        return [{"$token": token, "$distinct_id": "user-1", "$set": {"plan": "pro"}}]
    return [{"$token": token, "$group_key": "company", "$group_id": "acme",
             "$set": {"size": 10}}]


@pytest.mark.parametrize("endpoint", ["track", "engage", "groups"])
@pytest.mark.parametrize("sdk", sorted(MOBILE))
@pytest.mark.parametrize("token, region", [(US_TOKEN, "us"), (EU_TOKEN, "eu"),
                                           (IN_TOKEN, "in")])
async def test_mobile_requests_reach_their_projects_region_byte_for_byte(
        sdk: str, endpoint: str, token: str, region: str, make_relay: RelayFactory,
        upstreams: dict[str, FakeUpstream]) -> None:
    if endpoint == "groups" and sdk not in GROUP_CAPABLE:
        pytest.skip(f"{sdk} sends no group updates")
    client = await make_relay({"routing": {"strict": True}}, projects=True)
    shape = MOBILE[sdk](endpoint, records_for(endpoint, token))
    reply = await shapes.send(client, shape)
    assert shape.reading(reply.status, reply.body) == "delivered", (reply.status, reply.body)
    (received,) = upstreams[region].received
    assert (received.method, received.path) == ("POST", shape.target.partition("?")[0])
    assert received.query == shape.target.partition("?")[2]
    assert received.body == shape.body
    for name in ("Content-Type", "Content-Encoding"):
        assert received.headers.get(name) == shape.headers.get(name)
    assert sum(len(fake.received) for fake in upstreams.values()) == 1


async def test_privacy_omitted_zeroes_ip_in_a_form_body(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    """mixpanel-iphone 4.0–4.1 put `ip=1` in the form body, not the query."""
    client = await make_relay({"privacy": {"ip": "omitted"}})
    shape = shapes.iphone_legacy("track", records_for("track", US_TOKEN))
    reply = await shapes.send(client, shape, headers={"X-Forwarded-For": "203.0.113.9"})
    assert reply.status == 200
    (received,) = upstreams["us"].received
    form = parse_qs(received.plain_body().decode())
    assert form["ip"] == ["0"]
    assert parse_qs(received.query).get("ip", ["0"]) == ["0"]
    assert "X-Forwarded-For" not in received.headers and "X-Real-IP" not in received.headers
    assert len(shapes.records_of(received)) == 3


async def test_privacy_omitted_zeroes_ip_of_a_gzipped_android_form(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay({"privacy": {"ip": "omitted"}})
    shape = shapes.android("track", records_for("track", US_TOKEN), gzipped=True)
    reply = await shapes.send(client, shape)
    assert reply.status == 200
    (received,) = upstreams["us"].received
    assert parse_qs(received.query)["ip"] == ["0"]
    assert len(shapes.records_of(received)) == 3


@pytest.mark.parametrize("fmt", ["gzip", "body"])
async def test_replay_upload_is_relayed_byte_for_byte(
        fmt: str, make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay({"routing": {"strict": True}}, projects=True)
    shape = shapes.browser_replay(EU_TOKEN, [{"type": 2, "data": {}, "timestamp": 1}], fmt)
    reply = await shapes.send(client, shape)
    assert reply.status == 200 and reply.json()["status"] == "OK"
    (received,) = upstreams["eu"].received
    assert received.body == shape.body
    assert received.query == shape.target.partition("?")[2]
    assert "Content-Encoding" not in received.headers


async def test_raw_json_form_of_older_ios_keeps_its_ampersands_and_percents(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    """mixpanel-iphone 4.0–4.1 / mixpanel-swift 3.1.0 put unescaped JSON in `data=`: a strict
    relay must read `&`, `+` and `%41` as the JSON's own characters, not as form syntax."""
    client = await make_relay({"routing": {"strict": True}, "privacy": {"ip": "omitted"}},
                              projects=True)
    tricky = "fish & chips + 100%41 = ok"
    shape = shapes.iphone_legacy("track", [event(EU_TOKEN, "order", note=tricky)])
    reply = await shapes.send(client, shape)
    assert shape.reading(reply.status, reply.body) == "delivered", reply.body
    (received,) = upstreams["eu"].received
    (record,) = shapes.records_of(received)
    assert record["properties"]["note"] == tricky
    assert parse_qs(received.plain_body().decode())["ip"] == ["0"]


@pytest.mark.parametrize("builder", [shapes.iphone_3, shapes.php], ids=["iphone-3", "php"])
async def test_unescaped_base64_forms_are_read_in_strict_mode(
        builder: Callable[[str, list[Any]], Shape], make_relay: RelayFactory,
        upstreams: dict[str, FakeUpstream]) -> None:
    """Base64 sent without URL-encoding (mixpanel-iphone 3.x with CRLF every 64 characters,
    mixpanel-php): a literal `+` reads as a space in a form, and the relay must undo that."""
    client = await make_relay({"routing": {"strict": True}}, projects=True)
    records = [event(EU_TOKEN, "legacy", note="??>>" * 40, n=n) for n in range(3)]
    shape = builder("track", records)
    assert b"+" in shape.body
    reply = await shapes.send(client, shape)
    assert shape.reading(reply.status, reply.body) == "delivered", reply.body
    (received,) = upstreams["eu"].received
    assert received.body == shape.body
    assert [record["properties"]["note"] for record in received.records()] == ["??>>" * 40] * 3
