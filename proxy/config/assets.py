"""The `[assets]` section: where the SDK bundles come from, how long each kind is kept, and how
they are served (path, aliases, compression, optional URL rewriting for the loader)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from yarl import URL

from ..endpoints import is_valid_name
from .reader import TableReader, checked_url

DEFAULT_CDN_URL = "https://cdn.mxpnl.com/libs/"
_PATH_SEGMENT = re.compile(r"^[A-Za-z0-9._~-]{1,64}$")
_DAY = 86400


@dataclass(frozen=True)
class AssetsConfig:
    enabled: bool = True
    path: str = "/libs/"                  # served prefix; ends with "/"
    aliases: bool = True                  # /lib.min.js and /lib.js, as in Mixpanel's nginx proxy
    cdn_url: URL = URL(DEFAULT_CDN_URL)   # ends with "/"
    ttl: float = 300.0                    # freshness of mutable names (loaders, legacy names)
    stale_while_revalidate: float = float(_DAY)
    stale_if_error: float = float(30 * _DAY)
    max_bytes: int = 64 * 1024 * 1024     # memory bound, every variant counted
    max_file_size: int = 16 * 1024 * 1024  # a larger CDN answer is refused as broken
    timeout: float = 10.0                 # one CDN fetch, connect to last byte
    disk_dir: str = ""                    # empty: memory only
    prefetch: tuple[str, ...] = ()
    brotli_quality: int = 11
    public_url: URL | None = None         # set: rewrite the loader's CDN (and API) defaults
    rewrite_api_host: bool = True

    @property
    def lib_base_url(self) -> str | None:
        """The public URL of the bundles (the SDK's `lib_base_path`), when `public_url` is set."""
        if self.public_url is None:
            return None
        return str(self.public_url).rstrip("/") + self.path


def parse_assets(reader: TableReader) -> AssetsConfig:
    defaults = AssetsConfig()
    config = AssetsConfig(
        enabled=reader.boolean("enabled", defaults.enabled),
        path=_parse_path(reader),
        aliases=reader.boolean("aliases", defaults.aliases),
        cdn_url=_parse_cdn_url(reader),
        ttl=reader.number("ttl", defaults.ttl, minimum=0),
        stale_while_revalidate=reader.number(
            "stale_while_revalidate", defaults.stale_while_revalidate, minimum=0),
        stale_if_error=reader.number("stale_if_error", defaults.stale_if_error, minimum=0),
        max_bytes=reader.size("max_bytes", defaults.max_bytes, minimum=1),
        max_file_size=reader.size("max_file_size", defaults.max_file_size, minimum=1),
        timeout=reader.number("timeout", defaults.timeout, minimum=0.01),
        disk_dir=reader.string("disk_dir", ""),
        prefetch=_parse_prefetch(reader),
        brotli_quality=reader.integer("brotli_quality", defaults.brotli_quality,
                                      minimum=0, maximum=11),
        public_url=_parse_public_url(reader),
        rewrite_api_host=reader.boolean("rewrite_api_host", defaults.rewrite_api_host),
    )
    reader.finish()
    return config


def _parse_path(reader: TableReader) -> str:
    text = reader.string("path", "/libs/")
    parts = text.strip("/").split("/")
    if not text.startswith("/") or not all(_PATH_SEGMENT.match(part) for part in parts):
        reader.problem("path", f"expected a path such as /libs/ or /_mp/libs/, got {text!r}")
        return "/libs/"
    return "/" + "/".join(parts) + "/"


def _parse_cdn_url(reader: TableReader) -> URL:
    url = reader.url("cdn_url", DEFAULT_CDN_URL)
    if not url.path.endswith("/"):
        reader.problem("cdn_url", f"must end with '/', got {str(url)!r}")
        return URL(DEFAULT_CDN_URL)
    return url


def _parse_public_url(reader: TableReader) -> URL | None:
    text = reader.string("public_url", "")
    if not text:
        return None
    return checked_url(text, ("http", "https"), lambda msg: reader.problem("public_url", msg))


def _parse_prefetch(reader: TableReader) -> tuple[str, ...]:
    names = reader.string_list("prefetch", ())
    for name in names:
        if not is_valid_name(name):
            reader.problem("prefetch", f"{name!r} is not a bundle name such as "
                                       "mixpanel-2-latest.min.js")
    return tuple(name for name in names if is_valid_name(name))
