"""Judging one request head on the lean edge: framed here, handed to aiohttp, or refused here.

The edge judges every head it can before anything reaches aiohttp, so the relay's own refusals
stay JSON naming the problem (never the client's bytes) and are counted: a head that is not
well-formed HTTP/1.1 is refused here, with `Connection: close`, and so is every shape a
smuggler uses (bare LF or CR line ends, Content-Length with Transfer-Encoding, a coding other
than `chunked`, Transfer-Encoding on HTTP/1.0, RFC 9112 §6.1). What is well-formed but not
*plain* (chunked bodies, Expect, Upgrade, other methods, non-API targets, bodies past the
endpoint's limit) is handed to aiohttp with its bytes intact.

Head sizes: the request line, any one field and the whole head may be up to `MAX_HEAD`
(64 KiB): browsers send a first-party relay the site's cookies (often past 8 KiB), and
mixpanel-node puts a whole event in `GET /track?data=`. Past that: 431 for header fields,
414 for a request line, except on an SDK endpoint, where the only long thing a request line
carries is its payload: there it is 413, the answer mixpanel-js halves its batch on (issue 15
item 7). In the same spirit the query of a request the edge frames counts against the
endpoint's body limit (413 past it): a `?data=` payload is the body of a GET.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

from ...decide.paths import PathMatch
from ..limits import MAX_FIELDS, MAX_HEAD

_PLAIN_METHODS = {b"GET": "GET", b"POST": "POST", b"OPTIONS": "OPTIONS"}
# RFC 9112 §3: method token, one space, a target without controls or spaces, one space, version.
# llhttp also takes doubled spaces and leading empty lines; a stricter parser in front of the
# relay could then see a different request, so the edge takes neither.
_REQUEST_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+ [^\x00-\x20\x7f]+ HTTP/[0-9]\.[0-9]\r\n")


@dataclass(frozen=True, slots=True)
class Refusal:
    """An answer the edge makes itself, then closes: status, JSON message, metric reason."""

    status: int
    message: str
    reason: str = "bad_request"
    origin: str | None = None     # an SDK answer a browser must be able to read: CORS


BARE_LINE_END = Refusal(400, "line ends in the request head must be CRLF")
MALFORMED = Refusal(400, "malformed request head")
FIELDS_TOO_LARGE = Refusal(431, f"request header fields exceed {MAX_HEAD} bytes")
TOO_MANY_FIELDS = Refusal(431, f"more than {MAX_FIELDS} request header fields")
LINE_TOO_LONG = Refusal(414, f"the request line exceeds {MAX_HEAD} bytes")
PAYLOAD_LINE_TOO_LONG = Refusal(413, f"the request line exceeds {MAX_HEAD} bytes: send fewer "
                                "events per request", "limit")
ONE_HOST = Refusal(400, "a request must carry exactly one Host field")
BAD_VERSION = Refusal(505, "only HTTP/1.0 and HTTP/1.1 are served")
LENGTH_WITH_CODING = Refusal(400, "Content-Length with Transfer-Encoding")
CODING_ON_HTTP10 = Refusal(400, "Transfer-Encoding on an HTTP/1.0 request")
BAD_CODING = Refusal(400, "the only Transfer-Encoding served is chunked")


@dataclass(slots=True, init=False)   # the __init__ is ours: see RoutedRequest (routing.py)
class Head:
    method: str
    target: str
    match: PathMatch
    headers: CIMultiDictProxy[str]
    length: int | None
    body_start: int
    keep_alive: bool
    http10: bool

    def __init__(self, method: str, target: str, match: PathMatch,
                 headers: CIMultiDictProxy[str], length: int | None, body_start: int,
                 keep_alive: bool, http10: bool) -> None:
        self.method, self.target, self.match, self.headers = method, target, match, headers
        self.length, self.body_start = length, body_start
        self.keep_alive, self.http10 = keep_alive, http10

    @property
    def end(self) -> int:
        return self.body_start + (self.length or 0)


def scan(buffer: bytearray, start: int) -> int | Refusal | None:
    """Where the head at the buffer's start ends (just past CRLF CRLF), None while it may still
    come, or a refusal. `start`: bytes already scanned (each byte is looked at about once, so a
    head trickled in byte by byte costs linear time)."""
    limit = min(len(buffer), MAX_HEAD)
    end = buffer.find(b"\r\n\r\n", max(0, start - 3), limit)
    scanned = max(0, start - 1)
    if end >= 0:
        # A whole head: llhttp refuses a bare CR itself, but takes a bare LF as a line end.
        stop = end + 4
        if buffer.count(b"\n", scanned, stop) != buffer.count(b"\r\n", max(0, scanned - 1),
                                                               stop):
            return BARE_LINE_END
        return stop
    if _bare_line_end(buffer, scanned, limit):
        return BARE_LINE_END
    if len(buffer) >= MAX_HEAD:
        return FIELDS_TOO_LARGE if b"\r\n" in buffer[:MAX_HEAD] else LINE_TOO_LONG
    return None


def _bare_line_end(buffer: bytearray, start: int, stop: int) -> bool:
    """An LF without CR before it, or a CR followed by anything but LF, in buffer[start:stop]
    (a CR as the last byte is judged by the next scan): a head with them may never end in
    CRLF CRLF, and must not wait for it. Counting runs at C speed; a regular expression for the
    same cost more than the rest of the framing."""
    if buffer.count(b"\n", start, stop) != buffer.count(b"\r\n", max(0, start - 1), stop):
        return True
    return buffer.count(b"\r", start, stop - 1) != buffer.count(b"\r\n", start, stop)


class HeadReader:
    """llhttp's callbacks for one connection's heads (one object, reused for every request)."""

    __slots__ = ("_url", "_fields", "_complete", "_parser", "_keep_alive")

    def __init__(self) -> None:
        self._url = b""
        self._fields: list[tuple[bytes, bytes]] = []
        self._complete = False
        self._parser: httptools.HttpRequestParser | None = None
        self._keep_alive = False

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields.append((name, value))

    def on_headers_complete(self) -> None:
        self._complete = True
        # Asked now: once a message without a body is complete, llhttp has reset for the next
        # one, and should_keep_alive() answers True even after `Connection: close`.
        assert self._parser is not None
        self._keep_alive = self._parser.should_keep_alive()

    def read(self, raw: bytes, match: Callable[[str], PathMatch | None],
             limits: Mapping[str, int]) -> Head | Refusal | str:
        """The head, a refusal, or why it goes to aiohttp (an `edge_handovers` reason)."""
        line = _REQUEST_LINE.match(raw)
        if line is None:
            return MALFORMED
        self._url, self._fields, self._complete = b"", [], False
        parser = self._parser = httptools.HttpRequestParser(self)
        try:
            parser.feed_data(raw)
        except httptools.HttpParserUpgrade:
            return "framing"               # CONNECT, or an Upgrade header: aiohttp's to judge
        except httptools.HttpParserError:
            return MALFORMED
        finally:
            self._parser = None            # the parser refers to this reader: no cycle kept
        if not self._complete:
            return MALFORMED
        # The version llhttp read, from the request line it accepted ("HTTP/1.1\r\n" ends it):
        # asking llhttp builds the same string through a format call.
        version = raw[line.end() - 5:line.end() - 2]
        if version != b"1.1" and version != b"1.0":
            return BAD_VERSION
        if len(self._fields) > MAX_FIELDS:
            return TOO_MANY_FIELDS
        # llhttp leaves a field value's trailing whitespace in; RFC 9110 §5.5 says it is not
        # part of the value.
        headers = CIMultiDict([(name.decode("latin-1"),
                                value.rstrip(b" \t").decode("utf-8", "surrogateescape"))
                               for name, value in self._fields])
        hosts = len(headers.getall("Host", ()))
        if hosts > 1 or (hosts == 0 and version == b"1.1"):    # RFC 9112 §3.2: 400
            return ONE_HOST
        if "Transfer-Encoding" in headers:
            return _judge_coding(headers, version == b"1.0")
        if "Expect" in headers or "Upgrade" in headers or parser.should_upgrade():
            return "framing"
        if not self._url.startswith(b"/"):
            return "target"
        method = _PLAIN_METHODS.get(parser.get_method())
        if method is None:
            return "method"
        target = self._url.decode("utf-8", "surrogateescape")
        found = match(target)
        if found is None:
            return "target"
        declared = headers.get("Content-Length")
        length = None if declared is None else int(declared)   # llhttp allows one, digits only
        limit = limits[found.endpoint]
        if length is not None and length > limit:
            return "framing"               # the relay answers 413 in JSON, over aiohttp
        query_at = self._url.find(b"?")
        if query_at >= 0 and len(self._url) - query_at - 1 > limit:
            return Refusal(413, f"the query exceeds the {limit}-byte limit for "
                           f"/{found.endpoint}: send fewer events per request", "limit",
                           headers.get("Origin"))
        return Head(method, target, found, CIMultiDictProxy(headers), length, len(raw),
                    self._keep_alive, version == b"1.0")


def _judge_coding(headers: CIMultiDict[str], http10: bool) -> Refusal | str:
    """A request with a body framed by Transfer-Encoding: only plain `chunked`, on HTTP/1.1,
    without Content-Length, goes to aiohttp; every other shape is a smuggler's."""
    if "Content-Length" in headers:
        return LENGTH_WITH_CODING
    if http10:
        return CODING_ON_HTTP10
    codings = headers.getall("Transfer-Encoding")
    if len(codings) != 1 or codings[0].strip().lower() != "chunked":
        return BAD_CODING
    return "framing"


def too_long_line_answer(buffer: bytearray, match: Callable[[str], PathMatch | None]) -> Refusal:
    """414, or 413 when the over-long request line targets an SDK endpoint (its payload)."""
    line = bytes(buffer[:MAX_HEAD])
    target = line.partition(b" ")[2]
    path, query, _ = target.partition(b"?")
    if query and path.startswith(b"/") and match(path.decode("latin-1")) is not None:
        return PAYLOAD_LINE_TOO_LONG
    return LINE_TOO_LONG
