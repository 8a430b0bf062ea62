"""The server SDKs' exact requests through a strict relay: each reaches its project's region
byte for byte, and the SDK's own success check (tests/sdk/shapes.py) passes on the answer.

Python, Ruby and Node never retry on their own; Java and Go neither: a failed call is raised to
the caller. Each builder names its source file.
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

SERVICE_ACCOUNT = ("sa-user.mp-service-account", "sa-secret")
PROJECT_IDS = {US_TOKEN: 1, EU_TOKEN: 2, IN_TOKEN: 3}


def records_for(endpoint: str, token: str) -> list[dict[str, Any]]:
    if endpoint in ("track", "import"):
        return [event(token, "server", n=n, **{"$insert_id": f"srv-{n}"}) for n in range(2)]
    if endpoint == "engage":
        return [{"$token": token, "$distinct_id": "user-1", "$set": {"plan": "pro"}}]
    return [{"$token": token, "$group_key": "company", "$group_id": "acme",
             "$set": {"size": 10}}]


Case = Callable[[str, list[Any]], Shape]
CASES: dict[str, Case] = {
    "python-track": lambda token, records: shapes.python("track", records),
    "python-engage": lambda token, records: shapes.python("engage", records),
    "python-groups": lambda token, records: shapes.python("groups", records),
    "python-import-sa": lambda token, records: shapes.python(
        "import", records, project_id=PROJECT_IDS[token], service_account=SERVICE_ACCOUNT),
    "ruby-track": lambda token, records: shapes.ruby("track", records),
    "ruby-engage": lambda token, records: shapes.ruby("engage", records),
    "ruby-groups": lambda token, records: shapes.ruby("groups", records),
    "ruby-import-sa": lambda token, records: shapes.ruby(
        "import", records, project_id=PROJECT_IDS[token], service_account=SERVICE_ACCOUNT),
    "node-track-get": lambda token, records: shapes.node("track", records[:1], method="GET"),
    "node-track-batch": lambda token, records: shapes.node("track", records),
    "node-engage-get": lambda token, records: shapes.node("engage", records, method="GET"),
    "node-groups-get": lambda token, records: shapes.node("groups", records, method="GET"),
    "node-import-batch": lambda token, records: shapes.node("import", records, verbose=True,
                                                            secret="project-secret"),
    "java-track": lambda token, records: shapes.java("track", records),
    "java-engage": lambda token, records: shapes.java("engage", records),
    "java-groups": lambda token, records: shapes.java("groups", records),
    "java-import": lambda token, records: shapes.java("import", records, token=token),
    "java-import-gzip": lambda token, records: shapes.java("import", records, token=token,
                                                           gzipped=True),
    "go-track": lambda token, records: shapes.go("track", records),
    "go-engage": lambda token, records: shapes.go("engage", records),
    "go-groups": lambda token, records: shapes.go("groups", records),
    "go-import-sa-gzip": lambda token, records: shapes.go(
        "import", records, gzipped=True, auth=shapes.basic(*SERVICE_ACCOUNT),
        project_id=PROJECT_IDS[token]),
    "go-import-token": lambda token, records: shapes.go("import", records,
                                                        auth=shapes.basic(token)),
    "php-track": lambda token, records: shapes.php("track", records),
    "php-engage": lambda token, records: shapes.php("engage", records),
    "php-groups": lambda token, records: shapes.php("groups", records),
}


def answer_like_mixpanel(fake: FakeUpstream, shape: Shape, count: int) -> None:
    """Mixpanel's /import answer to a JSON body (import-events.mdx); the fake's default is the
    form-body answer."""
    if "/import" in shape.target and shape.headers.get("Content-Type") == "application/json":
        fake.answer(200, {"code": 200, "num_records_imported": count, "status": "OK"},
                    {"Content-Type": "application/json"})


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("token, region", [(EU_TOKEN, "eu"), (IN_TOKEN, "in")])
async def test_server_sdk_requests_reach_their_projects_region_byte_for_byte(
        case: str, token: str, region: str, make_relay: RelayFactory,
        upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay({"routing": {"strict": True}}, projects=True)
    endpoint = case.split("-")[1]
    shape = CASES[case](token, records_for(endpoint, token))
    answer_like_mixpanel(upstreams[region], shape, 2)
    reply = await shapes.send(client, shape)
    assert shape.reading(reply.status, reply.body) == "delivered", (reply.status, reply.body)
    (received,) = upstreams[region].received
    assert (received.method, received.path) == (shape.method, shape.target.partition("?")[0])
    assert parse_qs(received.query) == parse_qs(shape.target.partition("?")[2])
    assert received.body == shape.body
    for name in ("Authorization", "Content-Type", "Content-Encoding", "Accept"):
        if name in shape.headers:
            assert received.headers[name] == shape.headers[name]
    assert "Content-Encoding" in received.headers or "Content-Encoding" not in shape.headers
    assert sum(len(fake.received) for fake in upstreams.values()) == 1


@pytest.mark.parametrize("sdk", ["ruby", "go", "python", "node"])
async def test_server_flags_with_the_project_token(
        sdk: str, make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay({"routing": {"strict": True}}, projects=True)
    shape = shapes.server_flags(sdk, EU_TOKEN)
    reply = await shapes.send(client, shape)
    assert reply.status == 200 and "flags" in reply.json()
    (received,) = upstreams["eu"].received
    assert received.headers["traceparent"] == shape.headers["traceparent"]
    assert received.headers["Authorization"] == shapes.basic(EU_TOKEN)
