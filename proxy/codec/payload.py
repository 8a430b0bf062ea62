"""Decode the payload forms the Mixpanel SDKs send, under hard limits.

- `data=` in a form-urlencoded body, a `text/plain` sendBeacon body, or a GET query;
- its value as base64 (standard or URL-safe, padding optional) or plain JSON, object or array;
- request `Content-Encoding` gzip / deflate (zlib or raw) / br, inflated incrementally so a
  decompression bomb stops at the limit instead of after it.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from typing import Any
from urllib.parse import unquote_to_bytes

import brotli

from .errors import PayloadTooLarge, TooManyRecords, UndecodablePayload

MAX_RECORDS = 2000          # Mixpanel's per-request maximum for /track, /import, /engage, /groups
_CHUNK = 64 * 1024
_URLSAFE = bytes.maketrans(b"-_ ", b"+/+")   # a '+' sent unescaped in a form arrives as ' '


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


def decode_data(value: bytes) -> Any:
    """Decode a `data=` value: plain JSON (starts with [ or {) or base64 of UTF-8 JSON."""
    text = value.strip()
    if not text:
        raise UndecodablePayload("data= is empty")
    if text[:1] not in (b"[", b"{"):
        text = _unbase64(text)
    return _loads(text, "data=")


def parse_json_body(body: bytes) -> Any:
    """An /import body: a JSON array or object, or newline-delimited JSON objects."""
    text = body.strip()
    if not text:
        raise UndecodablePayload("the request body is empty")
    try:
        return _loads(text, "the body")
    except UndecodablePayload:
        if text[:1] != b"{" or b"\n" not in text:
            raise
    return [_loads(line, "an NDJSON line") for line in text.splitlines() if line.strip()]


def count_records(payload: Any) -> int:
    count = len(payload) if isinstance(payload, list) else 1
    if count > MAX_RECORDS:
        raise TooManyRecords(f"{count} records in one request; Mixpanel takes at most "
                             f"{MAX_RECORDS}")
    return count


def inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """Undo a request Content-Encoding, refusing as soon as the output passes `limit` bytes."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip"):
        return _inflate_zlib(body, zlib.decompressobj(wbits=16 + zlib.MAX_WBITS), limit)
    if encoding == "deflate":
        # RFC 9110 says zlib-wrapped; some clients send raw deflate: the first byte tells.
        wbits = zlib.MAX_WBITS if body[:1] and (body[0] & 0x0F) == 8 else -zlib.MAX_WBITS
        return _inflate_zlib(body, zlib.decompressobj(wbits=wbits), limit)
    if encoding == "br":
        return _inflate_brotli(body, limit)
    raise UndecodablePayload(f"Content-Encoding {encoding!r} is not supported "
                             "(gzip, deflate, br)")


def _inflate_zlib(body: bytes, inflater: Any, limit: int) -> bytes:
    out = bytearray()
    data = body
    try:
        while data:
            out += inflater.decompress(data, _CHUNK)
            _check_size(len(out), limit)
            data = inflater.unconsumed_tail
        out += inflater.flush(_CHUNK)
    except zlib.error as exc:
        raise UndecodablePayload(f"the compressed body is corrupt ({exc})") from exc
    _check_size(len(out), limit)
    if not inflater.eof:
        raise UndecodablePayload("the compressed body is truncated")
    return bytes(out)


def _inflate_brotli(body: bytes, limit: int) -> bytes:
    inflater = brotli.Decompressor()
    out = bytearray()
    try:
        for start in range(0, len(body), _CHUNK // 16):
            # brotli can expand a 4 KiB piece enormously; feed small pieces and check after each.
            out += inflater.process(body[start:start + _CHUNK // 16])
            _check_size(len(out), limit)
    except brotli.error as exc:
        raise UndecodablePayload(f"the brotli body is corrupt ({exc})") from exc
    if not inflater.is_finished():
        raise UndecodablePayload("the brotli body is truncated")
    return bytes(out)


def _check_size(size: int, limit: int) -> None:
    if size > limit:
        raise PayloadTooLarge(f"the decompressed body exceeds the {limit}-byte limit")


def _unbase64(text: bytes) -> bytes:
    text = text.translate(_URLSAFE)
    text += b"=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise UndecodablePayload("data= is neither JSON nor valid base64") from exc


def _loads(text: bytes, what: str) -> Any:
    try:
        return json.loads(text)
    except UnicodeDecodeError as exc:
        raise UndecodablePayload(f"{what} is not valid UTF-8") from exc
    except (ValueError, RecursionError) as exc:
        raise UndecodablePayload(f"{what} is not valid JSON ({exc})") from exc
