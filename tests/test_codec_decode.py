"""Every payload form the SDKs send decodes to the same records, and re-encodes losslessly.

The forms are built with independent encoders (stdlib base64/gzip/zlib, brotli, urllib), the
way mixpanel-browser (encodeURIComponent of base64 or JSON), sendBeacon, GET `data=`, the Python
SDK (urlencoded JSON) and /import clients (JSON, NDJSON, gzip) produce them.
"""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, unquote, urlencode

import brotli
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.codec import (
    Carrier,
    CodecError,
    DecodedPayload,
    DecodeLimits,
    UndecodablePayload,
    decode_data,
    decode_payload,
    encode_payload,
    inflate,
)

FORM = "application/x-www-form-urlencoded"
BEACON = "text/plain;charset=UTF-8"
JSON = "application/json"
LIMITS = DecodeLimits(compressed=1 << 24, inflated=1 << 24)

json_scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**63)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)
events = st.builds(lambda name, props: {"event": name, "properties": props},
                   st.text(max_size=20), st.dictionaries(st.text(max_size=10), json_values,
                                                         max_size=6))
records = st.lists(events | st.dictionaries(st.text(max_size=8), json_values, max_size=5),
                   min_size=1, max_size=6)
payloads = records | records.map(lambda items: items[0])       # array, or one object


def std_b64(text: bytes) -> str:
    return base64.b64encode(text).decode()


def urlsafe_unpadded_b64(text: bytes) -> str:
    return base64.urlsafe_b64encode(text).decode().rstrip("=")


VALUE_FORMS: dict[str, Callable[[bytes], str]] = {
    "json": bytes.decode,
    "base64": std_b64,
    "base64url-unpadded": urlsafe_unpadded_b64,
    "base64-wrapped": lambda text: base64.encodebytes(text).decode(),
}
# What turns the value into a field: the browser's encodeURIComponent, urlencode's quote_plus
# (Python SDK), and a careless client that leaves '+' unescaped (it arrives as a space).
FIELD_FORMS: dict[str, Callable[[str], str]] = {
    "uri-component": lambda value: quote(value, safe="!~*'()"),
    "quote-plus": lambda value: urlencode({"x": value})[2:],
    "raw-plus": lambda value: value.replace("%", "%25").replace("&", "%26"),
}
CODINGS: dict[str, Callable[[bytes], bytes]] = {
    "": lambda body: body,
    "gzip": lambda body: gzip.compress(body, mtime=0),
    "deflate": zlib.compress,
    "deflate-raw": lambda body: zlib.compress(body)[2:-4],
    "br": lambda body: brotli.compress(body, quality=4),
    "gzip, br": lambda body: brotli.compress(gzip.compress(body), quality=4),
}


def header(coding: str) -> str:
    return "deflate" if coding == "deflate-raw" else coding


def as_list(payload: Any) -> list[Any]:
    return payload if isinstance(payload, list) else [payload]


@pytest.mark.slow   # hundreds of hypothesis examples
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=payloads, value_form=st.sampled_from(sorted(VALUE_FORMS)),
       field_form=st.sampled_from(sorted(FIELD_FORMS)),
       carrier=st.sampled_from(["form", "beacon", "query"]),
       coding=st.sampled_from(sorted(CODINGS)))
def test_every_data_form_decodes_to_the_payload(payload: Any, value_form: str, field_form: str,
                                                carrier: str, coding: str) -> None:
    text = json.dumps(payload).encode()
    if field_form == "raw-plus" and value_form == "json":
        field_form = "quote-plus"     # a raw '+' in JSON is a space by form rules: never valid
    field = "data=" + FIELD_FORMS[field_form](VALUE_FORMS[value_form](text))
    if carrier == "query":
        body, query, content_type, coding = b"", f"ip=1&{field}&_=1".encode(), "", ""
    else:
        body = CODINGS[coding](f"{field}&verbose=1".encode())
        query, content_type = b"ip=1", FORM if carrier == "form" else BEACON
    decoded = decode_payload(body, query, content_type, header(coding), LIMITS)
    assert decoded.records == as_list(payload)
    assert decoded.batch == isinstance(payload, list)
    assert decoded.carrier == ("query" if carrier == "query" else "form")


@pytest.mark.slow   # hundreds of hypothesis examples
@settings(max_examples=80, deadline=None)
@given(payload=payloads, ndjson=st.booleans(), coding=st.sampled_from(sorted(CODINGS)))
def test_import_bodies_decode_to_the_payload(payload: Any, ndjson: bool, coding: str) -> None:
    items = as_list(payload)
    if ndjson and len(items) > 1:
        text = b"\n".join(json.dumps(item).encode() for item in items) + b"\n"
        content_type = "application/x-ndjson"
    else:
        text, content_type = json.dumps(payload, indent=1).encode(), JSON
    decoded = decode_payload(CODINGS[coding](text), b"strict=1", content_type, header(coding),
                             LIMITS)
    assert decoded.records == items


@pytest.mark.slow   # hundreds of hypothesis examples
@settings(max_examples=100, deadline=None)
@given(payload=payloads, carrier=st.sampled_from(["form", "query", "json", "ndjson"]),
       gzip_level=st.sampled_from([0, 1, 6]))
