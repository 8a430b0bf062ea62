"""What the SDK is told when the upstream misbehaves inside its HTTP framing, end to end: through
the relay (its edge, handler and spool) to a raw loopback upstream that writes the bytes shown.

An answer counts only when it is complete (head, then a body complete by Content-Length, chunked
terminator, or the connection's end after a complete head); anything less is an upstream failure,
answered 503 + Retry-After JSON, never a 200 for a batch that never reached Mixpanel.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.conftest import US_TOKEN, RelayFactory
from tests.support.faulty import OK_ANSWER, RawUpstream, numbered_events
from tests.support.helpers import FORM, as_base64
from tests.support.waits import eventually

ORIGIN = {**FORM, "Origin": "https://shop.example"}


@dataclass
class ScriptedUpstream(RawUpstream):
    """A RawUpstream that answers request number n (counted over all connections) with
    `script[n]` (the last one repeats); None in the script means: close without answering.
    An answer that is not a complete one closes the connection after it."""

    script: list[bytes | None] = field(default_factory=list)
    answered: int = 0

    async def _answer(self, writer: asyncio.StreamWriter) -> bool:
        step = self.script[min(self.answered, len(self.script) - 1)]
        self.answered += 1
        if step is None:
            return False
        writer.write(step)
        await writer.drain()
        return step.endswith(OK_ANSWER)


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedUpstream]:
    upstream = ScriptedUpstream()
    yield upstream
    await upstream.stop()


async def relay_for(make_relay: RelayFactory, upstream: ScriptedUpstream,
                    extra: dict[str, Any] | None = None) -> Any:
    await upstream.start()
    return await make_relay({"regions": {"us": {"url": upstream.url}},
                             "upstream": {"read_timeout": 1.0}, **(extra or {})})


async def track(client: Any, body: bytes) -> tuple[int, Any, str | None]:
    response = await client.post("/track/", data=body, headers=ORIGIN)
    payload = await response.json(content_type=None)
    return response.status, payload, response.headers.get("Retry-After")


CUT_HEADS = [
    b"HTTP/1.1 200 OK\r\nContent-Typ",                        # inside a field name
    b"HTTP/1.1 200 OK\r\n",                                   # right after the status line
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n",       # before the blank line
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n",          # head whole, body missing
    b"HTTP/1.1 200",                                          # inside the status line
]


@pytest.mark.parametrize("cut", CUT_HEADS, ids=range(len(CUT_HEADS)))
async def test_an_answer_cut_anywhere_is_a_503_never_a_200(
        make_relay: RelayFactory, scripted: ScriptedUpstream, cut: bytes) -> None:
    scripted.script = [cut]
    client = await relay_for(make_relay, scripted)
    (_, body), = numbered_events(US_TOKEN, 1, "cut")
    status, payload, retry_after = await track(client, body)
    assert (status, retry_after) == (503, "10"), payload
    assert payload["status"] == 0 and "upstream unavailable" in payload["error"]
    assert len(scripted.received) >= 1           # it got there; the answer did not come back


async def test_a_cut_head_with_the_spool_on_is_stored_and_delivered_later(
        make_relay: RelayFactory, scripted: ScriptedUpstream, tmp_path: Path) -> None:
    scripted.script = [b"HTTP/1.1 200 OK\r\nContent-Typ", OK_ANSWER]
    client = await relay_for(make_relay, scripted, {"spool": {
        "enabled": True, "path": str(tmp_path / "spool.db"), "backoff_min": 0.05,
        "backoff_max": 0.2, "poll_interval": 0.1}})
    (_, body), = numbered_events(US_TOKEN, 1, "spooled")
    status, payload, _ = await track(client, body)
    assert (status, payload) == (200, 1)           # stored durably, not "accepted upstream"
    await eventually(lambda: len(scripted.accepted) == 1, timeout=10,
                     what="the stored batch to reach the upstream")
    assert scripted.accepted[0].body == body


async def test_early_hints_are_skipped_for_the_final_answer(
        make_relay: RelayFactory, scripted: ScriptedUpstream) -> None:
    scripted.script = [b"HTTP/1.1 103 Early Hints\r\nLink: </a.js>; rel=preload\r\n\r\n"
                       b"HTTP/1.1 100 Continue\r\n\r\n" + OK_ANSWER]
    client = await relay_for(make_relay, scripted)
    for n in range(2):                              # and the connection stays in step
        (_, body), = numbered_events(US_TOKEN, 1, f"hints-{n}")
        status, payload, _ = await track(client, body)
        assert (status, payload) == (200, 1)
    assert scripted.connections == 1


async def test_an_unasked_101_is_a_503(make_relay: RelayFactory,
                                       scripted: ScriptedUpstream) -> None:
    scripted.script = [b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                       b"Connection: Upgrade\r\n\r\n" + OK_ANSWER]
    client = await relay_for(make_relay, scripted)
    (_, body), = numbered_events(US_TOKEN, 1, "upgrade")
    status, payload, _ = await track(client, body)
    assert status == 503 and "101" in payload["error"], payload


def engage_body(n: int) -> bytes:
    update = [{"$token": US_TOKEN, "$distinct_id": "u1", "$add": {"visits": 1}, "n": n}]
    return f"data={quote(as_base64(update), safe='')}".encode()


async def test_a_dropped_kept_alive_connection_is_retried_for_track_not_for_engage(
        make_relay: RelayFactory, scripted: ScriptedUpstream) -> None:
    """The keep-alive race: the upstream closes a pooled connection just as the next request
    goes on it. /track (deduplicated by $insert_id) goes again on a fresh connection; /engage
    (`$add` counts twice if sent twice) is answered 503 and left to the SDK's own retry."""
    scripted.script = [OK_ANSWER, None, OK_ANSWER, OK_ANSWER, None]
    client = await relay_for(make_relay, scripted)
    events = numbered_events(US_TOKEN, 2, "race")
    assert (await track(client, events[0][1]))[:2] == (200, 1)
    assert (await track(client, events[1][1]))[:2] == (200, 1)      # dropped, then sent again
    assert [item.body for item in scripted.received] == [
        events[0][1], events[1][1], events[1][1]]
    first = await client.post("/engage/", data=engage_body(1), headers=ORIGIN)
    assert first.status == 200
    second = await client.post("/engage/", data=engage_body(2), headers=ORIGIN)
    assert second.status == 503                                     # dropped: not sent again
    assert [item.body for item in scripted.received[3:]] == [engage_body(1), engage_body(2)]
