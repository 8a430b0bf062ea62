"""Real decompression bombs of any claimed size, built without ever holding the inflated data.

A compressor that is flushed after each MiB of zeros emits the same bytes for every later MiB
(zlib's full flush resets its history; brotli's output settles after the first block), so a
10 GB bomb is the first block, one repeated block and the end of the stream. The gzip trailer's
CRC-32 of n zero bytes comes from composing the CRC's affine map over GF(2), not from n bytes.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import brotli

MIB = 1024 * 1024
_ZEROS = bytes(MIB)
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"   # deflate, mtime 0, best, unknown OS


def gzip_zeros(mib: int) -> bytes:
    """A valid gzip stream of `mib` MiB of zeros (about 1 KiB of output per MiB)."""
    size = mib * MIB
    trailer = crc32_of_zeros(size).to_bytes(4, "little") + (size % 2**32).to_bytes(4, "little")
    return b"".join([_GZIP_HEADER, *_deflate_blocks(mib), trailer])


def zlib_zeros(mib: int) -> bytes:
    """A valid zlib (RFC 1950) stream of `mib` MiB of zeros: Content-Encoding deflate."""
    adler = ((mib * MIB) % 65521) << 16 | 1     # Adler-32 of zeros: a stays 1, b counts bytes
    return b"".join([b"\x78\xda", *_deflate_blocks(mib), adler.to_bytes(4, "big")])


def raw_deflate_zeros(mib: int) -> bytes:
    return b"".join(_deflate_blocks(mib))


def brotli_zeros(mib: int) -> bytes:
    """A valid brotli stream of `mib` MiB of zeros (about 13 bytes per MiB)."""
    compressor = brotli.Compressor(quality=5)
    first = compressor.process(_ZEROS) + compressor.flush()
    blocks = [compressor.process(_ZEROS) + compressor.flush() for _ in range(min(mib - 1, 2))]
    assert len(set(blocks)) <= 1, "brotli output did not settle: the repeat would be invalid"
    repeated = blocks[0] * (mib - 1) if blocks else b""
    bomb: bytes = first + repeated + compressor.finish()
    return bomb


def _deflate_blocks(mib: int) -> Iterator[bytes]:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    first = compressor.compress(_ZEROS) + compressor.flush(zlib.Z_FULL_FLUSH)
    later = [compressor.compress(_ZEROS) + compressor.flush(zlib.Z_FULL_FLUSH) for _ in range(2)]
    assert later[0] == later[1], "deflate blocks differ after a full flush"
    yield first
    for _ in range(mib - 1):
        yield later[0]
    yield compressor.flush()


# CRC-32 of zeros as an affine map c -> L(c) ^ b over GF(2)^32: columns L(1 << i), and b.
_Affine = tuple[list[int], int]


def crc32_of_zeros(size: int) -> int:
    assert size % MIB == 0
    step = _crc_map(MIB)
    result: _Affine = ([1 << i for i in range(32)], 0)     # identity
    count = size // MIB
    while count:
        if count & 1:
            result = _compose(step, result)
        step = _compose(step, step)
        count >>= 1
    return _apply(result, 0)


def _crc_map(length: int) -> _Affine:
    zeros = bytes(length)
    constant = zlib.crc32(zeros, 0)
    return [zlib.crc32(zeros, 1 << i) ^ constant for i in range(32)], constant


def _apply(affine: _Affine, value: int) -> int:
    columns, constant = affine
    for i in range(32):
        if value >> i & 1:
            constant ^= columns[i]
    return constant


def _compose(outer: _Affine, inner: _Affine) -> _Affine:
    """outer after inner."""
    linear_of = _apply(outer, 0)
    columns = [_apply(outer, column) ^ linear_of for column in inner[0]]
    return columns, _apply(outer, inner[1])
