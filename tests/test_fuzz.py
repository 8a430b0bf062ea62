"""Property-based fuzzing (hypothesis) of the pure request decoding and routing functions.

Bounded for CI (`max_examples`, no per-example deadline: the shared CI box is slow at times).
Each property asserts that only the documented error types escape and that the invariants hold:
a matched path names one SDK endpoint and yields one of its canonical upstream paths; routing
only ever picks us, eu or in, and splitting a batch keeps every record exactly once, in the
region its token belongs to; the client IP is always the peer or an address a trusted hop gave.
More examples: HYPOTHESIS_PROFILE=long python -m pytest tests/test_fuzz.py
"""

from __future__ import annotations

import base64
import gzip
import ipaddress
import json
import os
import re
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from proxy.codec import CodecError, decode_data, extract_data, inflate
from proxy.config import parse_config
from proxy.decide.clientip import ClientIPResolver
from proxy.decide.paths import PathMatcher
from proxy.decide.routing import Plan, RoutedRequest, Router, UnknownToken, record_token
from proxy.endpoints import ENDPOINTS, REGIONS

settings.register_profile("ci", max_examples=300, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=20_000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
FUZZ = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

TOKENS = {"tok_us_1234": "us", "tok_eu_5678": "eu", "tok_in_9012": "in"}
CANONICAL = re.compile(r"^/(track|engage|groups|import|record|settings|flags"
                       r"|flags/definitions|flags/[A-Za-z0-9_-]{1,128}/first-time-events)/?$")

# -- paths --------------------------------------------------------------------------------------
SEGMENTS = st.sampled_from([*ENDPOINTS, *REGIONS, "", ".", "..", "%2e%2e", "definitions",
                            "first-time-events", "flag_1", "mp", "api", "libs", "%2F", "..;",
                            "track.php", "\\", "x y", "é", "?", "#", "http:", "evil.example"])
RAW_PATHS = st.one_of(
    st.text(max_size=60),
    st.lists(SEGMENTS, max_size=6).map(lambda parts: "/" + "/".join(parts)),
    st.lists(SEGMENTS, max_size=6).map(lambda parts: "//" + "/".join(parts) + "/"),
)
MATCHERS = [PathMatcher(), PathMatcher("/mp/api", {"e": "track", "p": "engage"})]


@FUZZ
@given(raw=RAW_PATHS, which=st.integers(0, len(MATCHERS) - 1))
def test_path_matching_only_yields_canonical_upstream_paths(raw: str, which: int) -> None:
    match = MATCHERS[which].match(raw)
    if match is None:
        return
    assert match.endpoint in ENDPOINTS
    assert match.region is None or match.region in REGIONS
    assert CANONICAL.match(match.upstream_path), match
    assert match.upstream_path.split("/")[1] == match.endpoint
    assert ".." not in match.upstream_path and "%" not in match.upstream_path
    # The canonical path is itself an SDK route for the same endpoint (no base path needed).
    again = MATCHERS[0].match(match.upstream_path)
    assert again is not None and again.endpoint == match.endpoint


# -- routing ------------------------------------------------------------------------------------
def router(strict: bool, insert_id: str = "when_rewriting") -> Router:
    return Router(parse_config({
        "projects": [{"token": token, "region": region} for token, region in TOKENS.items()],
        "routing": {"strict": strict}, "payload": {"insert_id": insert_id},
        "health": {"probe_interval": 0}}))


ROUTERS = {(strict, mode): router(strict, mode)
           for strict in (False, True) for mode in ("when_rewriting", "always")}
JSON_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                        st.text(max_size=8))
JSON_VALUES = st.recursive(JSON_LEAVES, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=12)
TOKEN_VALUES = st.one_of(st.sampled_from(sorted(TOKENS)), st.just("tok_unknown"), st.none(),
                         st.integers())
RECORDS = st.builds(
    lambda name, token, extra, insert: {"event": name, "properties": {
        **({"token": token} if token is not None else {}), "distinct_id": "d", **extra,
        **({"$insert_id": insert} if insert else {})}},
    st.text(min_size=1, max_size=8), TOKEN_VALUES,
    st.dictionaries(st.text(max_size=5), JSON_VALUES, max_size=3),
    st.one_of(st.none(), st.text(alphabet="abcdef0123456789", min_size=8, max_size=16)))


def form_body(payload: Any, style: str) -> tuple[bytes, str, str]:
    """(body, Content-Type, Content-Encoding) as the SDKs send them."""
    text = json.dumps(payload)
    if style == "base64_form":
        data = base64.b64encode(text.encode()).decode()
        return f"data={quote(data, safe='')}".encode(), "application/x-www-form-urlencoded", ""
    if style == "json_form":
        return f"data={quote(text, safe='')}".encode(), "application/x-www-form-urlencoded", ""
    if style == "gzip_json":
        return gzip.compress(text.encode()), "application/json", "gzip"
    return text.encode(), "application/json", ""


def plan_or_refusal(routed: RoutedRequest, strict: bool, mode: str) -> Plan | None:
    try:
        plan = ROUTERS[(strict, mode)].plan(routed)
    except (CodecError, UnknownToken):
        return None                       # the documented refusals: 400/413/403 with JSON
    assert plan.parts and all(part.region in REGIONS for part in plan.parts)
    event(f"{len(plan.parts)} part(s)")
    assert plan.split == (len(plan.parts) > 1)
    assert len({part.region for part in plan.parts}) == len(plan.parts)
    assert all(isinstance(token, str) and token for token in plan.tokens)
    return plan


