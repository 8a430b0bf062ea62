"""Real loopback servers that stand in for Mixpanel's regional APIs and record what they receive."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy.codec import decode_data, extract_data, inflate


@dataclass
class Received:
    method: str
    path: str
    query: str            # raw query string, exactly as it crossed the wire
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)   # arrival: tests of retry timing read it

    def plain_body(self) -> bytes:
        """The body with its Content-Encoding undone, as Mixpanel reads it."""
        return inflate(self.body, self.headers.get("Content-Encoding", ""), 64 * 1024 * 1024)

    def data(self) -> Any:
        """The decoded `data=` payload (form body or query)."""
        value = extract_data(self.plain_body(), self.query.encode())
        assert value is not None, f"no data= in {self.body[:80]!r}"
        return decode_data(value)

    def records(self) -> list[Any]:
        payload = self.data()
        return payload if isinstance(payload, list) else [payload]


@dataclass
class FakeUpstream:
    """A fake Mixpanel region: answers like Mixpanel unless told otherwise, records every call."""

    name: str
    received: list[Received] = field(default_factory=list)
    status: int = 200
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    server: TestServer | None = None
    _down_port: int = 0
    _gate: asyncio.Event | None = None

    def app(self) -> web.Application:
        # Record the bytes exactly as they crossed the wire: no inflating of gzip bodies.
        app = web.Application(client_max_size=64 * 1024 * 1024,
                              handler_args={"auto_decompress": False})
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append(Received(
            method=request.method, path=request.path,
            query=request.raw_path.partition("?")[2], headers=dict(request.headers), body=body))
        if self._gate is not None:
            await self._gate.wait()
        if self.delay:
            await asyncio.sleep(self.delay)   # paces the answer: a slow region
        headers = {"Access-Control-Allow-Origin": "https://mixpanel.example",
                   "Set-Cookie": "upstream=1", **self.headers}
        if self.body is not None:
            return web.Response(status=self.status, body=self.body, headers=headers)
        if request.path.startswith("/record"):
            return web.json_response({"code": self.status, "status": "OK"}, status=self.status,
                                     headers=headers)
        if request.path.startswith("/flags"):
            return web.json_response({"flags": {"demo": {"variant_key": "on",
                                                         "variant_value": True}}},
                                     status=self.status, headers=headers)
        if request.path.startswith("/settings"):
            return web.json_response({"sdk_config": {"config": {"record_sessions_percent": 100}}},
                                     status=self.status, headers=headers)
        verbose = "verbose=1" in request.raw_path or b"verbose=1" in body
        if verbose or request.path.startswith("/import"):
            return web.json_response({"status": 1, "error": None}, status=self.status,
                                     headers=headers)
        return web.Response(status=self.status, text="1", headers=headers)

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    def answer(self, status: int, body: bytes | dict[str, Any] | None = None,
               headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.body = json.dumps(body).encode() if isinstance(body, dict) else body
        self.headers = headers or {}

    def clear(self) -> None:
        self.received.clear()

    def hold(self) -> None:
        """Record each request as it arrives, but answer none until `release()`: a test then
        knows a request is upstream (it is in `received`) and decides when its answer goes."""
        self._gate = asyncio.Event()

    def release(self) -> None:
        """Answer everything held, and from now on answer at once."""
        if self._gate is not None:
            self._gate.set()
            self._gate = None

    def reset(self) -> None:
        """Back to answering like Mixpanel with nothing recorded (a shared fake between tests)."""
        self.release()
        self.clear()
        self.answer(200)
        self.delay = 0.0

    async def go_down(self) -> None:
        """Stop listening: connections are refused until `come_back` (on the same port)."""
        assert self.server is not None and self.server.port is not None
        self._down_port = self.server.port
        await self.server.close()

    async def come_back(self) -> None:
        self.server = TestServer(self.app(), host="127.0.0.1", port=self._down_port)
        await self.server.start_server()
