"""A split /import carries credentials valid for each part's own project, or is refused whole.

mixpanel-java (`MixpanelAPI.java` `sendImportMessages`) authenticates a whole /import batch with
the first record's token; mixpanel-go (`ingestion.go` `importAuthOptions`), -python and -ruby
with a service account plus `?project_id=`; mixpanel-node (`lib/mixpanel-node.js`) and legacy
Python/Ruby with a project API secret (or an `api_key` field).
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import parse_qs, urlencode

from prometheus_client import CollectorRegistry

from tests.conftest import EU_TOKEN, IN_TOKEN, US_TOKEN, RelayFactory
from tests.sdk import shapes
from tests.sdk.shapes import Shape
from tests.support.fakes import FakeUpstream, Received
from tests.support.helpers import event

US2_TOKEN = "tok_us_second"
PROJECTS = [
    {"token": US_TOKEN, "region": "us", "project_id": 1},
    {"token": EU_TOKEN, "region": "eu", "project_id": 2},
    {"token": US2_TOKEN, "region": "us", "project_id": 4},
    {"token": IN_TOKEN, "region": "in"},              # no project_id listed
]
SERVICE_ACCOUNT = ("sa-user.mp-service-account", "sa-secret")


def records(*tokens: str) -> list[dict[str, Any]]:
    return [event(token, "imported", n=n, **{"$insert_id": f"id-{n:04d}"})
            for n, token in enumerate(tokens)]


def auth_user(received: Received) -> str:
    value = received.headers["Authorization"].partition(" ")[2]
    return base64.b64decode(value).decode()


def tokens_in(received: Received) -> set[str]:
    return {record["properties"]["token"] for record in shapes.records_of(received)}


async def test_token_auth_gives_each_part_its_own_token(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay({"projects": PROJECTS})
    shape = shapes.java("import", records(US_TOKEN, EU_TOKEN, US2_TOKEN, EU_TOKEN),
                        token=US_TOKEN)
    reply = await shapes.send(client, shape)
    assert shape.reading(reply.status, reply.body) == "delivered"
    parts = [*upstreams["us"].received, *upstreams["eu"].received]
    assert sorted((auth_user(part), sorted(tokens_in(part))) for part in parts) == sorted([
        (f"{US_TOKEN}:", [US_TOKEN]), (f"{US2_TOKEN}:", [US2_TOKEN]),
        (f"{EU_TOKEN}:", [EU_TOKEN])])
    assert all(part.query == "strict=1" for part in parts)


async def test_service_account_gives_each_part_its_projects_id(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay({"projects": PROJECTS})
    shape = shapes.go("import", records(US_TOKEN, EU_TOKEN),
                      auth=shapes.basic(*SERVICE_ACCOUNT))
    reply = await shapes.send(client, shape)
    assert shape.reading(reply.status, reply.body) == "delivered"
    (us,), (eu,) = upstreams["us"].received, upstreams["eu"].received
    for part, project_id in ((us, "1"), (eu, "2")):
        assert auth_user(part) == ":".join(SERVICE_ACCOUNT)
        assert parse_qs(part.query)["project_id"] == [project_id]
        assert parse_qs(part.query)["strict"] == ["1"]


async def refused(client: Any, shape: Shape, upstreams: dict[str, FakeUpstream]) -> str:
    reply = await shapes.send(client, shape)
    assert reply.status == 400
    assert reply.headers["Content-Type"].startswith("application/json")
    assert shape.reading(reply.status, reply.body) == "raised"
    assert all(not fake.received for fake in upstreams.values())
    message: str = reply.json()["error"]
    return message


async def test_service_account_refuses_a_project_without_project_id(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay({"projects": PROJECTS})
    shape = shapes.go("import", records(US_TOKEN, IN_TOKEN),
                      auth=shapes.basic(*SERVICE_ACCOUNT))
    assert "project_id" in await refused(client, shape, upstreams)


async def test_project_secret_refuses_a_mixed_batch_before_sending_anything(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    registry = CollectorRegistry()
    client = await make_relay({"projects": PROJECTS}, registry=registry)
    node = shapes.node("import", records(US_TOKEN, EU_TOKEN), secret="project-secret")
    assert "secret" in await refused(client, node, upstreams)
    python = shapes.python("import", records(US_TOKEN, EU_TOKEN), secret="project-secret")
    assert "secret" in await refused(client, python, upstreams)
    assert registry.get_sample_value("mixpanel_proxy_rejections_total",
                                     {"reason": "mixed_import"}) == 2


async def test_legacy_api_key_refuses_a_mixed_batch(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    """mixpanel-ruby `consumer.rb`: the legacy api_key goes in the form, no Authorization."""
    client = await make_relay({"projects": PROJECTS})
    body = urlencode({"data": shapes.b64(records(US_TOKEN, EU_TOKEN)), "verbose": 1,
                      "api_key": "legacy-key"}).encode()
    shape = Shape("ruby", "POST", "/import", {"Content-Type": "application/x-www-form-urlencoded"},
                  body, success=lambda status, body: status == 200,
                  on_failure=lambda status: "raised")
    assert "api_key" in await refused(client, shape, upstreams)


async def test_one_project_under_a_secret_goes_whole(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay({"projects": PROJECTS})
    shape = shapes.node("import", records(US_TOKEN, US_TOKEN), secret="project-secret",
                        verbose=True)
    reply = await shapes.send(client, shape)
    assert shape.reading(reply.status, reply.body) == "delivered"
    (received,) = upstreams["us"].received
    assert received.body == shape.body and auth_user(received) == "project-secret:"
