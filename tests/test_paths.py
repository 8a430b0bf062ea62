"""Pure path matching: every SDK route form is accepted, everything else refused."""

from __future__ import annotations

import pytest

from proxy.decide.paths import PathMatcher


@pytest.mark.parametrize(("raw", "endpoint", "region", "upstream"), [
    ("/track/", "track", None, "/track/"),
    ("/track", "track", None, "/track"),
    ("//track/", "track", None, "/track/"),           # api_host with a trailing slash
    ("/engage/", "engage", None, "/engage/"),
    ("/groups", "groups", None, "/groups"),
    ("/import", "import", None, "/import"),
    ("/record/", "record", None, "/record/"),
    ("/flags/", "flags", None, "/flags/"),
    ("/flags/definitions", "flags", None, "/flags/definitions"),
    ("/flags/abc-123/first-time-events", "flags", None, "/flags/abc-123/first-time-events"),
    ("/settings/", "settings", None, "/settings/"),
    ("/eu/track/", "track", "eu", "/track/"),
    ("/in/record/", "record", "in", "/record/"),
    ("/us//engage", "engage", "us", "/engage"),
])
def test_sdk_routes_match(raw: str, endpoint: str, region: str | None, upstream: str) -> None:
    match = PathMatcher().match(raw)
    assert match is not None
    assert (match.endpoint, match.region, match.upstream_path) == (endpoint, region, upstream)


@pytest.mark.parametrize("raw", [
    "/", "/undefined", "/trackx/", "/track/extra", "/decide", "/../track", "/track/..",
    "/%2e%2e/track", "/tr%61ck", "http://evil.example/track", "/eu/eu/track", "/flags/a/b",
    "/flags/../first-time-events", "/flags/a b/first-time-events", "/libs/x.js", "\\track",
    "/eu", "/.track",
])
def test_everything_else_is_refused(raw: str) -> None:
    assert PathMatcher().match(raw) is None


def test_base_path_and_aliases() -> None:
    matcher = PathMatcher("/_mp/api", {"e": "track", "p": "engage"})
    hit = matcher.match("/_mp/api/e/")
    assert hit is not None and (hit.endpoint, hit.upstream_path) == ("track", "/track/")
    hit = matcher.match("/_mp/api/eu/p")
    assert hit is not None and (hit.endpoint, hit.region, hit.upstream_path) == (
        "engage", "eu", "/engage")
    assert matcher.match("/track/") is None            # outside the base path
    assert matcher.match("/_mp/apix/track/") is None
    assert matcher.match("/_mp/api/track/") is not None
