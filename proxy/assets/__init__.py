"""The asset relay: the SDK loader and every async bundle under the CDN's `/libs/`, served
first-party from a cache that never serves a broken file. `add_assets` wires it into an app."""

from __future__ import annotations

import time

from aiohttp import web

from ..config import Config
from ..metrics import Metrics
from ..ops import STATUS_BOARD_KEY
from ..status import asset_rows
from ..upstream import UpstreamClient
from .handler import AssetHandler
from .service import AssetService

__all__ = ["ASSETS_KEY", "AssetService", "add_assets", "public_api_host"]

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


def public_api_host(config: Config) -> str | None:
    """The SDK's `api_host` for this deployment, when `[assets] public_url` is set."""
    if config.assets.public_url is None:
        return None
    return str(config.assets.public_url).rstrip("/") + config.routing.base_path
