"""Pure routing: which region (or regions) a request goes to, and with which bytes.

The project's token decides when `[[projects]]` lists it; else the path's region prefix; else the
default region. The payload is decoded only when the answer depends on it (projects listed, strict
mode, or a payload policy), and a request that goes whole and unchanged to one region keeps its
exact bytes. A batch that mixes regions is split, and a payload a policy changed is rewritten:
each part re-encoded as compact JSON `data=` (see codec/encode.py).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..codec import (
    GZIP_ENDPOINTS,
    DecodedPayload,
    DecodeLimits,
    decode_payload,
    encode_payload,
    form_field,
)
from ..codec.policy import PayloadPolicy
from ..config import Config
from ..endpoints import BASIC_TOKEN_ENDPOINTS, DATA_ENDPOINTS


class UnknownToken(Exception):
    """Strict mode met a token (or no token) that `[[projects]]` does not list: answer 403."""

    status = 403
    reason = "unknown_token"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(slots=True)   # not frozen: made per request, frozen costs each field a call
class RoutedRequest:
    """What routing needs to know of a request; built by the relay, never holds aiohttp objects."""

    endpoint: str
    pinned_region: str | None
    method: str
    query: bytes                       # raw query string, as received
    body: bytes
    content_type: str = ""
    content_encoding: str = ""
    authorization: str = ""
    inflate_limit: int = 10 * 1024 * 1024


@dataclass(slots=True)   # not frozen: made per request, frozen costs each field a call
class Part:
    """One upstream request: the region and, when split, the rewritten body or query."""

    region: str
    body: bytes | None = None          # None: the original body, byte for byte
    query: bytes | None = None         # None: the original query string
    drop_content_encoding: bool = False
    records: int = 0
    content_encoding: str = ""         # the coding of a rewritten body, e.g. "gzip"


@dataclass(slots=True)   # not frozen: made per request, frozen costs each field a call
class Plan:
    parts: tuple[Part, ...]
    split: bool = False
    tokens: tuple[str, ...] = field(default_factory=tuple)


class Router:
    def __init__(self, config: Config) -> None:
        self._default = config.routing.default_region
        self._strict = config.routing.strict
        self._by_token = {p.token: p.region for p in config.projects}
        self._by_project_id = {p.project_id: p.region for p in config.projects if p.project_id}
        # Without listed projects and strict mode, no answer depends on the payload: never decode.
        self._needs_payload = bool(self._by_token) or self._strict
        self._policy = PayloadPolicy(config.privacy, config.payload)
        self._max_depth = config.payload.max_depth
        self._gzip_level = config.payload.upstream_gzip_level

    def plan(self, request: RoutedRequest) -> Plan:
        fallback = request.pinned_region or self._default
        rewrites = self._policy.decodes(request.endpoint)
        if not self._needs_payload and not rewrites:
            return Plan((Part(fallback),))
        if request.endpoint == "import" or request.endpoint == "flags":
            region = self._region_of_project_id(request.query)
            if region is not None:
                if not rewrites:
                    return Plan((Part(region),))
                return self._plan_by_payload(request, region, fixed=True)
        if request.endpoint in BASIC_TOKEN_ENDPOINTS:
            return self._plan_by_header_token(request, fallback)
        if request.endpoint in DATA_ENDPOINTS:
            return self._plan_by_payload(request, fallback)
        return Plan((Part(fallback),))

    def _region_of_project_id(self, query: bytes) -> str | None:
        raw = form_field(query, b"project_id") if query else None
        if raw is None or not raw.isdigit():
            return None
        return self._by_project_id.get(int(raw))

    def _region_for(self, token: str | None, fallback: str) -> str:
        region = self._by_token.get(token) if token else None
        if region is not None:
            return region
        if self._strict:
            if not token:   # said as such: "no project token is not a project ..." read oddly
                raise UnknownToken("the request names no project token, and strict mode serves "
                                   "only listed projects: not a project this relay serves")
            raise UnknownToken(f"token {token[:6]}… is not a project this relay serves")
        return fallback

    def _plan_by_header_token(self, request: RoutedRequest, fallback: str) -> Plan:
        token = basic_auth_user(request.authorization)
        if token is None and request.query:
            raw = form_field(request.query, b"token")
            token = raw.decode("utf-8", "replace") if raw else None
        return Plan((Part(self._region_for(token, fallback)),), tokens=(token,) if token else ())

    def _plan_by_payload(self, request: RoutedRequest, fallback: str,
                         fixed: bool = False) -> Plan:
        """Decode, apply the payload policy, group by region; rewrite only what changed."""
        decoded = decode_payload(request.body, request.query, request.content_type,
                                 request.content_encoding, self._limits(request))
        endpoint = request.endpoint
        changed = self._policy.scrub(endpoint, decoded.records)
        regions, tokens = self._regions(request, decoded.records, fallback, fixed)
        split = len(regions) > 1
        changed = self._policy.add_insert_ids(endpoint, decoded.records, split or changed) \
            or changed
        query = self._policy.ip.zero_ip_field(request.query, add=True)
        form = self._policy.ip.zero_ip_field(decoded.body, add=False) \
            if decoded.carrier == "form" else None
        if form is not None:
            decoded, changed = dataclasses.replace(decoded, body=form), True
        if not split and not changed:
            part = Part(next(iter(regions)), query=query, records=len(decoded.records))
            return Plan((part,), tokens=tokens)
        gzip_level = self._gzip_level if endpoint in GZIP_ENDPOINTS else 0
        parts = tuple(_rewritten_part(region, items, decoded, query or request.query, gzip_level)
                      for region, items in regions.items())
        return Plan(parts, split=split, tokens=tokens)

    def _regions(self, request: RoutedRequest, records: list[Any], fallback: str,
                 fixed: bool) -> tuple[dict[str, list[Any]], tuple[str, ...]]:
        """The records of each region (in order), and the distinct tokens seen."""
        header_token = (basic_auth_user(request.authorization)
                        if request.endpoint == "import" else None)
        regions: dict[str, list[Any]] = {}
        tokens: list[str] = []
        for record in records:
            token = record_token(record) or header_token
            if token:
                tokens.append(token)
            region = fallback if fixed else self._region_for(token, fallback)
            regions.setdefault(region, []).append(record)
        if not records:
            regions[fallback if fixed else self._region_for(header_token, fallback)] = []
        return regions, tuple(dict.fromkeys(tokens))

    def _limits(self, request: RoutedRequest) -> DecodeLimits:
        return DecodeLimits(compressed=request.inflate_limit, inflated=request.inflate_limit,
                            depth=self._max_depth)


def _rewritten_part(region: str, items: list[Any], decoded: DecodedPayload, query: bytes,
                    gzip_level: int) -> Part:
    encoded = encode_payload(decoded, items, query, gzip_level)
    return Part(region, body=encoded.body, query=encoded.query,
                drop_content_encoding=encoded.body is not None,
                content_encoding=encoded.content_encoding, records=len(items))


def record_token(record: Any) -> str | None:
    """The project token of one event, profile or group update."""
    if not isinstance(record, Mapping):
        return None
    properties = record.get("properties")
    token = properties.get("token") if isinstance(properties, Mapping) else None
    if token is None:
        token = record.get("$token", record.get("token"))
    return token if isinstance(token, str) and token else None


def basic_auth_user(header: str) -> str | None:
    """The user part of `Authorization: Basic base64(user:password)`: the token for the SDKs."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user = decoded.partition(":")[0]
    return user or None
