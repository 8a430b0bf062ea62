"""Answers the relay makes itself are the ones Mixpanel would have made for that request.

A split batch and a spooled request are answered by the relay, not by Mixpanel: each SDK's own
success check (tests/sdk/shapes.py) must pass on that answer, by endpoint, body format (form or
JSON), `verbose` (query or form body) and `strict`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EU_TOKEN, US_TOKEN, RelayFactory
from tests.sdk import shapes
from tests.sdk.shapes import Shape
from tests.support.fakes import FakeUpstream
from tests.support.helpers import event


def mixed(count: int = 3) -> list[dict[str, Any]]:
    """Records of two projects in two regions: the relay splits them."""
    return [event(US_TOKEN if n % 2 == 0 else EU_TOKEN, "split", n=n,
                  **{"$insert_id": f"insert-{n:04d}"}) for n in range(count)]


SPLIT_SHAPES = {
    "java-import-strict": lambda: shapes.java("import", mixed(), token=US_TOKEN),
    "java-import-strict-gzip": lambda: shapes.java("import", mixed(), token=US_TOKEN,
                                                   gzipped=True),
    "java-import-nonstrict": lambda: shapes.java("import", mixed(), token=US_TOKEN, strict=False),
    "go-import": lambda: shapes.go("import", mixed(), auth=shapes.basic(US_TOKEN)),
    "go-import-gzip": lambda: shapes.go("import", mixed(), auth=shapes.basic(US_TOKEN),
                                        gzipped=True),
    "node-track-batch": lambda: shapes.node("track", mixed()),
    "node-track-get-verbose": lambda: shapes.node("track", mixed(), method="GET", verbose=True),
    "python-track": lambda: shapes.python("track", mixed()),
    "ruby-track": lambda: shapes.ruby("track", mixed()),
    "java-track": lambda: shapes.java("track", mixed()),
    "go-track": lambda: shapes.go("track", mixed()),
    "php-track": lambda: shapes.php("track", mixed()),
    "swift-track": lambda: shapes.swift("track", mixed()),
    "android-debug-gzip": lambda: shapes.android("track", mixed(), gzipped=True, debug=True),
}


def records_upstream(upstreams: dict[str, FakeUpstream]) -> int:
    return sum(len(shapes.records_of(received))
               for fake in upstreams.values() for received in fake.received)


@pytest.mark.parametrize("name", sorted(SPLIT_SHAPES))
async def test_split_batch_answer_passes_the_sdks_own_check(
        name: str, make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    shape: Shape = SPLIT_SHAPES[name]()
    client = await make_relay(projects=True)
    reply = await shapes.send(client, shape)
    assert len(upstreams["us"].received) == 1 and len(upstreams["eu"].received) == 1
    assert records_upstream(upstreams) == 3
    assert shape.reading(reply.status, reply.body) == "delivered", reply.body
    if shape.headers.get("Content-Type") == "application/json" and "/import" in shape.target:
        assert reply.json() == {"code": 200, "num_records_imported": 3, "status": "OK"}


SPOOLED_SHAPES = {
    "java-import-strict": lambda: shapes.java("import", mixed(1), token=US_TOKEN),
    "java-import-nonstrict-gzip": lambda: shapes.java("import", mixed(1), token=US_TOKEN,
                                                      strict=False, gzipped=True),
    "go-import": lambda: shapes.go("import", mixed(1), auth=shapes.basic(US_TOKEN)),
    "node-import-batch": lambda: shapes.node("import", mixed(1), secret="s3cret"),
    "node-track": lambda: shapes.node("track", mixed(1), method="GET"),
    "python-import": lambda: shapes.python("import", mixed(1), secret="s3cret"),
    "python-engage": lambda: shapes.python("engage", [{"$token": US_TOKEN,
                                                       "$distinct_id": "u", "$set": {"a": 1}}]),
    "ruby-track": lambda: shapes.ruby("track", mixed(1)),
    "java-track": lambda: shapes.java("track", mixed(1)),
    "go-track": lambda: shapes.go("track", mixed(1)),
    "go-engage": lambda: shapes.go("engage", [{"$token": US_TOKEN, "$distinct_id": "u",
                                               "$set": {"a": 1}}]),
    "php-track": lambda: shapes.php("track", mixed(1)),
    "browser-track": lambda: shapes.browser("track", mixed(1)),
    "swift-track-gzip": lambda: shapes.swift("track", mixed(1), gzipped=True),
    "android-debug-gzip": lambda: shapes.android("track", mixed(1), gzipped=True, debug=True),
}


@pytest.mark.parametrize("name", sorted(SPOOLED_SHAPES))
async def test_spooled_answer_passes_the_sdks_own_check(
        name: str, tmp_path: Path, make_relay: RelayFactory,
        upstreams: dict[str, FakeUpstream]) -> None:
    shape: Shape = SPOOLED_SHAPES[name]()
    client = await make_relay({"spool": {"enabled": True, "mode": "always",
                                         "path": str(tmp_path / "spool.db")}})
    reply = await shapes.send(client, shape)
    assert reply.status == 200
    assert shape.reading(reply.status, reply.body) == "delivered", reply.body
    if shape.headers.get("Content-Type") == "application/json" and "/import" in shape.target:
        assert reply.json() == {"code": 200, "num_records_imported": 1, "status": "OK"}
