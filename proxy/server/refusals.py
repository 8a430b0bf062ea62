"""aiohttp's own parser refusals, answered in JSON like the relay's and counted.

The lean edge judges the head of the first request on every connection (edge/head.py) and
refuses the malformed ones itself; aiohttp parses only what the edge hands over, and whatever that
client pipelines after it. A request there that is not well-formed HTTP/1.1 (a line past 64 KiB,
more than 128 fields, duplicate Content-Length, bytes that are not a request line) is answered by
aiohttp's `RequestHandler.handle_error` before any application code runs: no middleware and no
on_response_prepare hook sees it, and by default it is 400 text/plain quoting the offending bytes.

`json_refusing` is the one adapter: the connections the edge hands over get a `RequestHandler`
whose `handle_error` (a public method, made to be overridden) answers JSON naming the problem,
never the client's bytes, and counts it (reason `bad_request`). The access-log hook below stays
for a relay served by aiohttp's own sites (tests): it counts what can only be the parser's
plain-text refusals there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import LineTooLong

from ..ops.metrics import Metrics
from ..relay import answers
from . import aiohttp_seam
from .limits import MAX_HEAD

log = logging.getLogger("mixpanel_proxy.parser")


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


def json_refusing(server: Callable[[], web.RequestHandler],
                  metrics: Metrics) -> Callable[[], asyncio.Protocol]:
    """A protocol factory: aiohttp's request handlers, built by `server` with every setting the
    runner gave them, whose refusals are JSON."""

    class JsonRefusals(web.RequestHandler):
        __slots__ = ()     # the same layout as RequestHandler: an instance can become one

        def handle_error(self, request: web.BaseRequest, status: int = 500,
                         exc: BaseException | None = None,
                         message: str | None = None) -> web.StreamResponse:
            log.debug("refused a request from %s", request.remote, exc_info=exc)
            if request.writer.output_size > 0:     # an answer has started: nothing to add
                raise ConnectionError("the answer had started when the request failed")
            if status >= 500:
                answer = answers.problem(status, "internal error")
            else:
                status, problem = _parser_problem(exc)
                metrics.reject("bad_request")
                answer = answers.problem(status, problem)
            response = answer.as_response()
            response.force_close()
            return response

    def make() -> asyncio.Protocol:
        # aiohttp's Server builds its handlers itself, from settings it keeps private; taking
        # one it built and giving it the subclass keeps every one of those settings.
        return aiohttp_seam.adopt(server(), JsonRefusals)

    return make


def _parser_problem(exc: BaseException | None) -> tuple[int, str]:
    if isinstance(exc, LineTooLong):
        return (HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                f"a request line or header field exceeds {MAX_HEAD} bytes")
    return HTTPStatus.BAD_REQUEST, "malformed HTTP request"
