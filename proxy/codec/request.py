"""Decode a whole data request (track, engage, groups, import) into its records, under limits.

Where the payload came from is kept (`Carrier`), so a rewritten payload goes back the way it came:
a form or beacon body stays a form body with its other fields, a GET query stays a query, an
/import JSON or NDJSON body stays JSON or NDJSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .errors import PayloadTooLarge, UndecodablePayload
from .inflate import inflate
from .payload import (
    DecodeLimits,
    count_records,
    decode_data,
    form_field,
    parse_json_body,
    parse_ndjson,
)

Carrier = Literal["form", "query", "json", "ndjson", "none"]


@dataclass(frozen=True, slots=True)
class DecodedPayload:
    records: list[Any]       # the payload as a list; an object payload is a list of one
    batch: bool              # the payload was a JSON array (a rewrite keeps the shape)
    carrier: Carrier         # where the payload was: form/beacon body, query, JSON/NDJSON body
    body: bytes              # the body with its Content-Encoding undone (a raw JSON data= field
                             # left empty: re-encoding fills it)
    size: int = 0            # bytes of the body with its Content-Encoding undone


def decode_payload(body: bytes, query: bytes, content_type: str, content_encoding: str,
                   limits: DecodeLimits) -> DecodedPayload:
    """The records of a data request; raises a CodecError naming the first limit or flaw hit.

    A JSON content type (or a body that is bare JSON) marks a JSON or NDJSON body; anything else
    is a form or beacon body, whose `data=` field wins over one in the query.
    """
    if len(body) > limits.compressed:
        raise PayloadTooLarge(f"the body exceeds the {limits.compressed}-byte limit")
    inflated = inflate(body, content_encoding, limits.inflated) if body else body
    payload: Any = None
    carrier: Carrier = "none"
    size = 0
    if inflated and "json" in content_type.lower():
        payload, carrier = _json_body(inflated, limits.depth)
    elif inflated:
        raw = _raw_json_data(inflated, limits.depth)
        value = form_field(inflated, b"data") if raw is None else None
        if raw is not None:
            payload, carrier = raw[0], "form"
            size, inflated = len(inflated), raw[1]
        elif value is not None:
            payload, carrier = decode_data(value, limits.depth), "form"
        elif inflated.lstrip()[:1] in (b"[", b"{"):     # JSON sent without a JSON content type
            payload, carrier = _json_body(inflated, limits.depth)
    if carrier == "none" and query:
        value = form_field(query, b"data")
        if value is not None:
            payload, carrier = decode_data(value, limits.depth), "query"
    size = max(size, len(inflated))
    if carrier == "none":
        return DecodedPayload([], True, "none", inflated, size)
    count_records(payload, limits.records)
    batch = isinstance(payload, list)
    return DecodedPayload(payload if batch else [payload], batch, carrier, inflated, size)


def _raw_json_data(body: bytes, max_depth: int) -> tuple[Any, bytes] | None:
    """A last `data=` field holding raw, unescaped JSON, and the body with that field emptied.

    mixpanel-iphone 4.0–4.1 and mixpanel-swift 3.1.0 send `ip=1&data=<raw JSON>`: its `&`, `+`
    and `%` are the JSON's own, so percent-decoding would cut or corrupt it. Escaped JSON starts
    `%5B` / `%7B` and base64 never starts with a bracket, so the bracket tells them apart.
    """
    if body.startswith(b"data="):
        start = 5
    else:
        found = body.find(b"&data=")
        if found < 0:
            return None
        start = found + 6
    if body[start:start + 1] not in (b"[", b"{"):
        return None
    try:
        payload = parse_json_body(body[start:], max_depth)
    except UndecodablePayload:
        return None       # not JSON to the end of the body: read it as an ordinary form field
    if not isinstance(payload, list | dict):
        return None
    return payload, body[:start]


def _json_body(body: bytes, max_depth: int) -> tuple[Any, Carrier]:
    text = body.strip()
    if text[:1] == b"{" and b"\n" in text:
        try:    # NDJSON is several objects, one a line; one pretty-printed object is JSON
            return parse_ndjson(text, max_depth), "ndjson"
        except UndecodablePayload:
            pass
    payload = parse_json_body(body, max_depth)
    if not isinstance(payload, list | dict):
        raise UndecodablePayload("the body must be a JSON object or array")
    return payload, "json"
