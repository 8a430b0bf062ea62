"""Undo a request `Content-Encoding` (gzip, deflate as zlib or raw, br) under a hard output limit.

Every decoder is driven in bounded steps and the output is measured after each one, so a
decompression bomb is refused once it passes the limit, having produced at most one step more
(`_STEP` bytes): memory stays flat however large the bomb claims to be.
See https://developer.mozilla.org/docs/Web/HTTP/Headers/Content-Encoding
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import brotli

from .errors import PayloadTooLarge, UndecodablePayload

_STEP = 64 * 1024          # most output one decoder call may add past the limit
_GZIP_MAGIC = b"\x1f\x8b"
_IDENTITY = ("", "identity")


def inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """`body` with its Content-Encoding undone, refusing as soon as the output passes `limit`.

    A list such as "gzip, br" names the codings in the order they were applied; they are
    undone from last to first, each under the same limit.
    """
    if not body:
        return body
    codings = [name.strip().lower() for name in encoding.split(",")]
    for coding in reversed(codings):
        if coding not in _IDENTITY:
            body = _decoder(coding)(body, limit)
    return body


def _decoder(coding: str) -> Callable[[bytes, int], bytes]:
    if coding in ("gzip", "x-gzip"):
        return _gunzip
    if coding == "deflate":
        return _undeflate
    if coding == "br":
        return _unbrotli
    raise UndecodablePayload(f"Content-Encoding {coding!r} is not supported (gzip, deflate, br)")


def _gunzip(body: bytes, limit: int) -> bytes:
    out = bytearray()
    view = memoryview(body)
    offset = 0
    while True:      # gzip allows concatenated members (RFC 1952 2.2); each one is inflated
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        offset = _drain(inflater, view, offset, out, limit, "gzip")
        if view[offset:offset + 2] != _GZIP_MAGIC:
            break
    if view[offset:].tobytes().strip(b"\x00"):   # gzip(1) too tolerates zero padding
        raise UndecodablePayload("the gzip body has trailing garbage after its end")
    return bytes(out)


def _undeflate(body: bytes, limit: int) -> bytes:
    # RFC 9110 says zlib-wrapped; some clients send raw deflate. A zlib header is two bytes whose
    # big-endian value is a multiple of 31 with compression method 8; raw deflate rarely is, and
    # when a raw stream happens to look like one, the raw reading is tried next.
    if len(body) >= 2 and body[0] & 0x0F == 8 and (body[0] << 8 | body[1]) % 31 == 0:
        try:
            return _deflate_stream(body, zlib.MAX_WBITS, limit)
        except UndecodablePayload:
            pass
    return _deflate_stream(body, -zlib.MAX_WBITS, limit)


def _deflate_stream(body: bytes, wbits: int, limit: int) -> bytes:
    out = bytearray()
    inflater = zlib.decompressobj(wbits=wbits)
    if _drain(inflater, memoryview(body), 0, out, limit, "deflate") < len(body):
        raise UndecodablePayload("the deflate body has trailing garbage after its end")
    return bytes(out)


def _drain(inflater: zlib._Decompress, view: memoryview, start: int, out: bytearray,
           limit: int, name: str) -> int:
    """Inflate one stream from `view[start:]` into `out`; the offset where the stream ended.

    Output comes in bounded steps, the size checked after each. Input goes in `_STEP`-byte
    pieces too: zlib copies what it did not use into `unconsumed_tail`, and a whole 10 MB body
    copied at every step would cost memory and time in proportion to the bomb, not the limit.
    """
    position = start
    pending: bytes | memoryview = b""
    try:
        while not inflater.eof:
            if not pending and position < len(view):
                pending = view[position:position + _STEP]
                position += len(pending)
            chunk = inflater.decompress(pending, _STEP)
            out += chunk
            _check_size(len(out), limit)
            pending = inflater.unconsumed_tail
            if not chunk and not pending and position >= len(view):
                break       # input used up and nothing pending: the stream stops short
    except zlib.error as exc:
        raise UndecodablePayload(f"the {name} body is corrupt ({exc})") from exc
    if not inflater.eof:
        raise UndecodablePayload(f"the {name} body is truncated")
    return position - len(inflater.unused_data)


def _unbrotli(body: bytes, limit: int) -> bytes:
    inflater = brotli.Decompressor()
    out = bytearray()
    view = memoryview(body)
    position = 0
    try:
        while not inflater.is_finished():
            # brotli may expand a few bytes into gigabytes: the output limit bounds each call,
            # and new input is given only once the decoder has emptied what it holds.
            piece = view[:0]
            if inflater.can_accept_more_data() and position < len(body):
                piece = view[position:position + _STEP]
                position += len(piece)
            chunk = inflater.process(piece, output_buffer_limit=_STEP)
            out += chunk
            _check_size(len(out), limit)
            if not chunk and not piece:
                break       # input used up and nothing pending: the stream stops short
    except brotli.error as exc:
        raise UndecodablePayload(f"the brotli body is corrupt ({exc})") from exc
    if not inflater.is_finished():
        raise UndecodablePayload("the brotli body is truncated")
    if position < len(body):
        raise UndecodablePayload("the brotli body has trailing garbage after its end")
    return bytes(out)


def _check_size(size: int, limit: int) -> None:
    if size > limit:
        raise PayloadTooLarge(f"the decompressed body exceeds the {limit}-byte limit")
