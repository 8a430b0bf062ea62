"""The codec's typed errors. Each one carries the HTTP status the relay answers with.

    CodecError
     ├── PayloadTooLarge   413  body or inflated body over its limit (the SDK halves its batch)
     ├── TooManyRecords    413  more records than Mixpanel takes in one request
     └── UndecodablePayload 400 data that can never succeed (bad base64, JSON, UTF-8, encoding)
"""

from __future__ import annotations


class CodecError(Exception):
    status = 400
    reason = "bad_payload"   # a metrics label: closed set

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PayloadTooLarge(CodecError):
    status = 413
    reason = "limit"


class TooManyRecords(CodecError):
    status = 413
    reason = "limit"


class UndecodablePayload(CodecError):
    status = 400
    reason = "bad_payload"
