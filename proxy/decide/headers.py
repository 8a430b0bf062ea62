"""Header policy, in both directions, in one place.

Upstream gets an allow-list (never the site's cookies, never hop-by-hop headers) plus the derived
client IP; the client gets an allow-list of the upstream's answer plus exactly one set of CORS
headers of ours (Chromium rejects a response that carries Mixpanel's and ours).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..codec import form_field
from ..config import CorsConfig

# Request headers forwarded to Mixpanel (wire contract section 8.7). Host is set by the client to
# the upstream's own; Cookie, hop-by-hop and X-Forwarded-* from the client never pass.
FORWARDED_REQUEST_HEADERS = (
    "Authorization", "Content-Type", "Content-Encoding", "User-Agent", "traceparent",
    "Accept", "Accept-Encoding",
)
# Response headers passed back to the client; Set-Cookie and the upstream's CORS headers never.
FORWARDED_RESPONSE_HEADERS = (
    "Content-Type", "Content-Encoding", "Retry-After", "Cache-Control", "ETag",
    "Last-Modified", "traceparent",
)
PREFLIGHT_HEADERS = ("Authorization", "Content-Type", "traceparent")


def upstream_request_headers(incoming: Mapping[str, str], client_ip: str,
                             drop_content_encoding: bool = False) -> dict[str, str]:
    headers = {name: incoming[name] for name in FORWARDED_REQUEST_HEADERS if name in incoming}
    if drop_content_encoding:
        headers.pop("Content-Encoding", None)
    if "Accept-Encoding" not in headers:
        headers["Accept-Encoding"] = "identity"  # we relay bytes; never ask for what we'd decode
    if client_ip:
        headers["X-Forwarded-For"] = client_ip
        headers["X-Real-IP"] = client_ip
    return headers


def client_response_headers(upstream: Mapping[str, str]) -> dict[str, str]:
    return {name: upstream[name] for name in FORWARDED_RESPONSE_HEADERS if name in upstream}


class CorsPolicy:
    """Echo the request Origin with credentials (never `*`); optionally only listed origins."""

    def __init__(self, config: CorsConfig) -> None:
        self._exact = {o for o in config.allowed_origins if "*" not in o}
        self._any = not config.allowed_origins or "*" in config.allowed_origins
        # "https://*.example.com" -> ("https://", ".example.com")
        self._suffixes = tuple(
            tuple(o.split("*", 1)) for o in config.allowed_origins if "*" in o and o != "*"
        )
        known = {name.lower() for name in PREFLIGHT_HEADERS}
        allow_headers = list(PREFLIGHT_HEADERS) + [
            name for name in config.extra_headers if name.lower() not in known]
        self._preflight = {
            "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
            "Access-Control-Allow-Headers": ", ".join(allow_headers),
            "Access-Control-Max-Age": str(config.max_age),
        }

    def allows(self, origin: str | None) -> bool:
        if origin is None or self._any or origin in self._exact:
            return True
        return any(origin.startswith(scheme) and origin.endswith(suffix)
                   and len(origin) > len(scheme) + len(suffix)
                   for scheme, suffix in self._suffixes)

    def headers(self, origin: str | None) -> dict[str, str]:
        """CORS headers for an actual response; none without an Origin (server SDKs)."""
        if origin is None:
            return {}
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Credentials": "true",
            "Access-Control-Expose-Headers": "Retry-After",
            "Vary": "Origin",
        }

    def preflight_headers(self, origin: str | None) -> dict[str, str]:
        return {**self.headers(origin), **self._preflight}


def is_browser_settings(query: bytes) -> bool:
    """Whether a /settings request comes from mixpanel-browser, which aborts it after 500 ms
    (`mp_lib=web`, or no `mp_lib`, as before any SDK named itself). The mobile replay SDKs wait
    5 s and name themselves: `mp_lib=android-sr` with `recording=1&$os=Android`
    (mixpanel-android `session-replay/.../services/RemoteSettingsService.kt`), `swift-sr`
    (mixpanel-ios-session-replay-package `Services/SettingsService.swift`), Flutter's replay."""
    lib = form_field(query, b"mp_lib") if query else None
    return lib is None or lib == b"web"
