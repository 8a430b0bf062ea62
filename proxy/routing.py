"""Pure routing: which region (or regions) a request goes to, and with which bytes.

The project's token decides when `[[projects]]` lists it; else the path's region prefix; else the
default region. The payload is decoded only when the answer depends on it (projects listed or strict
mode), and a request that goes whole to one region keeps its exact bytes. A batch that mixes regions
is split, each part re-encoded as compact JSON `data=`.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from .codec import decode_data, extract_data, form_field, inflate, parse_json_body
from .codec.payload import count_records
from .config import Config
from .endpoints import BASIC_TOKEN_ENDPOINTS, DATA_ENDPOINTS


class UnknownToken(Exception):
    """Strict mode met a token (or no token) that `[[projects]]` does not list: answer 403."""

    status = 403
    reason = "unknown_token"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class Part:
    """One upstream request: the region and, when split, the rewritten body or query."""

    region: str
    body: bytes | None = None          # None: the original body, byte for byte
    query: bytes | None = None         # None: the original query string
    drop_content_encoding: bool = False
    records: int = 0


@dataclass(frozen=True, slots=True)
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

    def plan(self, request: RoutedRequest) -> Plan:
        fallback = request.pinned_region or self._default
        if not self._needs_payload:
            return Plan((Part(fallback),))
        if request.endpoint == "import" or request.endpoint == "flags":
            region = self._region_of_project_id(request.query)
            if region is not None:
                return Plan((Part(region),))
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
            shown = f"token {token[:6]}…" if token else "no project token"
            raise UnknownToken(f"{shown} is not a project this relay serves")
        return fallback

    def _plan_by_header_token(self, request: RoutedRequest, fallback: str) -> Plan:
        token = basic_auth_user(request.authorization)
        if token is None and request.query:
            raw = form_field(request.query, b"token")
            token = raw.decode("utf-8", "replace") if raw else None
        return Plan((Part(self._region_for(token, fallback)),), tokens=(token,) if token else ())

    def _plan_by_payload(self, request: RoutedRequest, fallback: str) -> Plan:
        payload, form_body = self._decode_payload(request)
        records = payload if isinstance(payload, list) else [payload]
        count_records(payload)
        header_token = (basic_auth_user(request.authorization)
                        if request.endpoint == "import" else None)
        regions: dict[str, list[Any]] = {}
        tokens: list[str] = []
        for record in records:
            token = record_token(record) or header_token
            if token:
                tokens.append(token)
            regions.setdefault(self._region_for(token, fallback), []).append(record)
        if not records:
            regions[self._region_for(header_token, fallback)] = []
        unique_tokens = tuple(dict.fromkeys(tokens))
        if len(regions) == 1:
            return Plan((Part(next(iter(regions)), records=len(records)),), tokens=unique_tokens)
        parts = tuple(_split_part(region, items, request, form_body)
                      for region, items in regions.items())
        return Plan(parts, split=True, tokens=unique_tokens)

    def _decode_payload(self, request: RoutedRequest) -> tuple[Any, bool]:
        """The decoded payload, and whether it came from a form/beacon `data=` body."""
        body = inflate(request.body, request.content_encoding, request.inflate_limit)
        data = extract_data(body, b"") if body and not _is_json(request.content_type) else None
        if data is not None:
            return decode_data(data), True
        if request.query:
            data = form_field(request.query, b"data")
            if data is not None:
                return decode_data(data), False
        if request.endpoint == "import" and body:
            return parse_json_body(body), True
        return [], False


def _split_part(region: str, items: list[Any], request: RoutedRequest, form_body: bool) -> Part:
    encoded = json.dumps(items, separators=(",", ":"), ensure_ascii=False)
    if not form_body:
        query = _replace_field(request.query, encoded)
        return Part(region, query=query, records=len(items))
    if request.endpoint == "import" and _is_json(request.content_type):
        return Part(region, body=encoded.encode(), drop_content_encoding=True, records=len(items))
    body = inflate(request.body, request.content_encoding, request.inflate_limit)
    return Part(region, body=_replace_field(body, encoded), drop_content_encoding=True,
                records=len(items))


def _replace_field(encoded: bytes, data: str) -> bytes:
    """`encoded` (a form or query) with its data= field replaced and every other field kept."""
    fields = [part for part in encoded.split(b"&") if part and not part.startswith(b"data=")]
    fields.append(urlencode({"data": data}).encode())
    return b"&".join(fields)


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


def _is_json(content_type: str) -> bool:
    return "json" in content_type
