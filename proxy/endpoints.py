"""The closed set of SDK endpoints the relay serves, and what each one carries.

Everything else in the relay (limits, metrics labels, routing) is keyed by these names, so a
label or a config key can never be a client-chosen string.
"""

from __future__ import annotations

import re
from typing import Final, Literal

Endpoint = Literal["track", "engage", "groups", "import", "record", "flags", "settings"]

ENDPOINTS: Final[tuple[Endpoint, ...]] = (
    "track", "engage", "groups", "import", "record", "flags", "settings",
)

# Endpoints whose `data=` payload carries the project token inside each record.
DATA_ENDPOINTS: Final[frozenset[str]] = frozenset({"track", "engage", "groups", "import"})

# Endpoints that authenticate with `Authorization: Basic base64(token:)` (mixpanel-browser fetches).
BASIC_TOKEN_ENDPOINTS: Final[frozenset[str]] = frozenset({"record", "flags", "settings"})

REGIONS: Final[tuple[str, ...]] = ("us", "eu", "in")

DEFAULT_REGION_URLS: Final[dict[str, str]] = {
    "us": "https://api.mixpanel.com",
    "eu": "https://api-eu.mixpanel.com",
    "in": "https://api-in.mixpanel.com",
}

# mixpanel-browser's own default api_host is api-js.mixpanel.com; the wire contract (section 1.6)
# could not settle whether US replay must go there, so the embedded default follows the SDK.
DEFAULT_ENDPOINT_URLS: Final[dict[str, dict[str, str]]] = {
    "us": {"record": "https://api-js.mixpanel.com"},
}

MIB: Final = 1024 * 1024
DEFAULT_BODY_LIMITS: Final[dict[str, int]] = {
    "track": 2 * MIB,      # Mixpanel's own 413 names 2097152 bytes
    "engage": 2 * MIB,
    "groups": 2 * MIB,
    "import": 10 * MIB,    # /import: 10 MB uncompressed per request
    "record": 10 * MIB,    # the SDK's test server and Mixpanel's nginx example allow 10 MB
    "flags": 256 * 1024,
    "settings": 64 * 1024,
}

# Mixpanel keeps nested objects to depth 3 inside properties (about 6 counted from the batch
# array); 64 leaves room for any payload it could take and bounds every walk over a decoded one.
DEFAULT_MAX_DEPTH: Final = 64

# The SDK bundles served first-party (assets/): the loader's names, the loader at the site's
# root as in Mixpanel's own nginx tracking-proxy, and what a bundle name may look like at all.
# Here rather than in assets/ because config and the access log need them too.
LATEST_LOADER: Final = "mixpanel-2-latest.min.js"
LATEST_LOADER_FULL: Final = "mixpanel-2-latest.js"
ROOT_ALIASES: Final[dict[str, str]] = {"/lib.min.js": LATEST_LOADER, "/lib.js": LATEST_LOADER_FULL}

_MAX_BUNDLE_NAME = 128
_VALID_BUNDLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\.js(?:\.map)?$")


def is_valid_name(name: str) -> bool:
    """One safe file name ending in `.js` or `.js.map`: no slashes, escapes or dot segments."""
    return (len(name) <= _MAX_BUNDLE_NAME and ".." not in name
            and _VALID_BUNDLE_NAME.match(name) is not None)
