"""The relay's configuration: TOML parsed once into frozen dataclasses.

`load_config(path)` returns a `Config` or raises `ConfigError` listing every problem, each naming
its dotted key. With no path the embedded default applies: listen on 127.0.0.1:8080 and send
everything to the US region. Each section's dataclass and parser live in a module of their own.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .assets import AssetsConfig, parse_assets
from .crosscheck import with_routed_health_regions
from .health import HealthConfig, parse_health
from .log import LogConfig, parse_log
from .payload import PayloadConfig, parse_payload
from .privacy import PrivacyConfig, parse_privacy
from .reader import ConfigError, TableReader
from .redis import RedisConfig, parse_redis
from .retired import check_coalesce
from .sections import (
    CorsConfig,
    LimitsConfig,
    MetricsConfig,
    ProjectConfig,
    RateLimitConfig,
    RegionConfig,
    RoutingConfig,
    ServerConfig,
    UpstreamConfig,
    parse_cors,
    parse_limits,
    parse_metrics,
    parse_projects,
    parse_regions,
    parse_routing,
    parse_server,
    parse_upstream,
)
from .spool import SpoolConfig, parse_spool

__all__ = [
    "Config", "ConfigError", "CorsConfig", "LimitsConfig", "RateLimitConfig", "MetricsConfig",
    "ProjectConfig",
    "HealthConfig", "LogConfig", "AssetsConfig", "PayloadConfig", "PrivacyConfig",
    "RedisConfig", "RegionConfig",
    "RoutingConfig", "ServerConfig", "SpoolConfig", "UpstreamConfig",
    "CONFIG_ENV", "load_config",
    "parse_config", "config_path_from_env",
]

CONFIG_ENV = "MIXPANEL_PROXY_CONFIG"


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    regions: dict[str, RegionConfig] = field(default_factory=dict)
    projects: tuple[ProjectConfig, ...] = ()
    cors: CorsConfig = field(default_factory=CorsConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    log: LogConfig = field(default_factory=LogConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    assets: AssetsConfig = field(default_factory=AssetsConfig)
    payload: PayloadConfig = field(default_factory=PayloadConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    source: str = "(embedded default)"


def parse_config(data: dict[str, Any], source: str = "(embedded default)") -> Config:
    """Build a Config from parsed TOML; raise ConfigError naming every bad key."""
    problems: list[str] = []
    root = TableReader(data, "", problems)
    config = Config(
        server=parse_server(root.table("server")),
        routing=parse_routing(root.table("routing")),
        regions=parse_regions(root.table("regions")),
        projects=parse_projects(root),
        cors=parse_cors(root.table("cors")),
        limits=parse_limits(root.table("limits")),
        upstream=parse_upstream(root.table("upstream")),
        metrics=parse_metrics(root.table("metrics")),
        spool=parse_spool(root.table("spool")),
        log=parse_log(root.table("log")),
        health=parse_health(root.table("health")),
        assets=parse_assets(root.table("assets")),
        payload=parse_payload(root.table("payload")),
        privacy=parse_privacy(root.table("privacy")),
        redis=parse_redis(root.table("redis")),
        source=source,
    )
    check_coalesce(root.table("coalesce"))     # removed; read for the reason it gives
    root.finish()
    if config.health.require_regions and config.spool.enabled:
        problems.append("health.require_regions: cannot be used with [spool] enabled: the spool "
                        "takes the traffic of a region that is down, so the relay stays ready")
    problems.extend(_redis_users_problems(config))
    if problems:
        raise ConfigError(problems)
    return with_routed_health_regions(config)


def _redis_users_problems(config: Config) -> list[str]:
    """A section that chose the Redis backend needs `[redis] url`."""
    if config.redis.configured:
        return []
    users = []
    if config.spool.enabled and config.spool.backend == "redis":
        users.append('spool.backend = "redis"')
    if config.limits.rate.backend == "redis":
        users.append('limits.rate.backend = "redis"')
    return [f"redis.url: required by {user}; e.g. url = \"redis://127.0.0.1:6379/0\""
            for user in users]


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Read and validate `path`, or return the embedded default when `path` is None."""
    if path is None:
        return parse_config({})
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"{file}: cannot read the config file ({exc.strerror})"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{file}: the config file is not UTF-8 ({exc.reason})"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{file}: not valid TOML ({exc})"]) from exc
    return parse_config(data, source=str(file))


def config_path_from_env(explicit: str | None) -> str | None:
    """`--config FILE` wins; else MIXPANEL_PROXY_CONFIG; else None (the embedded default)."""
    return explicit or os.environ.get(CONFIG_ENV) or None
