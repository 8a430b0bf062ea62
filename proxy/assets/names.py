"""Bundle names: which request paths name a bundle at all, and which bundles never change.

Pure functions, no I/O. Which names are bundle names at all is `endpoints.is_valid_name`:
everything else (slashes, percent-escapes, dot segments) is refused before the CDN is asked.

Immutable names are the content-hashed bundles that mixpanel-browser's build bakes into each
release (`mixpanel-recorder-CZqK2y7C.min.js`): the hash changes whenever the bytes do, so a
copy never goes stale. Everything else (`mixpanel-2-latest.min.js`, the legacy unhashed
`mixpanel-recorder.min.js`, `mixpanel-js-wrapper.js`) can change under the same name.
"""

from __future__ import annotations

import re

__all__ = ["content_type", "is_immutable"]

# <stem>-<8-character rollup content hash>[.min].js[.map]; the hash alphabet is base64url.
_HASHED = re.compile(
    r"^[a-z0-9]+(?:-[a-z0-9]+)*-(?P<hash>[A-Za-z0-9_]{8})(?:\.min)?\.js(?:\.map)?$")


def is_immutable(name: str) -> bool:
    """True for content-hashed names. Doubt means mutable: a hashed name wrongly kept mutable
    only costs a revalidation, a mutable name wrongly kept forever would never update."""
    if "latest" in name:
        return False
    match = _HASHED.match(name)
    if match is None:
        return False
    digest = match.group("hash")
    # An all-lowercase segment is a word (`mixpanel-with-recorder.js`), not a hash.
    return any(char.isupper() or char.isdigit() for char in digest)


def content_type(name: str) -> str:
    if name.endswith(".map"):
        return "application/json"
    return "application/javascript; charset=utf-8"
