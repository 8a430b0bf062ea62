"""Fetching one bundle from the CDN, refusing anything broken, and building the cached version
(rewritten identity bytes plus brotli and gzip variants, made once, off the loop when big).

A CDN answer is broken when it is not a 200 (or a 304 to our conditional request), is not
JavaScript/JSON, is empty, has fewer bytes than its Content-Length, is HTML (an error page
served as 200), or is larger than `max_file_size`. Broken answers raise `BrokenAsset` and are
never cached or relayed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from dataclasses import dataclass

from yarl import URL

from .. import __version__
from ..upstream.client import UpstreamClient, UpstreamFailure
from .cache import CachedAsset, Origin, Variant
from .encoding import ENCODERS, PREFERENCE, Coding
from .names import is_immutable
from .rewrite import Rewriter

__all__ = ["BrokenAsset", "CdnFetcher", "NotModified", "VariantBuilder"]

# Compressing more than this runs in the default executor, as aiohttp does for its own
# compression (MAX_SYNC_CHUNK_SIZE): a 1.4 MB source map at brotli 11 takes over a second.
OFFLOAD_ABOVE = 32 * 1024

_JS_TYPES = ("application/javascript", "text/javascript", "application/x-javascript",
             "application/ecmascript", "text/ecmascript")
_MAP_TYPES = ("application/json", "application/octet-stream", "binary/octet-stream",
              "text/plain")
_HTML_STARTS = (b"<!doctype", b"<html", b"<head", b"<body", b"<?xml", b"<error")


class BrokenAsset(Exception):
    """The CDN did not give a usable copy. `kind` is a metrics label from a closed set:
    status, content_type, html, truncated, too_large, empty, encoding, connect, timeout,
    protocol."""

    def __init__(self, kind: str, message: str, cdn_status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.cdn_status = cdn_status

    @property
    def missing(self) -> bool:
        """The CDN says there is no such file (S3-style stores answer 403 for that too)."""
        return self.cdn_status in (403, 404, 410)


@dataclass(frozen=True)
class NotModified:
    """The CDN confirmed (304) that the copy we hold is current."""


class CdnFetcher:
    def __init__(self, upstream: UpstreamClient, cdn_url: URL, timeout: float,
                 max_file_size: int) -> None:
        self._upstream = upstream
        self._cdn_url = str(cdn_url)
        self._timeout = timeout
        self._max_size = max_file_size

    async def fetch(self, name: str, held: Origin | None = None) -> Origin | NotModified:
        """GET `name`, conditionally when `held` carries validators."""
        headers = {"Accept-Encoding": "identity", "User-Agent": f"mixpanel-proxy/{__version__}"}
        if held is not None and held.etag:
            headers["If-None-Match"] = held.etag
        if held is not None and held.last_modified:
            headers["If-Modified-Since"] = held.last_modified
        try:
            answer = await self._upstream.send("GET", URL(self._cdn_url + name, encoded=True),
                                               headers, None, read_timeout=self._timeout)
        except UpstreamFailure as exc:
            # A CDN hanging up mid-body is a `protocol` failure of the upstream client.
            raise BrokenAsset(exc.kind, exc.message) from exc
        if answer.status == 304 and held is not None:
            return NotModified()
        if answer.status != 200:
            raise BrokenAsset("status", f"the CDN answered {answer.status} for {name}",
                              answer.status)
        self._check(name, answer.headers.get("Content-Type", ""),
                    answer.headers.get("Content-Encoding", "identity"),
                    answer.headers.get("Content-Length"), answer.body)
        return Origin(answer.body, answer.headers.get("ETag"),
                      answer.headers.get("Last-Modified"))

    def _check(self, name: str, content_type: str, encoding: str, length: str | None,
               body: bytes) -> None:
        media_type = content_type.partition(";")[0].strip().lower()
        allowed = _MAP_TYPES if name.endswith(".map") else _JS_TYPES
        if media_type not in allowed:
            raise BrokenAsset("content_type", f"{name} came as {media_type or 'no type'}")
        if encoding.strip().lower() not in ("", "identity"):
            raise BrokenAsset("encoding", f"{name} came {encoding}-encoded, identity was asked")
        if length is not None and length.isdigit() and int(length) != len(body):
            raise BrokenAsset("truncated", f"{name}: {len(body)} of {length} bytes arrived")
        if not body.strip():
            raise BrokenAsset("empty", f"{name} came empty")
        if len(body) > self._max_size:
            raise BrokenAsset("too_large", f"{name} is {len(body)} bytes, over max_file_size")
        if body.lstrip()[:16].lower().startswith(_HTML_STARTS):
            raise BrokenAsset("html", f"{name} came as an HTML page")


class VariantBuilder:
    """Turns a CDN copy into the served version: rewritten bytes, variants, strong ETags."""

    def __init__(self, rewriter: Rewriter, brotli_quality: int) -> None:
        self._rewriter = rewriter
        self._quality = brotli_quality

    async def build(self, name: str, origin: Origin, fetched_at: float) -> CachedAsset:
        body = self._rewriter.rewrite(origin.body) if self._rewriter.applies_to(name) \
            else origin.body
        tag = _digest(body)
        variants: dict[Coding, Variant] = {"identity": Variant("identity", body, f'"{tag}"')}
        for coding in PREFERENCE:
            encoded = await self._encode(coding, body)
            if len(encoded) < len(body):
                variants[coding] = Variant(coding, encoded, f'"{tag}-{coding}"')
        return CachedAsset(
            name=name, immutable=is_immutable(name), origin=origin, variants=variants,
            fetched_at=fetched_at, codings=_smallest_first(variants))

    async def _encode(self, coding: Coding, body: bytes) -> bytes:
        encoder = ENCODERS[coding]
        if len(body) <= OFFLOAD_ABOVE:
            return encoder(body, self._quality)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, encoder, body, self._quality)


def _smallest_first(variants: dict[Coding, Variant]) -> tuple[Coding, ...]:
    # At low brotli qualities gzip can win on small files; negotiation takes the first of
    # equally acceptable codings, so the smallest goes first.
    compressed = [coding for coding in PREFERENCE if coding in variants]
    return tuple(sorted(compressed, key=lambda coding: len(variants[coding].body)))


def _digest(body: bytes) -> str:
    raw = hashlib.sha256(body).digest()[:18]
    return base64.urlsafe_b64encode(raw).decode()
