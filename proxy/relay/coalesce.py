"""Coalescing: concurrent `/track` requests for one region merged into one upstream batch.

Why: profiling showed the upstream exchange costing most of a relayed request. Under load many
small SDK batches wait on their own upstream calls; merging them costs one decode each and one
encode per batch, and saves every other upstream exchange.

How, like a database's group commit: a lane sends a request alone (original bytes, no decoding)
while it has a free slot; requests that arrive while every slot is busy wait and go together in
the next send (up to Mixpanel's 2,000 events). At low load nothing waits and nothing changes.

What keeps it truthful:
- geolocation: Mixpanel geolocates a request by its IP when `ip=1`. A merged request carries
  many clients, so each event gets its own client's IP as `properties.ip` (unless it has one) and
  the merged request says `ip=0`: the rule of wire contract section 7. An event sent with `ip=0`
  gets no IP.
- answers: a client gets success only when the merged batch was accepted (200 and status 1).
  Anything else and each waiting client sends its own original request, alone, and is answered
  from that: one bad batch never costs another client its data, and the spool still sees each.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..codec import data_value, decode_data, extract_data, form_field
from ..codec.errors import CodecError

MAX_EVENTS = 2000
MERGED_QUERY = b"ip=0&verbose=1"
_PLAIN_QUERY_KEYS = frozenset({b"ip", b"verbose", b"_"})   # what the SDKs put on /track


@dataclass(frozen=True, slots=True)
class MergedAnswer:
    """What a merged upstream send came to, for every client that was part of it."""

    accepted: bool


SendMerged = Callable[[bytes], Awaitable[MergedAnswer]]
Waiter = tuple[list[dict[str, Any]], "asyncio.Future[MergedAnswer]"]


def coalescible_events(query: bytes, body: bytes, client_ip: str) -> list[dict[str, Any]] | None:
    """The request's events ready to merge (each with its client's IP), or None to send it as
    it is: other query parameters, a body that is not one plain `data=` field, or events that are
    not objects with properties."""
    if not _plain_query(query):
        return None
    if b"&" in body and not all(part.split(b"=", 1)[0] in (b"data", b"verbose", b"ip")
                                    for part in body.split(b"&")):
        return None
    value = extract_data(body, b"")
    if value is None:
        return None
    try:
        payload = decode_data(value)
    except CodecError:
        return None                      # let the upstream judge it, alone
    events = payload if isinstance(payload, list) else [payload]
    geolocate = form_field(query, b"ip") != b"0" and form_field(body, b"ip") != b"0"
    for event in events:
        if not isinstance(event, dict) or not isinstance(event.get("properties"), dict):
            return None
        if geolocate and client_ip and "ip" not in event["properties"]:
            event["properties"]["ip"] = client_ip
    return events


def merged_body(events: list[dict[str, Any]]) -> bytes:
    return b"data=" + data_value(events, batch=True)


def accepted(status: int, body: bytes) -> bool:
    """Mixpanel's verbose /track answer: 200 with {"status": 1}."""
    if status != 200:
        return False
    try:
        return json.loads(body).get("status") == 1    # type: ignore[no-any-return]
    except (ValueError, AttributeError):
        return body.strip() == b"1"


def _plain_query(query: bytes) -> bool:
    return all(part.split(b"=", 1)[0] in _PLAIN_QUERY_KEYS for part in query.split(b"&") if part)


class Lane:
    """One region's /track traffic: up to `slots` sends in flight, the rest merged."""

    def __init__(self, send_merged: SendMerged, slots: int, max_events: int = MAX_EVENTS) -> None:
        self._send_merged = send_merged
        self._slots = slots
        self._max_events = max_events
        self._in_flight = 0
        self._waiting: list[Waiter] = []
        # Strong references: the loop keeps only weak ones, and a collected send would leave
        # its waiters hanging.
        self._sends: set[asyncio.Future[None]] = set()

    @property
    def busy(self) -> bool:
        """True when a new request would wait to be merged rather than go at once."""
        return self._in_flight >= self._slots or bool(self._waiting)

    def enter_alone(self) -> None:
        self._in_flight += 1

    def leave_alone(self) -> None:
        self._in_flight -= 1
        self._kick()

    async def merge(self, events: list[dict[str, Any]]) -> MergedAnswer:
        future: asyncio.Future[MergedAnswer] = asyncio.get_running_loop().create_future()
        self._waiting.append((events, future))
        self._kick()
        return await future

    def _kick(self) -> None:
        while self._waiting and self._in_flight < self._slots:
            batch = self._take_batch()
            self._in_flight += 1
            task = asyncio.ensure_future(self._send(batch))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)
            task.add_done_callback(_raise_unexpected)

    def _take_batch(self) -> list[Waiter]:
        batch: list[Waiter] = []
        count = 0
        while self._waiting:
            events, future = self._waiting[0]
            if batch and count + len(events) > self._max_events:
                break
            batch.append(self._waiting.pop(0))
            count += len(events)
        return batch

    async def _send(self, batch: list[Waiter]) -> None:
        events = [event for part, _ in batch for event in part]
        answer = MergedAnswer(accepted=False)   # whatever goes wrong, waiters send their own
        try:
            answer = await self._send_merged(merged_body(events))
        finally:
            self._in_flight -= 1
            for _, future in batch:
                if not future.done():
                    future.set_result(answer)
            self._kick()


def _raise_unexpected(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        asyncio.get_running_loop().call_exception_handler(
            {"message": "coalesced send failed", "exception": task.exception()})


Outcome = Any   # UpstreamAnswer | UpstreamFailure; kept loose: this module imports no transport


class Coalescer:
    """The relay's lanes, one per region; `forward` is the relay's whole-request /track path."""

    def __init__(self, regions: list[str], slots: int, max_events: int,
                 send_merged: Callable[[str, bytes], Awaitable[MergedAnswer]],
                 on_merged: Callable[[str], None]) -> None:
        self._lanes = {region: Lane(_bound(send_merged, region), slots, max_events)
                       for region in regions}
        self._on_merged = on_merged

    async def forward(self, region: str, query: bytes, body: bytes, client_ip: str,
                      send_alone: Callable[[], Awaitable[Outcome]]) -> Outcome | None:
        """The outcome of sending alone, or None when a merged batch carried the request."""
        lane = self._lanes[region]
        if lane.busy:
            events = coalescible_events(query, body, client_ip)
            if events is not None and (await lane.merge(events)).accepted:
                self._on_merged(region)
                return None
        lane.enter_alone()
        try:
            return await send_alone()
        finally:
            lane.leave_alone()


def _bound(send_merged: Callable[[str, bytes], Awaitable[MergedAnswer]],
           region: str) -> SendMerged:
    async def send(body: bytes) -> MergedAnswer:
        return await send_merged(region, body)
    return send
