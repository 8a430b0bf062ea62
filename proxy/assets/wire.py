"""The asset relay wired into an app: its service on the app, its routes before the API's
catch-all, its lifecycle, and its panel on the status page. The one place where assets/ meets
ops/ (the package's other modules know nothing of aiohttp's app or the status board)."""

from __future__ import annotations

import time
from collections.abc import Iterable

from aiohttp import web

from ..config import Config
from ..ops.metrics import Metrics
from ..ops.routes import STATUS_BOARD_KEY
from ..ops.status import Rows, age_text, size_text
from ..upstream.client import UpstreamClient
from .cache import CachedAsset
from .handler import AssetHandler
from .service import AssetService
from .snippet import public_api_host

__all__ = ["ASSETS_KEY", "add_assets", "asset_rows"]

ASSETS_KEY = web.AppKey("assets", AssetService)


def add_assets(app: web.Application, config: Config, upstream: UpstreamClient,
               metrics: Metrics) -> None:
    """Routes and lifecycle of the asset relay; call before the API's catch-all route and
    after the upstream session's cleanup context (the service fetches through it)."""
    if not config.assets.enabled:
        return
    service = AssetService(config.assets, upstream, metrics, api_host=public_api_host(config))
    app[ASSETS_KEY] = service
    app[STATUS_BOARD_KEY].add_panel(
        "Asset cache", lambda: asset_rows(service.cached(), time.time()))
    app.cleanup_ctx.append(service.lifecycle)
    AssetHandler(service, config.assets, metrics).add_routes(app.router)


def asset_rows(assets: Iterable[CachedAsset], now: float) -> Rows:
    """The asset cache's contents as the page shows them: name, version, age, variants."""
    return [{"name": asset.name,
             "version": asset.origin.etag or asset.origin.last_modified or "–",
             "kind": "immutable" if asset.immutable else "mutable",
             "age": age_text(now - asset.fetched_at),
             "variants": ", ".join(f"{coding} {size_text(len(variant.body))}"
                                   for coding, variant in asset.variants.items())}
            for asset in sorted(assets, key=lambda asset: asset.name)]
