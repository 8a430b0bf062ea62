"""A fake cdn.mxpnl.com: a real aiohttp server on loopback that serves the real bundle files of
the npm package mixpanel-browser (installed in tests/js by tests/install.sh) under their CDN
names, records every request, answers conditional requests, and misbehaves on command.

    cdn = FakeCdn(); await cdn.start()
    cdn.url                      -> "http://127.0.0.1:<port>/libs/"  (a `cdn_url`)
    cdn.count("mixpanel-2-latest.min.js")
    cdn.misbehave("status_500" | "html" | "html_as_js" | "truncated" | "wrong_type" | "ok")
    cdn.publish(name, body)      -> a new release under the same name (new ETag, Last-Modified)
    await cdn.go_down(); await cdn.come_back()   -> connection refused, then the same port again
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from typing import Literal

from aiohttp import web
from aiohttp.test_utils import TestServer

__all__ = ["DIST", "SDK_VERSION", "CdnRequest", "FakeCdn", "cdn_files"]

SDK_VERSION = "2.83.0"
DIST = Path(__file__).resolve().parent.parent / "js" / "node_modules" / "mixpanel-browser" / "dist"

# The loaders under their CDN names (the snippet loads mixpanel-2-latest.min.js; the unminified
# one is what Mixpanel's nginx proxy serves as /lib.js).
LOADERS = {"mixpanel-2-latest.min.js": "mixpanel.min.js",
           "mixpanel-2-latest.js": "mixpanel.globals.js"}
# Unhashed names still built and still loaded by older pages.
LEGACY_PREFIXES = ("mixpanel-recorder", "mixpanel-targeting", "mixpanel-with-recorder",
                   "mixpanel-js-wrapper")

Mode = Literal["ok", "status_500", "html", "html_as_js", "truncated", "wrong_type"]
_RELEASED = datetime(2026, 6, 1, tzinfo=UTC)
_HTML_PAGE = (b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
              b"<body><h1>Bad Gateway</h1></body></html>")


@functools.cache
def _read_dist(dist: Path) -> dict[str, bytes]:
    if not dist.is_dir():
        raise FileNotFoundError(f"{dist} is missing: run `bash tests/install.sh` "
                                "(npm ci --prefix tests/js)")
    files = {cdn_name: (dist / source).read_bytes() for cdn_name, source in LOADERS.items()}
    for path in sorted((dist / "async-modules").iterdir()):
        files[path.name] = path.read_bytes()
    for path in sorted(dist.iterdir()):
        if path.name.startswith(LEGACY_PREFIXES) and path.name.endswith((".js", ".js.map")):
            files[path.name] = path.read_bytes()
    return files


def cdn_files(dist: Path = DIST) -> dict[str, bytes]:
    """CDN name -> bytes, for every bundle the real CDN serves under /libs/ for this release."""
    return dict(_read_dist(dist))


@dataclass(frozen=True)
class CdnRequest:
    method: str
    name: str
    headers: dict[str, str]


@dataclass
class FakeCdn:
    # Megabytes of bundles: never in a repr. (Python 3.11's asyncio.Runner reprs the task that
    # set up a fixture, with its result, on every run: a full repr here cost ~0.3 s a test.)
    files: dict[str, bytes] = field(default_factory=cdn_files, repr=False)
    requests: list[CdnRequest] = field(default_factory=list)
    mode: Mode = "ok"
    gate: asyncio.Event | None = None       # set: every answer waits until the event is set
    prefix: str = "/libs/"
    server: TestServer | None = None
    _released: dict[str, datetime] = field(default_factory=dict)
    _port: int | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", self.prefix + "{name:.*}", self._handle)
        self.server = TestServer(app, host="127.0.0.1", port=self._port or 0)
        await self.server.start_server()
        self._port = self.server.port

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None

    async def go_down(self) -> None:
        """Stop listening: fetches now fail with connection refused."""
        await self.close()

    async def come_back(self) -> None:
        await self.start()

    @property
    def url(self) -> str:
        assert self._port is not None, "start() the fake CDN first"
        return f"http://127.0.0.1:{self._port}{self.prefix}"

    def count(self, name: str | None = None) -> int:
        return sum(1 for request in self.requests if name is None or request.name == name)

    def misbehave(self, mode: Mode) -> None:
        self.mode = mode

    def publish(self, name: str, body: bytes) -> None:
        """A new release of `name`: new bytes, new ETag, a later Last-Modified."""
        self.files[name] = body
        self._released[name] = self._release_time(name) + timedelta(hours=1)

    def etag(self, name: str) -> str:
        return '"' + hashlib.sha1(self.files[name]).hexdigest()[:20] + '"'

    def _release_time(self, name: str) -> datetime:
        return self._released.get(name, _RELEASED)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.requests.append(CdnRequest(request.method, name, dict(request.headers)))
        if self.gate is not None:
            await self.gate.wait()
        if self.mode == "status_500":
            return web.Response(status=500, text="internal error")
        if self.mode == "html":
            return web.Response(body=_HTML_PAGE, content_type="text/html")
        if name not in self.files:
            return web.Response(status=404, body=b"<Error>NoSuchKey</Error>",
                                content_type="application/xml")
        if self.mode == "html_as_js":
            return web.Response(body=_HTML_PAGE, content_type="application/javascript")
        if self._not_modified(request, name):
            return web.Response(status=304, headers=self._validators(name))
        if self.mode == "truncated":
            return await self._truncated(request, name)
        content_type = "text/plain" if self.mode == "wrong_type" else _content_type(name)
        return web.Response(body=self.files[name], content_type=content_type,
                            headers=self._validators(name))

    def _validators(self, name: str) -> dict[str, str]:
        return {"ETag": self.etag(name),
                "Last-Modified": format_datetime(self._release_time(name), usegmt=True),
                "Cache-Control": "public, max-age=3600"}

    def _not_modified(self, request: web.Request, name: str) -> bool:
        if_none_match = request.headers.get("If-None-Match")
        if if_none_match is not None:
            return self.etag(name) in [tag.strip() for tag in if_none_match.split(",")]
        since = request.headers.get("If-Modified-Since")
        if since is None:
            return False
        try:
            return self._release_time(name) <= parsedate_to_datetime(since)
        except (TypeError, ValueError):
            return False

    async def _truncated(self, request: web.Request, name: str) -> web.StreamResponse:
        body = self.files[name]
        response = web.StreamResponse(headers={"Content-Type": _content_type(name),
                                               **self._validators(name)})
        response.content_length = len(body)
        await response.prepare(request)
        await response.write(body[: len(body) // 2])
        # Hang up mid-body, as a dying CDN edge does: fewer bytes than Content-Length promised.
        assert request.transport is not None
        request.transport.close()
        return response


def _content_type(name: str) -> str:
    return "application/json" if name.endswith(".map") else "application/javascript"
