"""The answers the relay makes itself: SDK-shaped successes and JSON errors naming the problem.

Every error is JSON, because mixpanel-browser's recorder drops a `/record` batch whose answer it
cannot parse, and every error carries the status the SDKs act on correctly: 413 halves a batch,
429/503 retry it, other 4xx drop it.
"""

from __future__ import annotations

import json

from aiohttp import web

SUCCESS_VERBOSE = b'{"status":1,"error":null}'
SUCCESS_PLAIN = b"1"
RECORD_SUCCESS = b'{"code":200,"status":"OK"}'


def error(status: int, message: str, headers: dict[str, str] | None = None,
          **extra: object) -> web.Response:
    body = json.dumps({"status": 0, "error": message, **extra}, separators=(",", ":"))
    return web.Response(status=status, body=body.encode(), headers=headers,
                        content_type="application/json")


def success_body(endpoint: str, verbose: bool) -> tuple[bytes, str]:
    """What the SDK expects when the relay itself vouches for acceptance (split batches, spool)."""
    if endpoint == "record":
        return RECORD_SUCCESS, "application/json"
    if endpoint == "import" or verbose:
        # The Python SDK requires {"status": 1} from every endpoint, /import included.
        return SUCCESS_VERBOSE, "application/json"
    return SUCCESS_PLAIN, "text/plain"
