"""Pure payload decoding and encoding (no aiohttp): what the SDKs put in `data=`, and bodies.

    inflate.py  Content-Encoding gzip / deflate / br, bounded while inflating
    payload.py  data= fields, base64 or JSON, JSON / NDJSON bodies, record and depth limits
    request.py  a whole data request -> DecodedPayload (records + where they came from)
    encode.py   rewritten records -> compact JSON data= (gzipped where the upstream takes it)
"""

from .encode import GZIP_ENDPOINTS, Encoded, data_value, encode_json, encode_payload, set_field
from .errors import CodecError, PayloadTooLarge, TooManyRecords, UndecodablePayload
from .inflate import inflate
from .payload import (
    DEFAULT_MAX_DEPTH,
    MAX_RECORDS,
    DecodeLimits,
    check_depth,
    count_records,
    decode_data,
    extract_data,
    form_field,
    parse_json_body,
)
from .request import Carrier, DecodedPayload, decode_payload

__all__ = [
    "Carrier", "CodecError", "PayloadTooLarge", "TooManyRecords", "UndecodablePayload",
    "MAX_RECORDS", "DEFAULT_MAX_DEPTH", "DecodeLimits", "DecodedPayload", "Encoded",
    "GZIP_ENDPOINTS", "check_depth", "count_records", "decode_data", "decode_payload",
    "data_value", "encode_json", "encode_payload", "extract_data", "form_field", "inflate",
    "parse_json_body", "set_field",
]
