"""Socket-free harness for the lean edge: feed bytes to `EdgeConnection`, read what it writes.

`FakeTransport` is the smallest asyncio transport the edge uses: it records writes, keeps a write
buffer that only the test drains (calling the protocol's pause_writing / resume_writing at a
high-water mark, as asyncio's transports do), and records reading pauses, half-closes and closes.
`edge_for` builds the shared `Edge` from a real app (the relay's real path matcher, limits and
metrics); what aiohttp would take over is recorded by `HandedOver`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from proxy.app import ACCESS_KEY, CONFIG_KEY, METRICS_KEY, RELAY_KEY, create_app
from proxy.config import parse_config
from proxy.decide.headers import CorsPolicy
from proxy.ops.metrics import EDGE_HANDOVER_REASONS
from proxy.server.edge.connection import Edge, EdgeConnection


class FakeTransport(asyncio.Transport):
    def __init__(self, high_water: int = 64 * 1024) -> None:
        super().__init__()
        self.protocol: asyncio.Protocol | None = None
        self.written = bytearray()
        self.unsent = 0
        self.high_water = high_water
        self.reading = True
        self.write_paused = False
        self.closed = False
        self.eof = False

    def attach(self, protocol: asyncio.Protocol) -> asyncio.Protocol:
        self.protocol = protocol
        protocol.connection_made(self)
        return protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed and not self.eof, "written after close"
        self.written += data
        self.unsent += len(data)
        if self.unsent > self.high_water and not self.write_paused:
            self.write_paused = True
            assert self.protocol is not None
            self.protocol.pause_writing()

    def drain(self) -> None:
        """The client read everything: the buffer empties, writing resumes."""
        self.unsent = 0
        if self.write_paused:
            self.write_paused = False
            assert self.protocol is not None
            self.protocol.resume_writing()

    def get_write_buffer_size(self) -> int:
        return self.unsent

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed or self.eof

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None
        return self.protocol


class HandedOver(asyncio.Protocol):
    """Stands where aiohttp's protocol would: records the bytes it is handed."""

    def __init__(self) -> None:
        self.data = bytearray()

    def data_received(self, data: bytes) -> None:
        self.data += data


def edge_for(app: web.Application, handed: list[HandedOver]) -> Edge:
    metrics = app[METRICS_KEY]

    def take_over() -> asyncio.Protocol:
        protocol = HandedOver()
        handed.append(protocol)
        return protocol

    return Edge(app[RELAY_KEY], app[ACCESS_KEY], app[CONFIG_KEY].limits.body, take_over,
                {reason: metrics.edge_handovers.labels(reason)
                 for reason in EDGE_HANDOVER_REASONS}, metrics.reject,
                CorsPolicy(app[CONFIG_KEY].cors))


def offline_app(extra: dict[str, Any] | None = None,
                registry: CollectorRegistry | None = None) -> web.Application:
    """An app whose regions point nowhere: for what the edge decides before any upstream."""
    data: dict[str, Any] = {
        "regions": {name: {"url": "http://127.0.0.1:9"} for name in ("us", "eu", "in")},
        "health": {"probe_interval": 0}, **(extra or {})}
    return create_app(parse_config(data), registry=registry or CollectorRegistry())


def connect(edge: Edge, high_water: int = 64 * 1024) -> tuple[EdgeConnection, FakeTransport]:
    transport = FakeTransport(high_water)
    connection = EdgeConnection(edge)
    transport.attach(connection.as_protocol())
    return connection, transport


def answers_in(written: bytes | bytearray) -> list[tuple[int, dict[str, str], bytes]]:
    """Split what the edge wrote into answers: (status, lower-case headers, body)."""
    out = []
    rest = bytes(written)
    while rest:
        head, _, rest = rest.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {name.strip().lower(): value.strip()
                   for name, _, value in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        out.append((int(lines[0].split(" ")[1]), headers, rest[:length]))
        rest = rest[length:]
    return out
