"""Pure parts of the asset relay: name rules and classification (on every real CDN file name of
mixpanel-browser 2.83.0), Accept-Encoding negotiation, If-None-Match, freshness, rewriting and
the `[assets]` config section."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.assets.cache import CachedAsset, Freshness, Origin, Policy, Variant
from proxy.assets.encoding import negotiate, none_match
from proxy.assets.names import is_immutable
from proxy.assets.rewrite import SDK_LIB_BASE, Rewriter
from proxy.config import ConfigError, parse_config
from proxy.endpoints import is_valid_name
from tests.support.fake_cdn import DIST, cdn_files


def test_exactly_the_content_hashed_bundles_are_immutable() -> None:
    names = cdn_files()
    hashed = {path.name for path in (DIST / "async-modules").iterdir()}
    assert len(hashed) == 6 and len(names) > len(hashed) + 6
    for name in names:
        assert is_valid_name(name), name
        assert is_immutable(name) == (name in hashed), name


@pytest.mark.parametrize("name", [
    "mixpanel-2-latest.min.js", "mixpanel-recorder.min.js", "mixpanel-with-recorder.js",
    "mixpanel-js-wrapper.min.js", "mixpanel-recorder-latest1.min.js", "mixpanel-abcdefgh.js",
])
def test_names_that_can_change_are_mutable(name: str) -> None:
    assert not is_immutable(name)


@pytest.mark.parametrize("name", [
    "", ".js", "../mixpanel.js", "a/b.js", "..js", "x.js.map.js.json", "x.json", "x.JS",
    "%2e%2e.js", "x.js%00", ".hidden.js", "-x.js", "x" * 130 + ".js", "x.js ", "x.js?x=1",
    "mixpanel\\x.js", "x.min.js/", "x.map",
])
def test_unsafe_or_foreign_names_are_refused(name: str) -> None:
    assert not is_valid_name(name)


@given(st.text(max_size=40))
def test_a_valid_name_is_always_one_plain_js_file_name(name: str) -> None:
    if is_valid_name(name):
        assert "/" not in name and "%" not in name and ".." not in name
        assert name.endswith((".js", ".js.map"))


@pytest.mark.parametrize("header, expected", [
    (None, "identity"), ("", "identity"), ("gzip", "gzip"), ("br", "br"),
    ("gzip, deflate, br, zstd", "br"), ("br;q=0, gzip", "gzip"), ("br;q=0.5, gzip;q=0.9", "gzip"),
    ("*", "br"), ("*;q=0", "identity"), ("identity", "identity"), ("deflate", "identity"),
    ("BR", "br"), ("gzip;q=bogus, br;q=0", "identity"),
])
def test_accept_encoding_negotiation(header: str | None, expected: str) -> None:
    assert negotiate(header, ("br", "gzip")) == expected


def test_negotiation_prefers_the_order_given_on_equal_weights() -> None:
    assert negotiate("br, gzip", ("gzip", "br")) == "gzip"
    assert negotiate("br", ()) == "identity"


@pytest.mark.parametrize("header, matches", [
    ('"abc"', True), ('W/"abc"', True), ('"x", "abc"', True), ("*", True), ('"abcd"', False),
    (None, False), ("", False),
])
def test_if_none_match(header: str | None, matches: bool) -> None:
    assert none_match(header, '"abc"') is matches


def _asset(immutable: bool, fetched_at: float) -> CachedAsset:
    body = b"x"
    return CachedAsset("x.js", immutable, Origin(body, None, None),
                       {"identity": Variant("identity", body, '"t"')}, fetched_at)


@pytest.mark.parametrize("age, state", [
    (0, Freshness.FRESH), (59.9, Freshness.FRESH), (60, Freshness.STALE),
    (69.9, Freshness.STALE), (70, Freshness.EXPIRED),
])
def test_freshness_boundaries(age: float, state: Freshness) -> None:
    policy = Policy(ttl=60, stale_while_revalidate=10, stale_if_error=100)
    assert policy.freshness(_asset(False, 1000), 1000 + age) is state
    assert policy.freshness(_asset(True, 1000), 1000 + age * 1e6) is Freshness.FRESH
    assert policy.usable_on_error(_asset(False, 1000), 1000 + 159.9)
    assert not policy.usable_on_error(_asset(False, 1000), 1000 + 160)


def test_rewriting_replaces_only_the_quoted_defaults() -> None:
    rewriter = Rewriter.for_relay("https://relay.example/libs/", "https://relay.example")
    body = (b'a:"https://cdn.mxpnl.com/libs/",b:\'https://api-js.mixpanel.com\','
            b'c:"https://cdn.mxpnl.com/libs/mixpanel-2-latest.min.js"')
    assert rewriter.rewrite(body) == (
        b'a:"https://relay.example/libs/",b:\'https://relay.example\','
        b'c:"https://cdn.mxpnl.com/libs/mixpanel-2-latest.min.js"')
    assert rewriter.applies_to("mixpanel-2-latest.js")
    assert not rewriter.applies_to("mixpanel-2-latest.min.js.map")
    assert not Rewriter.for_relay(None, "https://relay.example").enabled
    lib_only = Rewriter.for_relay("https://r/l/", None)
    assert lib_only.rewrite(f'"{SDK_LIB_BASE}"'.encode()) == b'"https://r/l/"'


def test_assets_config_defaults_and_errors() -> None:
    assets = parse_config({}).assets
    assert (assets.enabled, assets.path, str(assets.cdn_url)) == (
        True, "/libs/", "https://cdn.mxpnl.com/libs/")
    assert assets.public_url is None and assets.lib_base_url is None
    custom = parse_config({"assets": {"path": "/_mp/libs", "public_url": "https://a.example/",
                                      "max_bytes": "8MiB"}}).assets
    assert custom.path == "/_mp/libs/" and custom.max_bytes == 8 * 1024 * 1024
    assert custom.lib_base_url == "https://a.example/_mp/libs/"
    with pytest.raises(ConfigError) as caught:
        parse_config({"assets": {"cdn_url": "https://cdn.example/libs", "path": "libs/../x",
                                 "prefetch": ["../etc/passwd"], "ttl": -1, "bogus": 1,
                                 "public_url": "ftp://x", "brotli_quality": 12}})
    problems = "\n".join(caught.value.problems)
    for key in ("assets.cdn_url", "assets.path", "assets.prefetch", "assets.ttl",
                "assets.bogus", "assets.public_url", "assets.brotli_quality"):
        assert key in problems


def test_snapshot_for_the_status_page_does_not_reorder_eviction() -> None:
    from dataclasses import replace

    from proxy.assets.cache import AssetCache

    evicted: list[str] = []
    first = replace(_asset(False, 0.0), name="a.js")
    size = first.size
    cache = AssetCache(max_bytes=2 * size, on_evict=evicted.append)
    cache.put(first)
    cache.put(replace(first, name="b.js"))
    assert cache.get("a.js") is not None        # a.js used: b.js is now the least recent
    assert sorted(asset.name for asset in cache.snapshot()) == ["a.js", "b.js"]
    cache.put(replace(first, name="c.js"))      # a snapshot that counted as use would evict a.js
    assert evicted == ["b.js"]
