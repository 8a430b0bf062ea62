"""The codec's hard limits: bombs stop at the limit with flat memory, and every limit is exact."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import tracemalloc
import zlib
from pathlib import Path

import brotli
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.codec import (
    MAX_RECORDS,
    DecodeLimits,
    PayloadTooLarge,
    TooManyRecords,
    UndecodablePayload,
    decode_payload,
    inflate,
)
from tests.support.bombs import MIB, brotli_zeros, gzip_zeros, raw_deflate_zeros, zlib_zeros

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 10 * MIB               # /import's body limit: a 10 GB gzip bomb (9.4 MiB) fits under it
TEN_GB_IN_MIB = 9537           # 10.0e9 bytes
FORM = "application/x-www-form-urlencoded"
# Stated bounds on peak RSS growth while a bomb is refused: the output buffer up to the limit,
# plus one decoder step and allocator slack; brotli also keeps its window (up to 16 MiB).
ZLIB_GROWTH_BOUND = LIMIT + 4 * MIB
BROTLI_GROWTH_BOUND = LIMIT + 20 * MIB
BUILDERS = {"gzip": gzip_zeros, "deflate": zlib_zeros, "br": brotli_zeros}


def probe(coding: str, mib: int, tmp_path: Path) -> dict[str, object]:
    """Decode a bomb in a fresh interpreter, so its peak RSS is the decoding's alone."""
    bomb = tmp_path / f"{mib}mib.{coding}"
    bomb.write_bytes(BUILDERS[coding](mib))
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.bomb_probe", coding, str(bomb), str(LIMIT)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    result: dict[str, object] = json.loads(done.stdout)
    return result


@pytest.mark.slow   # a probe process per coding, inflating to the limit
@pytest.mark.parametrize("coding", ["gzip", "deflate", "br"])
def test_ten_gb_bomb_is_refused_at_the_limit_with_flat_memory(coding: str,
                                                             tmp_path: Path) -> None:
    big, small = probe(coding, TEN_GB_IN_MIB, tmp_path), probe(coding, 1024, tmp_path)
    bound = BROTLI_GROWTH_BOUND if coding == "br" else ZLIB_GROWTH_BOUND
    for result in (big, small):
        assert result["outcome"] == "refused"
        assert result["message"] == f"the decompressed body exceeds the {LIMIT}-byte limit"
        assert isinstance(result["growth"], int) and result["growth"] < bound
    # Ten times the claimed size costs no more memory: the limit, not the bomb, sets it.
    assert isinstance(big["growth"], int) and isinstance(small["growth"], int)
    assert abs(big["growth"] - small["growth"]) < 4 * MIB


def test_the_bombs_are_real() -> None:
    # The same builders at a size that can be checked in full: valid streams of zeros.
    assert gzip.decompress(gzip_zeros(3)) == bytes(3 * MIB)
    assert zlib.decompress(zlib_zeros(3)) == bytes(3 * MIB)
    assert zlib.decompress(raw_deflate_zeros(3), -zlib.MAX_WBITS) == bytes(3 * MIB)
    assert brotli.decompress(brotli_zeros(3)) == bytes(3 * MIB)
    assert len(gzip_zeros(TEN_GB_IN_MIB)) < LIMIT            # passes the compressed-size check


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br"])
def test_inflated_limit_is_exact(coding: str) -> None:
    body = BUILDERS[coding](1)
    assert inflate(body, coding, MIB) == bytes(MIB)
    with pytest.raises(PayloadTooLarge) as refused:
        inflate(body, coding, MIB - 1)
    assert refused.value.status == 413 and refused.value.reason == "limit"


def test_raw_deflate_is_accepted_and_limited() -> None:
    body = raw_deflate_zeros(2)
    assert inflate(body, "deflate", 2 * MIB) == bytes(2 * MIB)
    with pytest.raises(PayloadTooLarge):
        inflate(body, "deflate", MIB)
    # A raw stream whose first bytes pass for a zlib header (78 01): a stored block of "A"
    # whose padding bits make 0x78, then an empty final block. Read as raw after zlib fails.
    assert inflate(bytes.fromhex("780100feff410300"), "deflate", 10) == b"A"


def test_compressed_limit_is_checked_before_any_work() -> None:
    body = b"data=" + b"W10" + b" " * 100
    limits = DecodeLimits(compressed=len(body))
    assert decode_payload(body, b"", FORM, "", limits).records == []
    with pytest.raises(PayloadTooLarge) as refused:
        decode_payload(body + b" ", b"", FORM, "", limits)
    assert "exceeds the 108-byte limit" in refused.value.message


def test_record_limit_is_mixpanels_2000() -> None:
    def body(count: int) -> bytes:
        return b"data=" + json.dumps([{"event": "e"}] * count).encode()

    assert len(decode_payload(body(MAX_RECORDS), b"", FORM, "", DecodeLimits()).records) == 2000
    with pytest.raises(TooManyRecords) as refused:
        decode_payload(body(MAX_RECORDS + 1), b"", FORM, "", DecodeLimits())
    assert refused.value.status == 413
    assert refused.value.message == "2001 records in one request; Mixpanel takes at most 2000"


@pytest.mark.parametrize("json_body", [False, True])
def test_depth_limit_is_exact(json_body: bool) -> None:
    def nested(depth: int) -> bytes:       # depth counts containers, the outer array included
        return b"[" * depth + b"]" * depth if json_body else \
            b"data=" + b"[" * depth + b"]" * depth

    content_type = "application/json" if json_body else FORM
    limits = DecodeLimits(depth=8)
    assert decode_payload(nested(8), b"", content_type, "", limits).batch
    with pytest.raises(UndecodablePayload) as refused:
        decode_payload(nested(9), b"", content_type, "", limits)
    assert refused.value.status == 400 and "nests deeper than 8 levels" in refused.value.message
    with pytest.raises(UndecodablePayload):      # far past the interpreter's own recursion limit
        decode_payload(nested(100_000), b"", content_type, "", limits)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(coding=st.sampled_from(["gzip", "deflate", "br"]),
       claimed_mib=st.integers(min_value=1, max_value=2048),
       limit=st.integers(min_value=1, max_value=2 * MIB))
def test_no_bomb_makes_the_decoder_allocate_past_its_limit(coding: str, claimed_mib: int,
                                                          limit: int) -> None:
    body = BUILDERS[coding](claimed_mib)
    limits = DecodeLimits(compressed=len(body), inflated=limit)
    refused = claimed_mib * MIB > limit
    tracemalloc.start()
    try:
        try:
            decode_payload(body, b"", FORM, coding, limits)
        except PayloadTooLarge:
            assert refused
        else:
            assert not refused
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Python-level allocations: the output buffer (up to one 64 KiB step past the limit, and
    # about 1.5x for the bytearray's growth), plus the finished copy when it is accepted.
    inflated = min(claimed_mib * MIB, limit)
    assert peak < inflated * (1.5 if refused else 2.5) + 512 * 1024
