"""Decode the payload forms the Mixpanel SDKs send, under hard limits.

- `data=` in a form-urlencoded body, a `text/plain` sendBeacon body, or a GET query;
- its value as base64 (standard or URL-safe, padding optional) or plain JSON, object or array;
- `/import` bodies as a JSON array or object, or newline-delimited JSON;
- request `Content-Encoding` is undone by `inflate` (see inflate.py), bounded while inflating.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

from ..endpoints import DEFAULT_MAX_DEPTH
from .errors import TooManyRecords, UndecodablePayload
from .inflate import inflate

__all__ = [
    "MAX_RECORDS", "DEFAULT_MAX_DEPTH", "DecodeLimits", "check_depth", "count_records",
    "decode_data", "extract_data", "form_field", "inflate", "parse_json_body", "parse_ndjson",
]

MAX_RECORDS = 2000          # Mixpanel's per-request maximum for /track, /import, /engage, /groups
_URLSAFE = bytes.maketrans(b"-_ ", b"+/+")   # a '+' sent unescaped in a form arrives as ' '
_WRAPPING = b"\r\n\t"                         # line breaks some base64 encoders insert


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """Hard limits for one request: each is checked before or while the work it bounds runs."""

    compressed: int = 2 * 1024 * 1024     # body bytes as received
    inflated: int = 2 * 1024 * 1024       # body bytes after Content-Encoding is undone
    records: int = MAX_RECORDS
    depth: int = DEFAULT_MAX_DEPTH


def form_field(encoded: bytes, name: bytes) -> bytes | None:
    """The percent-decoded value of the first `name=` field of an x-www-form-urlencoded string."""
    prefix = name + b"="
    for part in encoded.split(b"&"):
        if part.startswith(prefix):
            return unquote_to_bytes(part[len(prefix):].replace(b"+", b" "))
    return None


def extract_data(body: bytes, query: bytes) -> bytes | None:
    """The raw `data` value: from the body (form or beacon text), else from the query string."""
    value = form_field(body, b"data") if body else None
    if value is None and query:
        value = form_field(query, b"data")
    return value


def decode_data(value: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Decode a `data=` value: plain JSON (starts with [ or {) or base64 of UTF-8 JSON."""
    text = value.strip()
    if not text:
        raise UndecodablePayload("data= is empty")
    if text[:1] not in (b"[", b"{"):
        text = _unbase64(text)
    payload = _loads(text, "data=", max_depth)
    if not isinstance(payload, list | dict):
        raise UndecodablePayload("data= must be a JSON object or array")
    return payload


def parse_json_body(body: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """An /import body: a JSON array or object, or newline-delimited JSON objects."""
    text = body.strip()
    if not text:
        raise UndecodablePayload("the request body is empty")
    try:
        return _loads(text, "the body", max_depth)
    except UndecodablePayload:
        if text[:1] != b"{" or b"\n" not in text:
            raise
    return parse_ndjson(text, max_depth)


def parse_ndjson(text: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> list[Any]:
    return [_loads(line, "an NDJSON line", max_depth - 1)
            for line in text.splitlines() if line.strip()]


def count_records(payload: Any, limit: int = MAX_RECORDS) -> int:
    count = len(payload) if isinstance(payload, list) else 1
    if count > limit:
        raise TooManyRecords(f"{count} records in one request; Mixpanel takes at most {limit}")
    return count


def check_depth(payload: Any, limit: int, what: str = "the payload") -> None:
    """Refuse a decoded payload whose containers nest deeper than `limit` (the top counts as 1)."""
    stack = [(payload, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            raise UndecodablePayload(f"{what} nests deeper than {limit} levels")
        children = node.values() if type(node) is dict else node
        stack.extend((child, depth + 1) for child in children
                     if type(child) is dict or type(child) is list)


def _unbase64(text: bytes) -> bytes:
    text = text.translate(_URLSAFE, _WRAPPING)
    text += b"=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise UndecodablePayload("data= is neither JSON nor valid base64") from exc


def _loads(text: bytes, what: str, max_depth: int) -> Any:
    try:
        payload = json.loads(text)
    except UnicodeDecodeError as exc:
        raise UndecodablePayload(f"{what} is not valid UTF-8") from exc
    except RecursionError as exc:
        raise UndecodablePayload(f"{what} nests deeper than {max_depth} levels") from exc
    except ValueError as exc:
        raise UndecodablePayload(f"{what} is not valid JSON ({exc})") from exc
    # Depth can only pass the limit if that many brackets exist: the C-speed count spares
    # small payloads the walk.
    if text.count(b"[") + text.count(b"{") > max_depth and isinstance(payload, list | dict):
        check_depth(payload, max_depth, what)
    return payload
