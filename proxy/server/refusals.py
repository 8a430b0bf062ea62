"""Counting the refusals aiohttp's HTTP parser makes before any application code runs.

A request that is not well-formed HTTP/1.1 (a header line past 8190 bytes, more than 128 headers,
duplicate Content-Length, Content-Length with chunked, TLS bytes on the plain port) is answered by
aiohttp itself: 400, text/plain, connection closed. Neither middlewares nor on_response_prepare
see it, so its body cannot be made JSON; aiohttp's access-log hook does see it, and the relay
installs one there that only counts these refusals (reason `bad_request`). The relay's own access
log is the middleware in accesslog.py.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from ..ops.metrics import Metrics


def parser_refusal_counter(metrics: Metrics) -> dict[str, Any]:
    """`web.Application` handler_args (they take precedence over a runner's `access_log=None`)."""

    class ParserRefusals(AbstractAccessLogger):
        def log(self, request: web.BaseRequest, response: web.StreamResponse,
                time: float) -> None:
            # The relay answers every refusal of its own in JSON: a 400 in text/plain can only
            # be the parser's.
            if response.status == 400 and response.content_type == "text/plain":
                metrics.reject("bad_request")

    return {"access_log_class": ParserRefusals,
            "access_log": logging.getLogger("mixpanel_proxy.parser")}
