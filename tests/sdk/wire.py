"""What crosses the wire in the SDK tests: a request shape, the relay's reply, and the SDK's
reading of it; the builders that fill these in are in shapes.py."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from tests.support.helpers import raw_url

Reading = Literal["delivered", "kept", "deleted", "raised"]
"""What the SDK does with the batch after an answer: `delivered` (its success check passed),
`kept` (queued for a retry), `deleted` (dropped without delivery), `raised` (a server SDK
reports the failure to its caller, which still holds the data)."""


@dataclass
class Shape:
    sdk: str
    method: str
    target: str                  # path and query, exactly as sent
    headers: dict[str, str]
    body: bytes = b""
    success: Callable[[int, bytes], bool] = field(default=lambda status, body: status == 200)
    on_failure: Callable[[int], Reading] = field(default=lambda status: "kept")

    def reading(self, status: int, body: bytes) -> Reading:
        return "delivered" if self.success(status, body) else self.on_failure(status)


def b64(payload: Any) -> str:
    return base64.b64encode(json.dumps(payload).encode()).decode()


def basic(user: str, secret: str = "") -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


def json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def status_one(status: int, body: bytes) -> bool:
    parsed = json_or_none(body)
    return status == 200 and isinstance(parsed, dict) and parsed.get("status") == 1


# -- sending ------------------------------------------------------------------------------------
@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def send(client: Any, shape: Shape, headers: dict[str, str] | None = None) -> Reply:
    """`shape` through the relay under test, its target byte for byte (yarl would re-quote it)."""
    response = await client.session.request(shape.method, raw_url(client, shape.target),
                                            data=shape.body or None,
                                            headers={**shape.headers, **(headers or {})})
    body = await response.read()
    return Reply(response.status, dict(response.headers), body)


def records_of(received: Any) -> list[Any]:
    """The records of one request a fake upstream received: a JSON/NDJSON body or `data=`."""
    plain: bytes = received.plain_body()
    if plain.lstrip()[:1] in (b"[", b"{"):
        lines = plain.strip().split(b"\n")
        if len(lines) > 1 and lines[0].strip()[:1] == b"{":
            return [json.loads(line) for line in lines if line.strip()]
        payload = json.loads(plain)
        return payload if isinstance(payload, list) else [payload]
    records: list[Any] = received.records()
    return records


