"""The relay core's config sections: server, routing, regions, projects, cors, limits, upstream."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

from yarl import URL

from ..endpoints import (
    DATA_ENDPOINTS,
    DEFAULT_BODY_LIMITS,
    DEFAULT_ENDPOINT_URLS,
    DEFAULT_REGION_URLS,
    ENDPOINTS,
    REGIONS,
)
from .reader import Network, TableReader, checked_url

_ROUTE_NAME = re.compile(r"^[A-Za-z0-9._~-]{1,64}$")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
RateBackend = Literal["local", "redis"]
RATE_BACKENDS: tuple[RateBackend, ...] = ("local", "redis")


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    trusted_proxies: tuple[Network, ...] = ()
    client_ip_header: str | None = None   # e.g. "CF-Connecting-IP"; believed from trusted peers
    workers: int = 1
    shutdown_timeout: float = 15.0
    # One listening socket per worker (SO_REUSEPORT, Linux): the kernel spreads new connections
    # over the workers (server/listeners.py).
    reuse_port: bool = False


@dataclass(frozen=True)
class RoutingConfig:
    default_region: str = "us"
    strict: bool = False
    base_path: str = ""                    # e.g. "/_mp/api": the API lives under this prefix
    aliases: Mapping[str, str] = field(default_factory=dict)   # route name -> endpoint


@dataclass(frozen=True)
class RegionConfig:
    name: str
    url: URL
    endpoint_urls: Mapping[str, URL] = field(default_factory=dict)

    def base_url(self, endpoint: str) -> URL:
        return self.endpoint_urls.get(endpoint, self.url)


@dataclass(frozen=True)
class ProjectConfig:
    token: str
    region: str
    project_id: int | None = None


@dataclass(frozen=True)
class CorsConfig:
    allowed_origins: tuple[str, ...] = ()  # empty: echo any Origin
    extra_headers: tuple[str, ...] = ()    # the site's `xhr_headers`, allowed in preflights
    max_age: int = 86400


@dataclass(frozen=True)
class RateLimitConfig:
    ip_per_second: float = 0.0            # 0: no per-client-IP limit
    ip_burst: int = 100
    token_per_second: float = 0.0         # 0: no per-project-token limit
    token_burst: int = 1000
    backend: RateBackend = "local"        # "redis": one bucket per key for the whole fleet


SPLIT_MAX = 8 * 1024 * 1024


@dataclass(frozen=True)
class LimitsConfig:
    body: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_BODY_LIMITS))
    rate: RateLimitConfig = field(default_factory=RateLimitConfig)
    # A track/engage/groups/import body (inflated) over its `body` limit but within this is
    # decoded and sent as parts under the limit: SDKs that resend a refused batch forever
    # (Android, Swift, Unity) would otherwise stall on a batch of valid records.
    split_max: int = SPLIT_MAX

    def accepted(self, endpoint: str) -> int:
        """The largest body the relay reads for `endpoint` (splitting what is over `body`)."""
        limit = self.body[endpoint]
        return max(limit, self.split_max) if endpoint in DATA_ENDPOINTS else limit


@dataclass(frozen=True)
class UpstreamConfig:
    connect_timeout: float = 3.0
    read_timeout: float = 20.0
    settings_timeout: float = 0.45        # the browser SDK aborts /settings after 500 ms
    settings_timeout_mobile: float = 4.5  # the mobile replay SDKs wait 5 s (mp_lib not "web")
    pool_size: int = 256
    retry_after: int = 10                 # seconds suggested to clients when the upstream fails
    ca_file: str = ""                     # extra CA bundle for https upstreams (a TLS gateway)


@dataclass(frozen=True)
class MetricsConfig:
    allow: tuple[Network, ...] = ()        # peers that may read /metrics and /status
    listen: tuple[str, int] | None = None  # a separate listener for /metrics and /status


def parse_metrics(reader: TableReader) -> MetricsConfig:
    listen = parse_listen(reader, "127.0.0.1:9090") if reader.has("listen") else None
    config = MetricsConfig(allow=reader.networks("allow", ("127.0.0.1/32", "::1/128")),
                           listen=listen)
    reader.finish()
    return config


def parse_listen(reader: TableReader, default: str) -> tuple[str, int]:
    text = reader.string("listen", default)
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        reader.problem("listen", f"expected host:port such as 127.0.0.1:8080, got {text!r}")
        host, _, port_text = default.rpartition(":")
    return host, int(port_text)


def parse_server(reader: TableReader) -> ServerConfig:
    host, port = parse_listen(reader, "127.0.0.1:8080")
    header = reader.string("client_ip_header", "")
    config = ServerConfig(
        host=host,
        port=port,
        trusted_proxies=reader.networks("trusted_proxies", ("127.0.0.1/32", "::1/128")),
        client_ip_header=header or None,
        workers=reader.integer("workers", 1, minimum=1, maximum=64),
        shutdown_timeout=reader.number("shutdown_timeout", 15.0, minimum=0),
        reuse_port=reader.boolean("reuse_port", False),
    )
    reader.finish()
    return config


def parse_routing(reader: TableReader) -> RoutingConfig:
    base_path = reader.string("base_path", "").rstrip("/")
    if base_path and (not base_path.startswith("/") or not all(
            _ROUTE_NAME.match(part) for part in base_path[1:].split("/"))):
        reader.problem("base_path", f"expected a path such as /_mp/api, got {base_path!r}")
        base_path = ""
    config = RoutingConfig(
        default_region=reader.string("default_region", "us", choices=REGIONS),
        strict=reader.boolean("strict", False),
        base_path=base_path,
        aliases=_parse_aliases(reader.table("aliases")),
    )
    reader.finish()
    return config


def _parse_aliases(reader: TableReader) -> dict[str, str]:
    aliases: dict[str, str] = {}
    for name, endpoint in reader.items():
        if not _ROUTE_NAME.match(name) or name in ENDPOINTS or name in REGIONS:
            reader.problem(name, "an alias must be a plain path segment that is not an endpoint "
                                 "or region name")
        elif endpoint not in ENDPOINTS:
            reader.problem(name, f"must name one of {', '.join(ENDPOINTS)}, got {endpoint!r}")
        else:
            aliases[name] = endpoint
    return aliases


def parse_regions(reader: TableReader) -> dict[str, RegionConfig]:
    regions = {}
    for name in REGIONS:
        regions[name] = _parse_region(name, reader.table(name))
    reader.finish()
    return regions


def _parse_region(name: str, reader: TableReader) -> RegionConfig:
    url = reader.url("url", DEFAULT_REGION_URLS[name])
    # Per-endpoint hosts default to the SDK's own only while the region keeps Mixpanel's URL:
    # pointing `url` elsewhere (a test upstream, a corporate gateway) moves every endpoint.
    overrides = DEFAULT_ENDPOINT_URLS.get(name, {}) if not reader.has("url") else {}
    endpoint_urls = {key: URL(value) for key, value in overrides.items()}
    table = reader.table("endpoints")
    for endpoint, value in table.items():
        if endpoint not in ENDPOINTS:
            table.problem(endpoint, f"unknown endpoint; expected one of {', '.join(ENDPOINTS)}")
            continue
        if not isinstance(value, str):
            table.problem(endpoint, "expected a URL string")
            continue
        parsed = checked_url(value, ("http", "https"), partial(table.problem, endpoint))
        if parsed is not None:
            endpoint_urls[endpoint] = parsed
    reader.finish()
    return RegionConfig(name=name, url=url, endpoint_urls=endpoint_urls)


def parse_projects(reader: TableReader) -> tuple[ProjectConfig, ...]:
    projects: list[ProjectConfig] = []
    tokens: set[str] = set()
    ids: set[int] = set()
    for item in reader.tables("projects"):
        token = item.string("token", "")
        region = item.string("region", "", choices=REGIONS) if item.has("region") else ""
        project_id = item.integer("project_id", 0, minimum=1) if item.has("project_id") else None
        if not _TOKEN.match(token):
            item.problem("token", "required: the project token (letters, digits, _ or -)")
        elif token in tokens:
            item.problem("token", f"token {token[:6]}… is listed twice")
        if not item.has("region"):
            item.problem("region", f"required: one of {', '.join(REGIONS)}")
        if project_id is not None and project_id in ids:
            item.problem("project_id", f"project_id {project_id} is listed twice")
        item.finish()
        tokens.add(token)
        if project_id:
            ids.add(project_id)
        projects.append(ProjectConfig(token=token, region=region or "us", project_id=project_id))
    return tuple(projects)


def parse_cors(reader: TableReader) -> CorsConfig:
    origins = reader.string_list("allowed_origins", ())
    for origin in origins:
        if origin != "*" and not re.match(r"^https?://(\*\.)?[A-Za-z0-9.-]+(:\d+)?$", origin):
            reader.problem("allowed_origins", f"{origin!r} is not an origin such as "
                                              "https://example.com or https://*.example.com")
    config = CorsConfig(
        allowed_origins=origins,
        extra_headers=reader.string_list("extra_headers", ()),
        max_age=reader.integer("max_age", 86400, minimum=0),
    )
    reader.finish()
    return config


def parse_limits(reader: TableReader) -> LimitsConfig:
    body_reader = reader.table("body")
    body = {name: body_reader.size(name, default, minimum=1)
            for name, default in DEFAULT_BODY_LIMITS.items()}
    body_reader.finish()
    rate_reader = reader.table("rate")
    rate = RateLimitConfig(
        ip_per_second=rate_reader.number("ip_per_second", 0.0, minimum=0),
        ip_burst=rate_reader.integer("ip_burst", 100, minimum=1),
        token_per_second=rate_reader.number("token_per_second", 0.0, minimum=0),
        token_burst=rate_reader.integer("token_burst", 1000, minimum=1),
        backend=rate_reader.string("backend", "local",  # type: ignore[arg-type]
                                   choices=RATE_BACKENDS),
    )
    rate_reader.finish()
    split_max = reader.size("split_max", SPLIT_MAX, minimum=1)
    reader.finish()
    return LimitsConfig(body=body, rate=rate, split_max=split_max)


def parse_upstream(reader: TableReader) -> UpstreamConfig:
    config = UpstreamConfig(
        connect_timeout=reader.number("connect_timeout", 3.0, minimum=0.01),
        read_timeout=reader.number("read_timeout", 20.0, minimum=0.01),
        settings_timeout=reader.number("settings_timeout", 0.45, minimum=0.01),
        settings_timeout_mobile=reader.number("settings_timeout_mobile", 4.5, minimum=0.01),
        pool_size=reader.integer("pool_size", 256, minimum=1),
        retry_after=reader.integer("retry_after", 10, minimum=1),
        ca_file=reader.string("ca_file", ""),
    )
    reader.finish()
    return config
