"""Every SDK endpoint through the relay: what reaches the upstream, byte for byte."""

from __future__ import annotations

import gzip

import pytest

from tests.conftest import US_TOKEN, RelayFactory
from tests.support.fakes import FakeUpstream
from tests.support.helpers import (
    BEACON,
    FORM,
    basic,
    browser_form,
    event,
    python_sdk_form,
    raw_url,
)

QUERY = "verbose=1&ip=1&_=1764330000123"


@pytest.mark.parametrize("path", ["/track/", "/track", "//track/", "/engage/", "/groups",
                                  "/import"])
@pytest.mark.parametrize("fmt", ["base64", "json"])
async def test_data_endpoints_forward_bytes_unchanged(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream], path: str, fmt: str) -> None:
    client = await make_relay()
    body = browser_form([event(US_TOKEN)], fmt)
    # Through the raw session: the test client would refuse "//track/" as a network-path URL.
    response = await client.session.post(raw_url(client, f"{path}?{QUERY}"), data=body,
                                         headers=FORM)
    assert response.status == 200
    assert await response.json() == {"status": 1, "error": None}
    [got] = upstreams["us"].received
    endpoint = path.strip("/")
    assert got.method == "POST"
    assert got.path == f"/{endpoint}" + ("/" if path.endswith("/") else "")
    assert got.query == QUERY                      # ip=1 and the cache-buster untouched
    assert got.body == body                        # byte for byte: $insert_id and time intact
    assert got.headers["Content-Type"] == FORM["Content-Type"]
    assert got.headers["Host"] == upstreams["us"].url.split("//")[1]
    assert not upstreams["eu"].received and not upstreams["in"].received


