"""Pure request-target matching: which endpoint (and pinned region) a raw path names.

Anything that is not exactly an SDK route is refused here, before any other work, so the relay can
never be steered to another path or host: no percent-encoding, no dot segments, no absolute URIs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ..endpoints import ENDPOINTS, REGIONS, Endpoint

_FLAG_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._~/-]*$")


@dataclass(frozen=True, slots=True)
class PathMatch:
    endpoint: Endpoint
    region: str | None       # pinned by a /us/, /eu/ or /in/ prefix
    upstream_path: str       # canonical path to request upstream, trailing slash kept


class PathMatcher:
    """Matches raw request paths against the SDK routes, the base path and configured aliases."""

    def __init__(self, base_path: str = "", aliases: Mapping[str, str] | None = None) -> None:
        self._base = [part for part in base_path.split("/") if part]
        self._routes: dict[str, Endpoint] = {name: name for name in ENDPOINTS}
        for alias, endpoint in (aliases or {}).items():
            self._routes[alias] = _as_endpoint(endpoint)

    def match(self, raw_path: str) -> PathMatch | None:
        if not _SAFE_PATH.match(raw_path):
            return None  # absolute-form targets, percent-encoding, backslashes, spaces...
        segments = [part for part in raw_path.split("/") if part]  # tolerate // (api_host + '/')
        if segments[: len(self._base)] != self._base:
            return None
        segments = segments[len(self._base):]
        region = None
        if segments and segments[0] in REGIONS:
            region = segments.pop(0)
        if not segments or "." in segments[0] or ".." in segments:
            return None
        endpoint = self._routes.get(segments[0])
        if endpoint is None:
            return None
        rest = _endpoint_rest(endpoint, segments[1:])
        if rest is None:
            return None
        slash = "/" if raw_path.endswith("/") else ""
        return PathMatch(endpoint, region, f"/{endpoint}{rest}{slash}")


def _endpoint_rest(endpoint: str, rest: list[str]) -> str | None:
    """The sub-path an endpoint allows after its name, or None when the rest is not allowed."""
    if not rest:
        return ""
    if endpoint != "flags":
        return None
    if rest == ["definitions"]:                       # server SDKs' local evaluation
        return "/definitions"
    if len(rest) == 2 and rest[1] == "first-time-events" and _FLAG_ID.match(rest[0]):
        return f"/{rest[0]}/first-time-events"
    return None


def _as_endpoint(name: str) -> Endpoint:
    for endpoint in ENDPOINTS:
        if endpoint == name:
            return endpoint
    raise ValueError(f"unknown endpoint {name!r}")
