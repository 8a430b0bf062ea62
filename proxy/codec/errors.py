"""The codec's typed errors. Each one carries the HTTP status the relay answers with.

    CodecError
     ├── PayloadTooLarge   413  body or inflated body over its limit (the SDK halves its batch)
     ├── TooManyRecords    413  more records than Mixpanel takes in one request
     └── UndecodablePayload 400 data that can never succeed (bad base64, JSON, UTF-8, encoding)
"""

from __future__ import annotations

from typing import ClassVar


class CodecError(Exception):
    status: ClassVar[int] = 400
    reason: ClassVar[str] = "bad_payload"   # a metrics label: closed set

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PayloadTooLarge(CodecError):
    status: ClassVar[int] = 413
    reason: ClassVar[str] = "limit"


class TooManyRecords(CodecError):
    status: ClassVar[int] = 413
    reason: ClassVar[str] = "limit"


class UndecodablePayload(CodecError):
    status: ClassVar[int] = 400
    reason: ClassVar[str] = "bad_payload"
