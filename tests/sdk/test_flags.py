"""Flags requests of every SDK go to the region of their project, whatever their Authorization.

Server-side remote flags with a service account (mixpanel-ruby `lib/mixpanel-ruby/flags/
flags_provider.rb`, mixpanel-go `flags/remoteFlags.go`, mixpanel-python
`mixpanel/flags/remote_feature_flags.py`) send `Authorization: Basic <sa user>:<secret>` with
`token=` and `project_id=` in the query; mobile SDKs send `Basic <token>:` and `token=`.
"""

from __future__ import annotations

import pytest

from tests.conftest import EU_TOKEN, IN_TOKEN, US_TOKEN, RelayFactory
from tests.sdk import shapes
from tests.support.fakes import FakeUpstream

PROJECTS = [
    {"token": US_TOKEN, "region": "us", "project_id": 1},
    {"token": EU_TOKEN, "region": "eu", "project_id": 2},
    {"token": IN_TOKEN, "region": "in"},          # project_id not listed: token= decides
]
SERVICE_ACCOUNT = ("sa-user.mp-service-account", "sa-secret")


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("sdk", ["ruby", "go", "python", "node"])
@pytest.mark.parametrize("token, project_id, region", [
    (EU_TOKEN, 2, "eu"), (IN_TOKEN, 3, "in"), (US_TOKEN, 1, "us")])
async def test_service_account_flags_go_to_the_projects_region(
        sdk: str, strict: bool, token: str, project_id: int, region: str,
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay({"projects": PROJECTS, "routing": {"strict": strict}})
    shape = shapes.server_flags(sdk, token, project_id, service_account=SERVICE_ACCOUNT)
    reply = await shapes.send(client, shape)
    assert reply.status == 200 and "flags" in reply.json()
    (received,) = upstreams[region].received
    assert received.headers["Authorization"] == shape.headers["Authorization"]
    assert received.query == shape.target.partition("?")[2]
    assert sum(len(fake.received) for fake in upstreams.values()) == 1


@pytest.mark.parametrize("sdk", ["android", "swift"])
async def test_mobile_flags_go_to_the_tokens_region(
        sdk: str, make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay({"projects": PROJECTS, "routing": {"strict": True}})
    reply = await shapes.send(client, shapes.mobile_flags(sdk, EU_TOKEN))
    assert reply.status == 200
    (received,) = upstreams["eu"].received
    assert received.path == "/flags/"


async def test_an_unlisted_token_is_still_refused_in_strict_mode(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay({"projects": PROJECTS, "routing": {"strict": True}})
    shape = shapes.server_flags("ruby", "tok_not_listed", 99, service_account=SERVICE_ACCOUNT)
    reply = await shapes.send(client, shape)
    assert reply.status == 403
    assert all(not fake.received for fake in upstreams.values())
