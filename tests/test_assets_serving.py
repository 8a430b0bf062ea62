"""What the asset relay puts on the wire: precompressed variants, ETags and 304s, cache headers,
aliases, refused names (the CDN never sees them), URL rewriting on and off, and the metrics."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from typing import Any

import brotli
import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import RelayFactory
from tests.support.fake_cdn import FakeCdn
from tests.support.rawhttp import exchange_to_eof, parse_head

LOADER = "mixpanel-2-latest.min.js"
FULL_LOADER = "mixpanel-2-latest.js"
RECORDER = "mixpanel-recorder-CZqK2y7C.min.js"
RECORDER_MAP = "mixpanel-recorder-CZqK2y7C.min.js.map"
CDN_LITERAL = b'"https://cdn.mxpnl.com/libs/"'
API_LITERAL = b'"https://api-js.mixpanel.com"'


async def relay_for(make_relay: RelayFactory, cdn: FakeCdn, **assets: Any) -> TestClient[Any, Any]:
    return await make_relay({"assets": {"cdn_url": cdn.url, "brotli_quality": 4, **assets}})


def decoded(coding: str | None, body: bytes) -> bytes:
    decoders: dict[str | None, Callable[[bytes], bytes]] = {
        "br": brotli.decompress, "gzip": gzip.decompress, None: bytes}
    return decoders[coding](body)


@pytest.mark.parametrize("name", [LOADER, RECORDER, RECORDER_MAP])
async def test_br_gzip_and_identity_decode_to_the_same_bytes(
        make_relay: RelayFactory, fake_cdn: FakeCdn, name: str) -> None:
    client = await relay_for(make_relay, fake_cdn)
    etags = set()
    for accept, coding in (("br", "br"), ("gzip, deflate", "gzip"), ("identity", None)):
        response = await client.get(f"/libs/{name}", headers={"Accept-Encoding": accept},
                                    auto_decompress=False)
        raw = await response.read()
        assert response.status == 200
        assert response.headers.get("Content-Encoding") == coding
        assert response.headers["Vary"] == "Accept-Encoding"
        assert int(response.headers["Content-Length"]) == len(raw)
        assert decoded(coding, raw) == fake_cdn.files[name]
        if coding:
            assert len(raw) < len(fake_cdn.files[name]) // 2
        etags.add(response.headers["ETag"])
    assert len(etags) == 3 and not any(tag.startswith("W/") for tag in etags)
    assert fake_cdn.count(name) == 1   # compressed once, from one CDN fetch


async def test_if_none_match_answers_304(make_relay: RelayFactory, fake_cdn: FakeCdn) -> None:
    client = await relay_for(make_relay, fake_cdn)
    first = await client.get(f"/libs/{LOADER}", headers={"Accept-Encoding": "br"})
    etag = first.headers["ETag"]
    again = await client.get(f"/libs/{LOADER}", headers={"Accept-Encoding": "br",
                                                          "If-None-Match": etag})
    assert again.status == 304 and await again.read() == b""
    assert again.headers["ETag"] == etag and again.headers["Vary"] == "Accept-Encoding"
    # The same tag does not validate another coding's bytes.
    other = await client.get(f"/libs/{LOADER}", headers={"Accept-Encoding": "gzip",
                                                          "If-None-Match": etag})
    assert other.status == 200 and other.headers["ETag"] != etag
    stale = await client.get(f"/libs/{LOADER}", headers={"If-None-Match": '"old"'})
    assert stale.status == 200


async def test_cache_headers_by_kind_of_name(make_relay: RelayFactory, fake_cdn: FakeCdn) -> None:
    client = await relay_for(make_relay, fake_cdn, ttl=300, stale_while_revalidate=60,
                             stale_if_error=600)
    hashed = await client.get(f"/libs/{RECORDER}")
    assert hashed.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert hashed.headers["Content-Type"] == "application/javascript; charset=utf-8"
    assert hashed.headers["X-Content-Type-Options"] == "nosniff"
    assert "Set-Cookie" not in hashed.headers and "Last-Modified" not in hashed.headers
    loader = await client.get(f"/libs/{LOADER}")
    assert loader.headers["Cache-Control"] in (
        f"public, max-age={age}, stale-while-revalidate=60, stale-if-error=600"
        for age in (299, 300))
    source_map = await client.get(f"/libs/{RECORDER_MAP}")
    assert source_map.headers["Content-Type"] == "application/json"


async def test_head_sends_headers_only(make_relay: RelayFactory, fake_cdn: FakeCdn) -> None:
    client = await relay_for(make_relay, fake_cdn)
    response = await client.head(f"/libs/{LOADER}", headers={"Accept-Encoding": "identity"})
    assert response.status == 200 and await response.read() == b""
    assert int(response.headers["Content-Length"]) == len(fake_cdn.files[LOADER])


async def test_root_aliases_serve_the_latest_loaders(
        make_relay: RelayFactory, fake_cdn: FakeCdn) -> None:
    client = await relay_for(make_relay, fake_cdn)
    for alias, name in (("/lib.min.js", LOADER), ("/lib.js", FULL_LOADER)):
        response = await client.get(alias)
        assert await response.read() == fake_cdn.files[name]
    assert fake_cdn.count(LOADER) == 1 and fake_cdn.count(FULL_LOADER) == 1


async def test_a_custom_path_moves_the_bundles(make_relay: RelayFactory, fake_cdn: FakeCdn) -> None:
    client = await relay_for(make_relay, fake_cdn, path="/_x7/b/", aliases=False)
    assert (await client.get(f"/_x7/b/{LOADER}")).status == 200
    for path in (f"/libs/{LOADER}", "/lib.min.js"):
        response = await client.get(path)
        assert response.status == 404 and response.content_type == "application/json"
    assert fake_cdn.count() == 1


TRAVERSALS = [
    "/libs/../pyproject.toml", "/libs/..%2fpyproject.toml", "/libs/%2e%2e/%2e%2e/etc/passwd",
    "/libs/%2e%2e%2f%2e%2e%2fetc%2fpasswd.js", "/libs/a/../../x.js", "/libs/sub/x.js",
    "/libs/%2Fetc%2Fpasswd.js", "/libs/x.js%00.js", "/libs/.x.js", "/libs/x%2ejs",
    "/libs/mixpanel-2-latest.min.js%2f..%2fx.js", "/libs/", "/libs/x.json", "/libs/x.php",
    "/libs//etc/passwd.js", "/libs/x.js;.css", "/libs/%252e%252e%252fx.js", "/libs/..\\x.js",
    "/libs/http://evil.example/x.js", "/libs/x.js/.", "/lib.min.js/..",
]


@pytest.mark.parametrize("target", TRAVERSALS)
async def test_refused_names_never_reach_the_cdn(
        make_relay: RelayFactory, fake_cdn: FakeCdn, target: str) -> None:
    client = await relay_for(make_relay, fake_cdn)
    status, headers, body = await raw_get(client, target)
    assert status == 404, (target, body)
    assert headers["content-type"].startswith("application/json")
    assert "error" in json.loads(body)
    assert fake_cdn.count() == 0


async def test_other_methods_are_refused(make_relay: RelayFactory, fake_cdn: FakeCdn) -> None:
    client = await relay_for(make_relay, fake_cdn)
    response = await client.post(f"/libs/{LOADER}", data=b"x")
    assert response.status == 405 and response.headers["Allow"] == "GET, HEAD"
    assert (await response.json())["error"] == "POST is not allowed here"
    assert fake_cdn.count() == 0


async def test_without_public_url_the_loader_is_relayed_unchanged(
        make_relay: RelayFactory, fake_cdn: FakeCdn) -> None:
    client = await relay_for(make_relay, fake_cdn)
    body = await (await client.get(f"/libs/{LOADER}")).read()
    assert body == fake_cdn.files[LOADER] and CDN_LITERAL in body


async def test_public_url_rewrites_the_loader_defaults(
        make_relay: RelayFactory, fake_cdn: FakeCdn) -> None:
    plain = await relay_for(make_relay, fake_cdn)
    plain_etag = (await plain.get(f"/libs/{LOADER}")).headers["ETag"]
    client = await relay_for(make_relay, fake_cdn, public_url="https://relay.example/_mp",
                             path="/mp-libs/")
    for name in (LOADER, FULL_LOADER):
        response = await client.get(f"/mp-libs/{name}", headers={"Accept-Encoding": "br"},
                                    auto_decompress=False)
        body = brotli.decompress(await response.read())
        original = fake_cdn.files[name]
        # The unminified loader quotes with ', the minified one with ".
        served, sent = body.replace(b"'", b'"'), original.replace(b"'", b'"')
        assert CDN_LITERAL not in served and API_LITERAL not in served
        assert served.count(b'"https://relay.example/_mp/mp-libs/"') == sent.count(CDN_LITERAL)
        assert served.count(b'"https://relay.example/_mp"') == sent.count(API_LITERAL) >= 1
        assert len(body) - len(original) == sum(
            sent.count(old) * (len(new) - len(old)) for old, new in (
                (CDN_LITERAL, b'"https://relay.example/_mp/mp-libs/"'),
                (API_LITERAL, b'"https://relay.example/_mp"')))
    identity = await client.get(f"/mp-libs/{LOADER}", headers={"Accept-Encoding": "identity"})
    assert identity.headers["ETag"] != plain_etag   # the tag follows the rewritten bytes
    # Bundles without the defaults and source maps are served as the CDN sent them.
    for name in (RECORDER, RECORDER_MAP):
        assert await (await client.get(f"/mp-libs/{name}")).read() == fake_cdn.files[name]


async def test_the_api_host_can_be_left_alone(make_relay: RelayFactory, fake_cdn: FakeCdn) -> None:
    client = await relay_for(make_relay, fake_cdn, public_url="https://relay.example",
                             rewrite_api_host=False)
    body = await (await client.get(f"/libs/{LOADER}")).read()
    assert b'"https://relay.example/libs/"' in body and API_LITERAL in body


async def test_asset_series_are_exported(make_relay: RelayFactory, fake_cdn: FakeCdn) -> None:
    client = await relay_for(make_relay, fake_cdn)
    await client.get(f"/libs/{LOADER}")
    await client.get(f"/libs/{LOADER}")
    text = await (await client.get("/metrics")).text()
    assert 'mixpanel_proxy_asset_cache_total{result="hit"} 1.0' in text
    assert 'mixpanel_proxy_asset_cache_total{result="miss"} 1.0' in text
    assert "mixpanel_proxy_asset_cache_bytes " in text
    assert 'mixpanel_proxy_requests_total{endpoint="assets",region="cdn",status="2xx"} 2.0' in text


async def raw_get(client: TestClient[Any, Any], target: str) -> tuple[int, dict[str, str], str]:
    """One request with the target exactly as written: no client-side URL normalisation."""
    assert client.port is not None
    request = f"GET {target} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n".encode()
    status, head, body = await exchange_to_eof(client.port, request)
    return status, parse_head(head)[1], body.decode("latin-1")
