"""Pure payload decoding (no aiohttp): what the SDKs put in `data=`, and request bodies."""

from .errors import CodecError, PayloadTooLarge, TooManyRecords, UndecodablePayload
from .payload import (
    MAX_RECORDS,
    decode_data,
    extract_data,
    form_field,
    inflate,
    parse_json_body,
)

__all__ = [
    "CodecError", "PayloadTooLarge", "TooManyRecords", "UndecodablePayload", "MAX_RECORDS",
    "decode_data", "extract_data", "form_field", "inflate", "parse_json_body",
]