async def test_beacon_and_get_forms(make_relay: RelayFactory,
                                    upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay()
    beacon = browser_form([event(US_TOKEN)])
    assert (await client.post(f"/track/?{QUERY}", data=beacon, headers=BEACON)).status == 200
    get_query = "data=eyJldmVudCI6ICJ4In0%3D&ip=1&img=1&_=1"
    response = await client.get(f"/track/?{get_query}")
    assert response.status == 200 and await response.text() == "1"
    first, second = upstreams["us"].received
    assert (first.body, first.headers["Content-Type"]) == (beacon, BEACON["Content-Type"])
    assert (second.method, second.query, second.body) == ("GET", get_query, b"")


async def test_record_is_opaque_and_keeps_authorization(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay()
    replay = gzip.compress(b'[{"type":2,"data":{}}]' * 100)
    query = ("%24current_url=https%3A%2F%2Fsite.test%2F&%24lib_version=2.83.0&batch_start_time="
             "1764330000.1&mp_lib=web&replay_id=r-1&seq=0&distinct_id=u&format=gzip")
    headers = {"Authorization": basic(US_TOKEN), "Content-Type": "application/octet-stream",
               "Cookie": "session=secret", "Origin": "https://site.test"}
    response = await client.session.post(raw_url(client, f"/record/?{query}"), data=replay,
                                         headers=headers)
    assert response.status == 200
    assert await response.json() == {"code": 200, "status": "OK"}
    [got] = upstreams["us"].received
    assert (got.path, got.query, got.body) == ("/record/", query, replay)
    assert got.headers["Authorization"] == basic(US_TOKEN)
    assert "Content-Encoding" not in got.headers
    assert "Cookie" not in got.headers                    # the site's cookies never leave


async def test_flags_settings_and_first_time_events(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay()
    auth = {"Authorization": basic(US_TOKEN), "traceparent": "00-" + "a" * 32 + "-" + "b" * 16
            + "-01"}
    flags_query = f"context=%7B%22distinct_id%22%3A%22u%22%7D&token={US_TOKEN}&mp_lib=web"
    flags = await client.session.get(raw_url(client, f"/flags/?{flags_query}"), headers=auth)
    assert flags.status == 200 and "flags" in await flags.json()
    settings = await client.get("/settings/?%24lib_version=2.83.0&mp_lib=web&sdk_config=1",
                                headers={"Authorization": basic(US_TOKEN)})
    assert (await settings.json())["sdk_config"]["config"]["record_sessions_percent"] == 100
    first = await client.post("/flags/flag-1/first-time-events?mp_lib=web", headers={
        **auth, "Content-Type": "application/json"}, data=b'{"distinct_id":"u"}')
    assert first.status == 200
    got = upstreams["us"].received
    assert [(r.method, r.path) for r in got] == [
        ("GET", "/flags/"), ("GET", "/settings/"), ("POST", "/flags/flag-1/first-time-events")]
    assert got[0].query == flags_query
    assert got[0].headers["traceparent"] == auth["traceparent"]
    assert all(r.headers["Authorization"] == basic(US_TOKEN) for r in got)
    assert got[2].body == b'{"distinct_id":"u"}'


async def test_import_json_body_and_gzip_pass_through(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay()
    body = gzip.compress(b'[{"event":"e","properties":{"time":1,"distinct_id":"d"}}]')
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip",
               "Authorization": "Basic c2VydmljZTpzZWNyZXQ="}
    response = await client.post("/import?strict=1&project_id=7", data=body, headers=headers)
    assert response.status == 200
    [got] = upstreams["us"].received
    assert (got.query, got.body) == ("strict=1&project_id=7", body)
    assert got.headers["Content-Encoding"] == "gzip"
    assert got.headers["Authorization"] == headers["Authorization"]


async def test_region_prefix_pins_region(make_relay: RelayFactory,
                                         upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay()
    for region in ("eu", "in", "us"):
        response = await client.post(f"/{region}/track/?ip=1", data=browser_form(
            [event("unlisted")]), headers=FORM)
        assert response.status == 200
    assert [len(upstreams[r].received) for r in ("us", "eu", "in")] == [1, 1, 1]
    assert upstreams["eu"].received[0].path == "/track/"


async def test_base_path_and_aliases(make_relay: RelayFactory,
                                     upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay({"routing": {"base_path": "/_mp/api",
                                           "aliases": {"e": "track", "r": "record"}}})
    assert (await client.post("/_mp/api/e/?ip=1", data=b"data=x", headers=FORM)).status == 200
    assert (await client.post("/_mp/api/eu/r/?seq=0", data=b"\x1f\x8b")).status == 200
    assert (await client.post("/track/", data=b"data=x", headers=FORM)).status == 404
    assert [r.path for r in upstreams["us"].received] == ["/track/"]
    assert [r.path for r in upstreams["eu"].received] == ["/record/"]


async def test_client_ip_and_header_policy(make_relay: RelayFactory,
                                           upstreams: dict[str, FakeUpstream]) -> None:
    # The test client connects from 127.0.0.1, trusted by default: its XFF is believed.
    client = await make_relay()
    headers = {**FORM, "X-Forwarded-For": "6.6.6.6, 198.51.100.23", "User-Agent": "UA/1",
               "Cookie": "mp_x=1", "Connection": "keep-alive", "X-Custom": "nope",
               "Origin": "https://site.test"}
    response = await client.post("/track/?ip=1", data=b"data=x", headers=headers)
    got = upstreams["us"].received[0].headers
    assert got["X-Forwarded-For"] == "198.51.100.23" and got["X-Real-IP"] == "198.51.100.23"
    assert got["User-Agent"] == "UA/1"
    assert "Cookie" not in got and "X-Custom" not in got and "Origin" not in got
    # From the upstream's answer: no Set-Cookie, and its CORS replaced by exactly ours.
    assert "Set-Cookie" not in response.headers
    assert response.headers.getall("Access-Control-Allow-Origin") == ["https://site.test"]


async def test_untrusted_peer_cannot_spoof_its_ip(make_relay: RelayFactory,
                                                  upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay({"server": {"trusted_proxies": ["10.0.0.0/8"]}})
    await client.post("/track/", data=b"data=x",
                      headers={**FORM, "X-Forwarded-For": "1.2.3.4", "X-Real-IP": "1.2.3.4"})
    got = upstreams["us"].received[0].headers
    assert got["X-Forwarded-For"] == "127.0.0.1" and got["X-Real-IP"] == "127.0.0.1"


async def test_python_sdk_shaped_requests_get_json_success(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay(projects=True)
    body = python_sdk_form([event(US_TOKEN)])
    response = await client.post("/track", data=body, headers=FORM)
    assert await response.json() == {"status": 1, "error": None}
    assert upstreams["us"].received[0].body == body


async def test_health_is_local(make_relay: RelayFactory,
                               upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay()
    response = await client.get("/healthz")
    assert response.status == 200 and await response.json() == {"status": "ok"}
    assert not any(fake.received for fake in upstreams.values())

