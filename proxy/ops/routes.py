"""The operator endpoints and their background work, wired into the app by `install_ops`.

- `/healthz`: liveness, answered without looking at anything.
- `/readyz`: 200 or 503 with the checks (details only for clients in `[metrics] allow`).
- `/metrics` and `/status`: only for clients in `[metrics] allow` (others get 403 JSON); on the
  main listener, or on their own listener when `[metrics] listen` is set (then the main listener
  does not serve them).

"Client" is the address resolved through `[server] trusted_proxies`, as for the API: behind a
front the TCP peer is always the front, so deciding on the peer would open the ops endpoints to
everyone the front serves.
- Background: the region probe and the status page's rate sampler.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from ..config import Config
from ..decide.clientip import ClientIPResolver
from ..relay import answers
from ..upstream.client import UpstreamClient
from . import multiproc
from .accesslog import request_facts
from .health import Readiness, RegionHealth, directory_writable, probe_regions_forever
from .metrics import CONTENT_TYPE_LATEST, Metrics
from .status import CSP, StatusBoard

__all__ = [
    "OPS_LISTENER_KEY", "READINESS_KEY", "STATUS_BOARD_KEY", "Ops", "OpsListener",
    "install_ops", "ops_paths",
]

_PROBES = frozenset({"/healthz", "/readyz"})
_SCRAPES = frozenset({"/metrics", "/status"})
_SAMPLE_INTERVAL = 5.0

Context = Callable[[web.Application], AsyncIterator[None]]


class OpsListener:
    """The separate `[metrics] listen` listener, once started (tests read its address)."""

    def __init__(self) -> None:
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        assert self.runner is not None, "the ops listener has not started"
        host, port = self.runner.addresses[0][:2]
        return f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"


OPS_LISTENER_KEY = web.AppKey("ops_listener", OpsListener)
READINESS_KEY = web.AppKey("readiness", Readiness)
STATUS_BOARD_KEY = web.AppKey("status_board", StatusBoard)


class Ops:
    """The handlers, sharing one access rule: `[metrics] allow`."""

    def __init__(self, config: Config, metrics: Metrics, readiness: Readiness,
                 board: StatusBoard) -> None:
        self._metrics = metrics
        self._readiness = readiness
        self._board = board
        self._allowed = ClientIPResolver(config.metrics.allow)
        self._clients = ClientIPResolver(config.server.trusted_proxies,
                                         config.server.client_ip_header)

    def permitted(self, request: web.Request) -> bool:
        """Whether the request's client (not merely its TCP peer) is in `[metrics] allow`."""
        headers = request.headers
        header = self._clients.header
        client = self._clients.resolve(request.remote, headers.get("X-Forwarded-For"),
                                       headers.get("X-Real-IP"),
                                       headers.get(header) if header else None)
        request_facts().client_ip = client
        return self._allowed.is_trusted(client)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        ready, body = await self._readiness.evaluate()
        if not self.permitted(request):
            # Others (a load balancer) learn which checks failed, not the hosts and errors.
            body = {"ready": ready, "failed": body["failed"], "unreachable": body["unreachable"]}
        return web.json_response(body, status=200 if ready else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        if not self.permitted(request):
            return self._refuse(request)
        return web.Response(body=self._metrics.exposition(),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def status(self, request: web.Request) -> web.Response:
        if not self.permitted(request):
            return self._refuse(request)
        page = await self._board.render()
        return web.Response(text=page, content_type="text/html", charset="utf-8",
                            headers={"Content-Security-Policy": CSP,
                                     "Cache-Control": "no-store"})

    def _refuse(self, request: web.Request) -> web.Response:
        # Said as it is (a 404 would read like a typo in the scrape config): the path is
        # documented anyway, and what is refused is the caller, named by its access-log line.
        self._metrics.reject("ops_refused")
        request_facts().reason = "ops_refused"
        return answers.error(403, f"{request.path} is served only to [metrics] allow addresses")

    def add_routes(self, app: web.Application, *, scrape: bool) -> None:
        app.router.add_get("/healthz", self.healthz, allow_head=True)
        app.router.add_get("/readyz", self.readyz, allow_head=True)
        if scrape:
            app.router.add_get("/metrics", self.metrics)
            app.router.add_get("/status", self.status)


def ops_paths(config: Config) -> frozenset[str]:
    """The paths the main listener answers itself (kept out of access logs and byte counts)."""
    return _PROBES if config.metrics.listen is not None else _PROBES | _SCRAPES


def install_ops(app: web.Application, config: Config, metrics: Metrics, health: RegionHealth,
                upstream: UpstreamClient) -> Readiness:
    """Add the operator routes and background work to `app`; returns the readiness registry.

    Call it before the catch-all relay route, and after the upstream session's cleanup_ctx.
    """
    readiness = Readiness(health, config.health.regions, metrics,
                          gate_regions=config.health.require_regions)
    if config.spool.enabled:
        # The spool may register a richer "spool" check of its own; it replaces this one.
        readiness.add_check("spool", directory_writable(config.spool.path))
    board = StatusBoard(config, metrics, readiness)
    ops = Ops(config, metrics, readiness, board)
    separate = config.metrics.listen is not None
    ops.add_routes(app, scrape=not separate)
    app.cleanup_ctx.append(_background(config, metrics, health, upstream, readiness, board))
    if separate:
        listener = app[OPS_LISTENER_KEY] = OpsListener()
        app.cleanup_ctx.append(_ops_listener(config, ops, listener))
    app[READINESS_KEY] = readiness
    app[STATUS_BOARD_KEY] = board
    return readiness


def _background(config: Config, metrics: Metrics, health: RegionHealth, upstream: UpstreamClient,
                readiness: Readiness, board: StatusBoard) -> Context:
    async def context(app: web.Application) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(_every(_SAMPLE_INTERVAL, board.sample))]
        if multiproc.active():   # this worker's values, for the scrapes other workers answer
            tasks.append(asyncio.create_task(_every(multiproc.PUBLISH_INTERVAL, metrics.publish)))
        if config.health.probe_interval > 0:
            tasks.append(asyncio.create_task(
                probe_regions_forever(config, upstream, health, metrics)))
        readiness.config_loaded(config.source)
        yield
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        metrics.publish()        # the last counts of a draining worker are kept
    return context


def _ops_listener(config: Config, ops: Ops, listener: OpsListener) -> Context:
    async def context(app: web.Application) -> AsyncIterator[None]:
        assert config.metrics.listen is not None
        host, port = config.metrics.listen
        ops_app = web.Application()
        ops.add_routes(ops_app, scrape=True)
        runner = web.AppRunner(ops_app, access_log=None)
        await runner.setup()
        # Every worker binds it, and a new generation binds it while the old one still holds it
        # (a reload); whichever worker a scrape reaches answers for all (ops/multiproc.py).
        await web.TCPSite(runner, host, port, reuse_port=True).start()
        listener.runner = runner
        yield
        listener.runner = None
        await runner.cleanup()

    return context


async def _every(interval: float, job: Callable[[], None]) -> None:
    while True:
        job()
        await asyncio.sleep(interval)