@pytest.mark.slow   # 300 routed examples: seconds
@FUZZ
@given(records=st.lists(RECORDS, min_size=1, max_size=8),
       endpoint=st.sampled_from(["track", "engage", "groups", "import"]),
       style=st.sampled_from(["base64_form", "json_form", "gzip_json", "json"]),
       strict=st.booleans(), mode=st.sampled_from(["when_rewriting", "always"]),
       pinned=st.one_of(st.none(), st.sampled_from(REGIONS)))
def test_routing_keeps_every_record_once_in_its_tokens_region(
        records: list[dict[str, Any]], endpoint: str, style: str, strict: bool, mode: str,
        pinned: str | None) -> None:
    body, content_type, encoding = form_body(records, style)
    routed = RoutedRequest(endpoint=endpoint, pinned_region=pinned, method="POST", query=b"",
                           body=body, content_type=content_type, content_encoding=encoding)
    plan = plan_or_refusal(routed, strict, mode)
    known = [TOKENS.get(str(record_token(record))) for record in records]
    if plan is None:
        assert strict and None in known   # only strict mode refuses these (valid) payloads
        return
    fallback = pinned or "us"
    delivered: list[tuple[str, Any]] = []
    for part in plan.parts:
        sent = routed.body if part.body is None else part.body
        coding = encoding if part.body is None else part.content_encoding
        plain = inflate(sent, coding, 10 * 1024 * 1024)
        value = extract_data(plain, part.query or b"")
        payload = decode_data(value) if value is not None else json.loads(plain)
        for record in payload if isinstance(payload, list) else [payload]:
            delivered.append((part.region, record))
    assert len(delivered) == len(records)
    for region, record in delivered:
        assert region == TOKENS.get(str(record_token(record)), fallback)
    names = sorted(str(record["event"]) for _, record in delivered)
    assert names == sorted(str(record["event"]) for record in records)


@FUZZ
@given(body=st.binary(max_size=300), query=st.binary(max_size=60),
       endpoint=st.sampled_from(ENDPOINTS), strict=st.booleans(),
       content_type=st.sampled_from(["", "application/x-www-form-urlencoded", "text/plain",
                                     "application/json", "application/x-ndjson"]),
       encoding=st.sampled_from(["", "gzip", "deflate", "br", "identity", "x-unknown"]),
       authorization=st.one_of(st.just(""), st.text(max_size=30),
                               st.binary(max_size=20).map(
                                   lambda raw: "Basic " + base64.b64encode(raw).decode())))
def test_routing_arbitrary_bytes_only_raises_documented_errors(
        body: bytes, query: bytes, endpoint: str, strict: bool, content_type: str,
        encoding: str, authorization: str) -> None:
    routed = RoutedRequest(endpoint=endpoint, pinned_region=None, method="POST", query=query,
                           body=body, content_type=content_type, content_encoding=encoding,
                           authorization=authorization, inflate_limit=64 * 1024)
    plan_or_refusal(routed, strict, "always")


@FUZZ
@given(body=st.binary(max_size=200), coding=st.sampled_from(["gzip", "deflate", "br", ""]))
def test_inflate_raises_only_codec_errors(body: bytes, coding: str) -> None:
    try:
        out = inflate(body, coding, 4096)
    except CodecError:
        return
    assert len(out) <= 4096 or coding == ""


# -- client IP ----------------------------------------------------------------------------------
IPS = st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str))
HEADER_TEXT = st.one_of(
    st.text(max_size=40),
    st.lists(st.one_of(IPS, st.text(max_size=6)), max_size=5).map(", ".join))
RESOLVERS = [
    ClientIPResolver([]),
    ClientIPResolver([ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"),
                      ipaddress.ip_network("127.0.0.0/8")]),
    ClientIPResolver([ipaddress.ip_network("0.0.0.0/0")], "CF-Connecting-IP"),
]


@FUZZ
@given(peer=st.one_of(IPS, st.sampled_from(["127.0.0.1", "10.1.2.3", "::1"]), st.text(max_size=10)),
       xff=st.one_of(st.none(), HEADER_TEXT), real=st.one_of(st.none(), HEADER_TEXT),
       header=st.one_of(st.none(), HEADER_TEXT), which=st.integers(0, len(RESOLVERS) - 1))
def test_client_ip_is_the_peer_or_a_trusted_hops_word(
        peer: str, xff: str | None, real: str | None, header: str | None, which: int) -> None:
    resolver = RESOLVERS[which]
    result = resolver.resolve(peer, xff, real, header)
    try:
        peer_ip = ipaddress.ip_address(peer)
    except ValueError:
        return                                 # not an IP: the relay never sees such a peer
    ipaddress.ip_address(result)               # always a valid address
    if not resolver.is_trusted(peer):
        assert ipaddress.ip_address(result) in {peer_ip, getattr(peer_ip, "ipv4_mapped", None)}
        return
    said = {_plain(piece) for text in (xff, real, header) if text for piece in text.split(",")}
    assert _plain(result) in said | {_plain(peer)}


def _plain(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a header piece names (IPv4-mapped IPv6 as IPv4), or None."""
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    mapped = getattr(ip, "ipv4_mapped", None)
    return mapped if mapped is not None else ip
