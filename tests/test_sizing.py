"""decide/sizing.py: when a data body must be cut into parts, told as cheaply as possible (by its
length, by deflate's bound, by a gzip stream's own trailer) and by inflating only otherwise."""

from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import dataclass

from proxy.decide.sizing import gzip_size, oversize

LIMIT = 64 * 1024


@dataclass
class Request:
    body: bytes
    content_encoding: str = "gzip"
    endpoint: str = "track"
    part_limit: int = LIMIT


def records(size: int) -> bytes:
    """A JSON batch of about `size` bytes that compresses well (so it passes deflate's bound)."""
    return json.dumps([{"event": "e", "properties": {"pad": "x" * 1000}}] * (size // 1030)).encode()


def test_a_gzip_stream_declares_its_inflated_size() -> None:
    data = records(200_000)
    assert gzip_size(gzip.compress(data)) == len(data)
    assert gzip_size(zlib.compress(data)) is None          # deflate has no such trailer
    assert gzip_size(b"\x1f\x8b") is None                # too short to be a stream


def test_gzip_over_the_limit_is_cut_and_under_it_is_not() -> None:
    assert oversize(Request(gzip.compress(records(3 * LIMIT))))
    assert not oversize(Request(gzip.compress(records(LIMIT // 2))))


def test_a_gzip_body_within_its_declared_size_is_not_inflated() -> None:
    """The trailer is trusted: a stream that understates its size goes upstream whole (the relay
    never inflates it), which only the sender's own crafted bytes can cause."""
    big = gzip.compress(records(3 * LIMIT))
    understated = big[:-4] + (100).to_bytes(4, "little")
    assert not oversize(Request(understated))
    assert oversize(Request(big))


def test_deflate_past_its_bound_is_still_measured_by_inflating() -> None:
    assert oversize(Request(zlib.compress(records(3 * LIMIT)), content_encoding="deflate"))
