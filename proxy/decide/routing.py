"""Pure routing: which region (or regions) a request goes to, and with which bytes.

The project's token decides when `[[projects]]` lists it; else the path's region prefix; else the
default region. The payload is decoded only when the answer depends on it (projects listed, strict
mode, or a payload policy), and a request that goes whole and unchanged to one region keeps its
exact bytes. A batch that mixes regions is split, and a payload a policy changed is rewritten:
each part re-encoded as compact JSON `data=` (see codec/encode.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ..codec import (
    GZIP_ENDPOINTS,
    DecodedPayload,
    DecodeLimits,
    PayloadTooLarge,
    UndecodablePayload,
    decode_payload,
    encode_payload,
    form_field,
    set_field,
)
from ..codec.policy import PayloadPolicy
from ..config import Config
from ..endpoints import BASIC_TOKEN_ENDPOINTS, DATA_ENDPOINTS
from .credentials import ImportPart, basic_credentials, import_parts
from .sizing import oversize, size_chunks

# Mixpanel's own SDK telemetry, sent under Mixpanel's tokens rather than the app's: the
# "Integration" event of mixpanel-android up to 7.5.1 (`MixpanelAPI.sendHttpEvent`),
# mixpanel-iphone (`Mixpanel.m`, still at 5.0.9), mixpanel-swift 2.x and mixpanel-unity
# 3.1.1-3.5.0 (`Controller.cs`); the DEBUG-build events ("SDK Debug Launch", "SDK Implemented",
# "Toggle SDK Logging", with an /engage `$add`) of mixpanel-iphone, mixpanel-swift 3.x-4.x and
# mixpanel-unity under `metrics-1`. No other SDK sends telemetry under a token of its own.
# A strict relay answers them locally with the SDK's success and forwards nothing: a 403 would
# head an Android queue.
TELEMETRY_TOKENS = frozenset({"85053bf24bba75239b16a601d9387e17", "metrics-1"})
_LOCAL = ""          # the "region" of records answered locally


class UnknownToken(Exception):
    """Strict mode met a token (or no token) that `[[projects]]` does not list: answer 403."""

    status: ClassVar[int] = 403
    reason: ClassVar[str] = "unknown_token"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# The per-request classes here are dataclasses for their repr and equality, with an __init__ of
# their own (and not frozen: frozen costs each field a call): compiled (proxy/compiled.py), an
# explicit __init__ is native, while the one dataclasses generates runs in the interpreter at
# about five times the cost.
@dataclass(slots=True, init=False)
class RoutedRequest:
    """What routing needs to know of a request; built by the relay, never holds aiohttp objects."""

    endpoint: str
    pinned_region: str | None
    method: str
    query: bytes                       # raw query string, as received
    body: bytes
    content_type: str
    content_encoding: str
    authorization: str
    inflate_limit: int                 # the largest (inflated) body the relay decodes
    part_limit: int                    # a data body over it is sent in parts; 0: never

    def __init__(self, endpoint: str, pinned_region: str | None, method: str, query: bytes,
                 body: bytes, content_type: str = "", content_encoding: str = "",
                 authorization: str = "", inflate_limit: int = 10 * 1024 * 1024,
                 part_limit: int = 0) -> None:
        self.endpoint, self.pinned_region, self.method = endpoint, pinned_region, method
        self.query, self.body, self.content_type = query, body, content_type
        self.content_encoding, self.authorization = content_encoding, authorization
        self.inflate_limit, self.part_limit = inflate_limit, part_limit


@dataclass(slots=True, init=False)
class Part:
    """One upstream request: the region and, when split, the rewritten body or query."""

    region: str
    body: bytes | None                 # None: the original body, byte for byte
    query: bytes | None                # None: the original query string
    drop_content_encoding: bool
    records: int
    content_encoding: str              # the coding of a rewritten body, e.g. "gzip"
    authorization: str | None          # a split /import part's own credentials

    def __init__(self, region: str, body: bytes | None = None, query: bytes | None = None,
                 drop_content_encoding: bool = False, records: int = 0,
                 content_encoding: str = "", authorization: str | None = None) -> None:
        self.region, self.body, self.query = region, body, query
        self.drop_content_encoding, self.records = drop_content_encoding, records
        self.content_encoding, self.authorization = content_encoding, authorization


@dataclass(slots=True, init=False)
class Plan:
    parts: tuple[Part, ...]            # empty: nothing to forward, the relay answers itself
    split: bool
    tokens: tuple[str, ...]
    telemetry: int                     # records under TELEMETRY_TOKENS, answered locally

    def __init__(self, parts: tuple[Part, ...], split: bool = False,
                 tokens: tuple[str, ...] = (), telemetry: int = 0) -> None:
        self.parts, self.split, self.tokens, self.telemetry = parts, split, tokens, telemetry


class Router:
    def __init__(self, config: Config) -> None:
        self._default = config.routing.default_region
        self._strict = config.routing.strict
        self._by_token = {p.token: p.region for p in config.projects}
        self._by_project_id = {p.project_id: p.region for p in config.projects if p.project_id}
        self._project_ids = {p.token: p.project_id for p in config.projects}
        # Without listed projects and strict mode, no answer depends on the payload: never decode.
        self._needs_payload = bool(self._by_token) or self._strict
        self._policy = PayloadPolicy(config.privacy, config.payload)
        self._max_depth = config.payload.max_depth
        self._gzip_level = config.payload.upstream_gzip_level

    def plan(self, request: RoutedRequest) -> Plan:
        fallback = request.pinned_region or self._default
        rewrites = self._policy.decodes(request.endpoint)
        if not self._needs_payload and not rewrites and not oversize(request):
            return Plan((Part(fallback),))
        if request.endpoint == "import" or request.endpoint == "flags":
            region = self._region_of_project_id(request.query)
            if region is not None:
                if not rewrites and not oversize(request):
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
            if token in TELEMETRY_TOKENS:
                return _LOCAL
            if not token:   # said as such: "no project token is not a project ..." read oddly
                raise UnknownToken("the request names no project token, and strict mode serves "
                                   "only listed projects: not a project this relay serves")
            raise UnknownToken(f"token {token[:6]}… is not a project this relay serves")
        return fallback

    def _plan_by_header_token(self, request: RoutedRequest, fallback: str) -> Plan:
        """The Basic user is the token, unless it is not a listed token and `token=` is: server
        flags SDKs with a service account (Ruby, Go, Python, Node) send `Basic <sa user>:<secret>`
        plus `token=` and `project_id=` (a listed project_id has already decided)."""
        token = basic_auth_user(request.authorization)
        if (token is None or token not in self._by_token) and request.query:
            raw = form_field(request.query, b"token")
            if raw:
                token = raw.decode("utf-8", "replace")
        return Plan((Part(self._region_for(token, fallback)),), tokens=(token,) if token else ())

    def _plan_by_payload(self, request: RoutedRequest, fallback: str,
                         fixed: bool = False) -> Plan:
        """Decode, apply the payload policy, group by region; rewrite only what changed."""
        try:
            decoded = decode_payload(request.body, request.query, request.content_type,
                                     request.content_encoding, self._limits(request))
        except UndecodablePayload:
            if oversize(request):     # over the limit and not records: the limit's refusal
                raise _too_large(request) from None
            raise
        endpoint = request.endpoint
        if request.part_limit and decoded.size > request.part_limit and not decoded.records:
            raise _too_large(request)    # no records to send in parts
        changed = self._policy.scrub(endpoint, decoded.records)
        regions, tokens = self._regions(request, decoded.records, fallback, fixed)
        local = regions.pop(_LOCAL, [])
        if local and not regions:
            return Plan((), tokens=tokens, telemetry=len(local))
        changed = changed or bool(local)       # the rest goes without the telemetry records
        groups = self._groups(request, decoded, regions, fixed)
        if request.part_limit and decoded.size > request.part_limit:
            groups = [ImportPart(group.region, chunk, group.authorization, group.project_id)
                      for group in groups
                      for chunk in size_chunks(group.records, decoded, request.part_limit)]
            changed = True
        split = len(groups) > 1
        changed = self._policy.add_insert_ids(endpoint, decoded.records, split or changed) \
            or changed
        query = self._policy.ip.zero_ip_field(request.query, add=True)
        form = self._policy.ip.zero_ip_field(decoded.body, add=False) \
            if decoded.carrier == "form" else None
        if form is not None:
            decoded, changed = dataclasses.replace(decoded, body=form), True
        if not split and not changed:
            part = Part(groups[0].region, query=query, records=len(decoded.records))
            return Plan((part,), tokens=tokens)
        gzip_level = self._gzip_level if endpoint in GZIP_ENDPOINTS else 0
        parts = tuple(_rewritten_part(group, decoded, query or request.query, gzip_level)
                      for group in groups)
        return Plan(parts, split=split, tokens=tokens, telemetry=len(local))

    def _groups(self, request: RoutedRequest, decoded: DecodedPayload,
                regions: dict[str, list[Any]], fixed: bool) -> list[ImportPart]:
        """One group per upstream request: per region, and for /import per project too, each
        with credentials valid for its own project (see credentials.py)."""
        if request.endpoint != "import" or fixed:
            return [ImportPart(region, records) for region, records in regions.items()]
        has_api_key = (form_field(request.query, b"api_key") is not None
                       or (decoded.carrier == "form"
                           and form_field(decoded.body, b"api_key") is not None))
        return import_parts(request.authorization, has_api_key, regions, record_token,
                            self._project_ids)

    def _regions(self, request: RoutedRequest, records: list[Any], fallback: str,
                 fixed: bool) -> tuple[dict[str, list[Any]], tuple[str, ...]]:
        """The records of each region (in order), and the distinct tokens seen."""
        header_token = (basic_auth_user(request.authorization)
                        if request.endpoint == "import" else None)
        regions: dict[str, list[Any]] = {}
        tokens: list[str] = []
        for record in records:
            token = record_token(record) or header_token
            if token and token not in TELEMETRY_TOKENS:
                tokens.append(token)
            region = fallback if fixed else self._region_for(token, fallback)
            regions.setdefault(region, []).append(record)
        if not records:
            regions[fallback if fixed else self._region_for(header_token, fallback)] = []
        return regions, tuple(dict.fromkeys(tokens))

    def _limits(self, request: RoutedRequest) -> DecodeLimits:
        return DecodeLimits(compressed=request.inflate_limit, inflated=request.inflate_limit,
                            depth=self._max_depth)


def _too_large(request: RoutedRequest) -> PayloadTooLarge:
    limit = request.part_limit
    if len(request.body) > limit:
        return PayloadTooLarge(f"the body exceeds the {limit}-byte limit for /{request.endpoint}")
    return PayloadTooLarge(f"the decompressed body exceeds the {limit}-byte limit")


def _rewritten_part(group: ImportPart, decoded: DecodedPayload, query: bytes,
                    gzip_level: int) -> Part:
    if group.project_id is not None:
        query = set_field(query, b"project_id", str(group.project_id).encode())
    encoded = encode_payload(decoded, group.records, query, gzip_level)
    return Part(group.region, body=encoded.body, query=encoded.query,
                drop_content_encoding=encoded.body is not None,
                content_encoding=encoded.content_encoding, records=len(group.records),
                authorization=group.authorization)


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
    credentials = basic_credentials(header)
    return credentials[0] if credentials else None
