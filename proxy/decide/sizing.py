"""Cut a batch of valid records into parts whose bodies stay under the endpoint's limit.

A batch over `[limits.body]` (inflated) is not refused when its records are valid: Android,
Swift, Unity and React Native resend a refused batch forever and everything queued behind it
waits; mixpanel-iphone deletes it. Each part is sent upstream on its own, and the client hears
success only when every part was accepted. What cannot be cut is one record over Mixpanel's
1 MB per-record limit (or one whose encoded form alone passes the body limit): that stays 413.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..codec import (
    CodecError,
    DecodedPayload,
    PayloadTooLarge,
    data_value,
    encode_json,
    inflate,
    set_field,
)
from ..endpoints import DATA_ENDPOINTS

MAX_RECORD_BYTES = 1024 * 1024     # Mixpanel: each record under 1 MB of uncompressed JSON
_SEPARATOR = 3                     # a comma between records (percent-encoded: %2C)
_IDENTITY = ("", "identity")
_DEFLATE_CODINGS = ("gzip", "x-gzip", "deflate")
_GZIP_CODINGS = ("gzip", "x-gzip")
_GZIP_MAGIC = b"\x1f\x8b"


class SizedRequest(Protocol):
    """What the size check reads of a request (routing.RoutedRequest has it)."""

    @property
    def endpoint(self) -> str: ...
    @property
    def body(self) -> bytes: ...
    @property
    def content_encoding(self) -> str: ...
    @property
    def part_limit(self) -> int: ...


def size_chunks(records: list[Any], decoded: DecodedPayload, limit: int) -> list[list[Any]]:
    """`records` in order, in runs whose re-encoded body fits in `limit` bytes."""
    budget = limit - _overhead(decoded)
    chunks: list[list[Any]] = []
    current: list[Any] = []
    used = 0
    for record in records:
        size = _encoded_size(record, decoded)
        if size > budget or len(encode_json([record], False)) > MAX_RECORD_BYTES:
            raise PayloadTooLarge(
                f"one record is {size} bytes encoded: over Mixpanel's 1 MB per-record limit "
                "(or this endpoint's body limit), so the batch cannot be split")
        if current and used + size + _SEPARATOR > budget:
            chunks.append(current)
            current, used = [], 0
        current.append(record)
        used += size + _SEPARATOR
    if current or not chunks:
        chunks.append(current)
    return chunks


def _encoded_size(record: Any, decoded: DecodedPayload) -> int:
    if decoded.carrier in ("form", "query"):
        return len(data_value([record], False))
    return len(encode_json([record], False)) + 1        # NDJSON: a newline each


def _overhead(decoded: DecodedPayload) -> int:
    """The bytes of a part besides its records: the other form fields, brackets, `data=`."""
    if decoded.carrier == "form":
        return len(set_field(decoded.body, b"data", b"")) + 16
    return 16


def oversize(request: SizedRequest) -> bool:
    """Whether a data request's body, inflated, passes its part limit (so it must be cut).

    A body is inflated here only when nothing cheaper tells: a plain body is measured by its
    length, gzip/deflate inflate at most 1032 times their size, and a gzip stream declares its
    inflated size in its trailer.
    """
    limit = request.part_limit
    if not limit or request.endpoint not in DATA_ENDPOINTS or not request.body:
        return False
    if len(request.body) > limit:
        return True
    coding = request.content_encoding.strip().lower()
    if coding in _IDENTITY or (coding in _DEFLATE_CODINGS and len(request.body) * 1032 <= limit):
        return False
    if coding in _GZIP_CODINGS and (declared := gzip_size(request.body)) is not None \
            and declared <= limit:
        return False        # the stream says it is small: no inflate on the request path
    try:
        inflate(request.body, request.content_encoding, limit)
    except PayloadTooLarge:
        return True
    except CodecError:
        return False       # routing or the upstream names that flaw, not the size check
    return False


def gzip_size(body: bytes) -> int | None:
    """The inflated size a gzip stream declares in its trailer (RFC 1952 ISIZE, modulo 2^32), or
    None when `body` is no gzip stream. Trusting it costs nothing safe: a stream that understates
    its size (crafted, or several members) goes upstream whole, as it came, and the relay itself
    never inflates it past a limit."""
    if len(body) < 18 or not body.startswith(_GZIP_MAGIC):
        return None
    return int.from_bytes(body[-4:], "little")
