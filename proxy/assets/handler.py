"""The aiohttp edge of the asset relay: `GET`/`HEAD <path><name>` and the root aliases.

The name is read from the raw request target, never from aiohttp's decoded path, so percent-
escapes and dot segments cannot smuggle a traversal past the name rules.
"""

from __future__ import annotations

from aiohttp import web

from ..config.assets import AssetsConfig
from ..endpoints import ROOT_ALIASES, is_valid_name
from ..ops.metrics import Metrics
from ..relay import answers
from .cache import CachedAsset
from .encoding import negotiate, none_match
from .fetch import BrokenAsset
from .names import content_type
from .service import AssetService

__all__ = ["AssetHandler"]

IMMUTABLE_CACHE_CONTROL = "public, max-age=31536000, immutable"
_METHODS = ("GET", "HEAD")


class AssetHandler:
    def __init__(self, service: AssetService, config: AssetsConfig, metrics: Metrics) -> None:
        self._service = service
        self._metrics = metrics
        self._prefix = config.path
        self._aliases = dict(ROOT_ALIASES) if config.aliases else {}
        self._mutable_tail = (f"stale-while-revalidate={int(config.stale_while_revalidate)}, "
                              f"stale-if-error={int(config.stale_if_error)}")

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Register before the API's catch-all route, which would otherwise take these paths."""
        router.add_route("*", self._prefix + "{name:.*}", self.handle)
        for alias in self._aliases:
            router.add_route("*", alias, self.handle)

    def name_of(self, raw_path: str) -> str | None:
        target = raw_path.partition("?")[0]
        if target in self._aliases:
            return self._aliases[target]
        if not target.startswith(self._prefix):
            return None
        name = target[len(self._prefix):]
        return name if is_valid_name(name) else None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = self.name_of(request.raw_path)
        if name is None:
            self._metrics.reject("not_found")
            return self._answer(answers.error(
                404, "no such bundle: a bundle name looks like mixpanel-2-latest.min.js"))
        if request.method not in _METHODS:
            self._metrics.reject("method")
            return self._answer(answers.error(
                405, f"{request.method} is not allowed here", {"Allow": "GET, HEAD"}))
        try:
            asset = await self._service.get(name)
        except BrokenAsset as exc:
            return self._answer(_unavailable(name, exc))
        return self._answer(self._serve(request, asset))

    def _serve(self, request: web.Request, asset: CachedAsset) -> web.Response:
        variant = asset.variant(negotiate(request.headers.get("Accept-Encoding"), asset.codings))
        headers = {
            "Cache-Control": self._cache_control(asset),
            "ETag": variant.etag,
            "Vary": "Accept-Encoding",
            # Scripts load without `crossorigin`, but SRI and error reporting need CORS.
            "Access-Control-Allow-Origin": "*",
            "X-Content-Type-Options": "nosniff",
            "Server": answers.SERVER,
        }
        if none_match(request.headers.get("If-None-Match"), variant.etag):
            return web.Response(status=304, headers=headers)
        headers["Content-Type"] = content_type(asset.name)
        if variant.coding != "identity":
            headers["Content-Encoding"] = variant.coding
        return web.Response(body=variant.body, headers=headers)

    def _cache_control(self, asset: CachedAsset) -> str:
        if asset.immutable:
            return IMMUTABLE_CACHE_CONTROL
        max_age = self._service.policy.max_age(asset, self._service.clock())
        return f"public, max-age={max_age}, {self._mutable_tail}"

    def _answer(self, response: web.Response) -> web.Response:
        self._metrics.count_request("assets", "cdn", response.status)
        return response


def _unavailable(name: str, exc: BrokenAsset) -> web.Response:
    if exc.missing:
        return answers.error(404, f"the CDN has no bundle named {name}")
    return answers.error(502, f"the CDN gave no usable copy of {name} and none is cached "
                              f"({exc.kind})", {"Retry-After": "5"}, reason=exc.kind)