def test_decode_of_encode_is_identity(payload: Any, carrier: Carrier, gzip_level: int) -> None:
    items = as_list(payload)
    # NDJSON of one line is one JSON object: the shape is read back from the bytes.
    batch = len(items) > 1 if carrier == "ndjson" else isinstance(payload, list)
    original = DecodedPayload([], batch, carrier,
                              b"verbose=1&data=x" if carrier == "form" else b"")
    encoded = encode_payload(original, items, b"ip=1&data=old", gzip_level)
    body = encoded.body if encoded.body is not None else b""
    query = encoded.query if encoded.query is not None else b""
    content_type = JSON if carrier in ("json", "ndjson") else FORM
    decoded = decode_payload(body, query, content_type, encoded.content_encoding, LIMITS)
    assert decoded.records == items and decoded.batch == batch
    if carrier == "form":      # the other fields survive, the data= value is compact JSON
        plain = inflate(body, encoded.content_encoding, 1 << 24)
        assert plain.startswith(b"verbose=1&data=") and plain.count(b"data=") == 1
        compact = json.dumps(items if batch else items[0], separators=(",", ":"))
        assert unquote(plain.partition(b"data=")[2].decode(), errors="strict") == compact


junk_coding = st.sampled_from(["", "gzip", "deflate", "br", "identity", "compress", "gzip, br"])


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=300), query=st.binary(max_size=100),
       content_type=st.sampled_from([FORM, BEACON, JSON, "application/x-ndjson", ""]),
       coding=junk_coding)
def test_arbitrary_bytes_raise_only_codec_errors(body: bytes, query: bytes, content_type: str,
                                                 coding: str) -> None:
    try:
        decode_payload(body, query, content_type, coding, DecodeLimits(records=3, depth=4))
    except CodecError as exc:
        assert exc.status in (400, 413) and exc.message


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=200), wrap=st.sampled_from(["data", "b64", "gzip", "br", "json"]))
def test_almost_valid_bytes_raise_only_codec_errors(raw: bytes, wrap: str) -> None:
    # Arbitrary bytes one step inside a valid form reach the deeper decoders.
    body, coding = {
        "data": (b"data=" + raw, ""),
        "b64": (b"data=" + base64.b64encode(raw), ""),
        "gzip": (gzip.compress(b"data=" + raw), "gzip"),
        "br": (brotli.compress(b"data=" + base64.urlsafe_b64encode(raw)), "br"),
        "json": (b"[" + raw, ""),
    }[wrap]
    try:
        decode_payload(body, b"", JSON if wrap == "json" else FORM, coding, LIMITS)
    except CodecError as exc:
        assert exc.status in (400, 413) and exc.message


@pytest.mark.parametrize(("value", "message"), [
    (b"", "data= is empty"),
    (b"%%%", "data= is neither JSON nor valid base64"),
    (b"[{", "data= is not valid JSON"),
    (base64.b64encode(b"\xff\xfe[]"), "data= is not valid"),
    (base64.b64encode(b'"a string"'), "data= must be a JSON object or array"),
])
def test_undecodable_data_is_400_naming_the_problem(value: bytes, message: str) -> None:
    with pytest.raises(UndecodablePayload) as refused:
        decode_data(value)
    assert refused.value.status == 400 and refused.value.message.startswith(message)


@pytest.mark.parametrize(("body", "coding", "message"), [
    (gzip.compress(b"x")[:10] + b"\xff\xff\xff", "gzip", "the gzip body is corrupt"),
    (gzip.compress(b"data=[]")[:-6], "gzip", "the gzip body is truncated"),
    (gzip.compress(b"data=[]") + b"junk", "gzip", "the gzip body has trailing garbage"),
    (brotli.compress(b"data=[]")[:-1], "br", "the brotli body is truncated"),
    (b"data=[]", "compress", "Content-Encoding 'compress' is not supported"),
])
def test_bad_encodings_are_400_naming_the_problem(body: bytes, coding: str,
                                                  message: str) -> None:
    with pytest.raises(UndecodablePayload) as refused:
        decode_payload(body, b"", FORM, coding, LIMITS)
    assert refused.value.message.startswith(message)


def test_body_data_wins_over_query_and_missing_data_is_empty() -> None:
    decoded = decode_payload(b"data=%5B1%5D", b"data=%5B2%5D", FORM, "", LIMITS)
    assert decoded.records == [1] and decoded.carrier == "form"
    nothing = decode_payload(b"verbose=1", b"ip=1", FORM, "", LIMITS)
    assert (nothing.records, nothing.carrier) == ([], "none")
    bare_json = decode_payload(b'[{"event":"e"}]', b"", "", "", LIMITS)
    assert bare_json.carrier == "json" and bare_json.records == [{"event": "e"}]


def test_gzip_members_and_multiple_codings() -> None:
    body = gzip.compress(b"data=%5B1%2C") + gzip.compress(b"2%5D")
    assert decode_payload(body, b"", FORM, "gzip", LIMITS).records == [1, 2]
    layered = gzip.compress(zlib.compress(b"data=[3]"))
    assert decode_payload(layered, b"", FORM, "deflate, gzip", LIMITS).records == [3]
