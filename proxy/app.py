"""The application factory: the one place where every part of the relay is built and wired."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry

from .assets.wire import add_assets
from .codec.policy import IpPolicy
from .config import Config
from .ops.accesslog import (
    AccessRecorder,
    access_middleware,
    asset_prefixes,
    ip_policy,
    request_facts,
)
from .ops.fleetmetrics import FleetMetrics
from .ops.health import CheckResult, RegionHealth
from .ops.metrics import Metrics
from .ops.routes import install_ops, ops_paths
from .relay import answers
from .relay.fleetlimit import FleetLimiter, Limiter, LocalLimiter
from .relay.handler import ApiRelay
from .server.limits import MAX_FIELDS, MAX_HEAD
from .server.refusals import parser_refusal_counter
from .spool import Spool
from .spool.fallback import FallbackStore
from .spool.fallback import build as build_redis_spool
from .upstream.client import UpstreamClient
from .upstream.redislink import RedisLink

CONFIG_KEY = web.AppKey("config", Config)
METRICS_KEY = web.AppKey("metrics", Metrics)
UPSTREAM_KEY = web.AppKey("upstream", UpstreamClient)
RELAY_KEY = web.AppKey("relay", ApiRelay)
ACCESS_KEY = web.AppKey("access", AccessRecorder)
# aiohttp's parser takes what the lean edge takes (edge/head.py): browsers send a first-party
# relay the site's cookies, mixpanel-node sends events in `GET /track?data=`.
HEAD_LIMITS = {"max_line_size": MAX_HEAD, "max_field_size": MAX_HEAD, "max_headers": MAX_FIELDS}


def create_app(config: Config, *, registry: CollectorRegistry | None = None) -> web.Application:
    metrics = Metrics(registry)
    upstream = UpstreamClient(config.upstream)
    health = RegionHealth(config.regions, metrics, config.health.max_age)
    link, fleet = _redis(config, metrics)
    redis_spool = (build_redis_spool(config, link, fleet, metrics)
                   if config.spool.enabled and config.spool.backend == "redis"
                   and link is not None and fleet is not None else None)
    spool = (Spool(config, upstream, metrics,
                   store_factory=(lambda: redis_spool) if redis_spool is not None else None)
             if config.spool.enabled else None)
    relay = ApiRelay(config, upstream, metrics, health=health, spool=spool,
                     rate=_limiter(config, link, fleet))
    # The access log never shows more of a client IP than [privacy] lets the upstream see.
    privacy_ip = IpPolicy(config.privacy).upstream_ip if config.privacy.ip != "full" else None
    recorder = AccessRecorder(metrics, config.log.access,
                              ip_policy(config.log.client_ip, privacy_ip), asset_prefixes(config))
    access = access_middleware(recorder, ops_paths(config), refuse=_json_refusal)
    # aiohttp refuses bodies past client_max_size before any handler runs; the per-endpoint
    # limits (smaller) are enforced by the relay, which answers them in JSON.
    # auto_decompress=False: aiohttp would otherwise inflate gzip/deflate/br request bodies on
    # read, unbounded, and the relay would forward inflated bytes still labelled as compressed.
    app = web.Application(client_max_size=max(map(config.limits.accepted, config.limits.body)),
                          middlewares=[access],
                          handler_args={"auto_decompress": False, **HEAD_LIMITS,
                                        **parser_refusal_counter(metrics)})
    app[CONFIG_KEY] = config
    app[METRICS_KEY] = metrics
    app[UPSTREAM_KEY] = upstream
    app[RELAY_KEY] = relay
    app[ACCESS_KEY] = recorder
    app.on_response_prepare.append(_close_after_http10_coding)
    app.cleanup_ctx.append(_upstream_session)
    if link is not None:    # before the spool: closed after it (it releases its leases)
        app.cleanup_ctx.append(_closing(link))
    if spool is not None:   # after the session: drainers send through it, and stop before it
        app.cleanup_ctx.append(spool.lifespan)
    readiness = install_ops(app, config, metrics, health, upstream)   # /healthz /readyz ...
    if link is not None:
        readiness.add_check("redis", _redis_check(link))
    if redis_spool is not None:   # replaces the directory check: where do requests go now?
        readiness.add_check("spool", _spool_check(redis_spool))
    # Before the catch-all, which would take /libs/; after install_ops (the status board).
    add_assets(app, config, upstream, metrics)
    app.router.add_route("*", "/{tail:.*}", relay.handle_aiohttp)
    return app


def _redis(config: Config, metrics: Metrics) -> tuple[RedisLink | None, FleetMetrics | None]:
    """The one Redis link of this app, when a section chose the Redis backend."""
    wanted = config.limits.rate.backend == "redis" or (
        config.spool.enabled and config.spool.backend == "redis")
    if not wanted:
        return None, None
    fleet = FleetMetrics(metrics)
    return RedisLink(config.redis, on_change=fleet.redis_up.set), fleet


def _limiter(config: Config, link: RedisLink | None, fleet: FleetMetrics | None) -> Limiter:
    if config.limits.rate.backend == "redis" and link is not None and fleet is not None:
        return FleetLimiter(config.limits.rate, link, fleet)
    return LocalLimiter(config.limits.rate)


def _redis_check(link: RedisLink) -> Callable[[], Awaitable[CheckResult]]:
    """/readyz reports Redis; an outage alone does not make the relay unready: the rate limit
    fails open and the spool falls back to SQLite, and the "spool" check fails when it cannot
    (requests then get 503). A fleet taken out of its load balancer would serve nobody."""
    async def check() -> CheckResult:
        if await link.ping():
            return CheckResult(True, f"{link.config.redacted_url()} answers")
        return CheckResult(True, f"{link.config.redacted_url()} is unreachable "
                                 f"({link.last_error})")

    return check


def _spool_check(store: FallbackStore) -> Callable[[], CheckResult]:
    def check() -> CheckResult:
        ok, detail = store.readiness()
        return CheckResult(ok, detail)

    return check


def _closing(link: RedisLink) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        yield
        await link.close()

    return context


async def _upstream_session(app: web.Application) -> AsyncIterator[None]:
    await app[UPSTREAM_KEY].start()
    yield
    await app[UPSTREAM_KEY].close()


async def _close_after_http10_coding(request: web.Request,
                                     response: web.StreamResponse) -> None:
    """RFC 9112 §6.1: after an HTTP/1.0 request with Transfer-Encoding the connection must close:
    its framing cannot be trusted, and what follows the body could be a smuggled request. The
    edge refuses such requests itself; this covers the ones aiohttp parses after a hand-over."""
    if request.version < (1, 1) and "Transfer-Encoding" in request.headers:
        response.force_close()
        # aiohttp has written its Connection header into the head before this hook runs.
        response.headers["Connection"] = "close"


def _json_refusal(request: web.Request, exc: web.HTTPException) -> web.StreamResponse:
    """aiohttp's own refusals (CONNECT, authority-form targets) answered in JSON like ours."""
    metrics = request.app[METRICS_KEY]
    if request.method == "CONNECT":
        metrics.reject("method")
        request_facts().reason = "method"
        return answers.error(405, "CONNECT is refused: this relay is not a forward proxy")
    reason = request_facts().reason = "not_found" if exc.status == 404 else "bad_request"
    metrics.reject(reason)
    return answers.error(exc.status, exc.reason)
