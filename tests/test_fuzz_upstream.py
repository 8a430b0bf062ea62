"""Differential fuzzing of the upstream client's answer framing against h11 (a strict reference).

Hypothesis generates upstream answers (1xx interim heads, status lines, header fields,
Content-Length, chunked with extensions and trailers, close-delimited bodies, `Connection:
close`, HTTP/1.0), sometimes with one byte mutated. Each is cut at every byte offset, the
prefix delivered in two reads, then the server's close; and delivered whole without a close.
For every case the client must give exactly h11's answer (status, head fields, body) or an
upstream failure: never a success h11 does not see, never a success for an incomplete answer,
never a pending exchange for an answer h11 finds complete, and never a reusable connection
that h11 would not reuse. Three differences are deliberate, each documented where it is
excused: HTTP/1.0 keep-alive, empty lines after an interim answer, reason phrases.

Bounded and seeded in the normal suite (`derandomize`). A longer run, as in issue 14:

    FUZZ_EXAMPLES=20000 python -m pytest tests/test_fuzz_upstream.py -q -s -p no:cacheprovider

(`-s` shows the number of cases run; FUZZ_SEED=<int> picks another random stream.)
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass

import h11
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from proxy.upstream.http1 import RawAnswer
from tests.support.http1_feed import feed

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "80"))
SEED = int(os.environ.get("FUZZ_SEED", "14"))
CASES = {"exchanges": 0, "answers": 0, "successes": 0, "failures": 0}

INTERIM = [b"HTTP/1.1 100 Continue\r\n\r\n",
           b"HTTP/1.1 102 Processing\r\n\r\n",
           b"HTTP/1.1 103 Early Hints\r\nLink: </app.js>; rel=preload\r\n\r\n",
           b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\nLink: </b.css>\r\n\r\n"]
STATUSES = [200, 200, 200, 201, 202, 204, 304, 400, 401, 403, 413, 429, 500, 502, 503]
NAMES = [b"Content-Type", b"Retry-After", b"Date", b"Server", b"X-Request-Id", b"Vary",
         b"Access-Control-Allow-Origin", b"Set-Cookie", b"x-lower", b"X-Empty"]
VALUE_CHARS = st.sampled_from(list(b"abcXYZ019 -_/;=,.:\"()"))
# Field lines that strict parsers refuse or frame differently: smuggling shapes and oddities.
ODD_LINES = [b"Content-Length: 3\r\n", b"Content-Length: 0\r\n", b"Content-Length: +1\r\n",
             b"Content-Length: 1, 1\r\n", b"Transfer-Encoding: gzip\r\n",
             b"Transfer-Encoding: chunked\r\n", b"Transfer-Encoding: gzip, chunked\r\n",
             b" folded continuation\r\n", b"X-Bare-LF: 1\n", b"Bad Name: 1\r\n",
             b"X-Nul: a\x00b\r\n", b"X-Utf8: caf\xc3\xa9\r\n", b"Connection: upgrade\r\n",
             b"Upgrade: websocket\r\n", b"X-Long: " + b"v" * 300 + b"\r\n"]
ODD_INTERIM = [b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
               b"HTTP/1.1 150 Odd\r\nContent-Length: 2\r\n\r\nhi", b"HTTP/1.1 100 Continue\n\n",
               b"HTTP/1.0 100 Continue\r\n\r\n",
               b"HTTP/1.1 103 Early Hints\r\nConnection: close\r\n\r\n"]
MUTANTS = list(b" \r\n\t:0a\x00\x7f\xff;-")


@dataclass(frozen=True)
class Reference:
    """h11's reading: the answer, or None (a protocol error or an incomplete answer), and
    whether the connection could carry another exchange (only meaningful without a close)."""

    answer: tuple[int, list[tuple[str, str]], bytes] | None
    pending: bool = False
    reusable: bool = False


def reference(data: bytes, eof: bool) -> Reference:
    connection = h11.Connection(our_role=h11.CLIENT)
    connection.send(h11.Request(method="GET", target="/settings", headers=[("Host", "up.test")]))
    connection.send(h11.EndOfMessage())
    connection.receive_data(data)
    if eof:
        connection.receive_data(b"")
    status, head, body = 0, [], bytearray()
    try:
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                return Reference(None, pending=True)
            if isinstance(event, h11.Response):
                status = event.status_code
                head = [(name.decode("latin-1"), value.decode("latin-1"))
                        for name, value in event.headers.raw_items()]
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                reusable = (connection.our_state is h11.DONE
                            and connection.their_state is h11.DONE)
                return Reference((status, head, bytes(body)), reusable=reusable)
            elif not isinstance(event, h11.InformationalResponse):
                return Reference(None)          # ConnectionClosed, PAUSED
    except h11.RemoteProtocolError:
        return Reference(None)


def kept_alive_1_0(data: bytes) -> bool:
    lowered = data.lower()
    return b"http/1.0 " in lowered and b"\r\nconnection: keep-alive" in lowered


def empty_line_after_interim(data: bytes) -> bool:
    """The other deliberate difference: llhttp skips CR and LF bytes before a status line
    (RFC 9112 2.2 asks a server to ignore empty lines before a request line). The client
    refuses them before the first one; after an interim answer, inside the same read, it
    cannot see them. The framing is the same either way."""
    at = 0
    while data.startswith(b"HTTP/1.1 1", at):
        end = data.find(b"\r\n\r\n", at)
        if end < 0:
            return False
        at = end + 4
        if data[at:at + 1] in (b"\r", b"\n"):
            return True
    return False


def reason_ignored(data: bytes, eof: bool) -> Reference:
    """The third deliberate difference: the client never reads a reason phrase (RFC 9112 4:
    "a client SHOULD ignore the reason-phrase content"), so bytes h11 refuses there (NUL,
    say) cost nothing. h11's reading of the same answer with every reason phrase removed."""
    return reference(re.sub(rb"(?m)^(HTTP/\d\.\d \d{3} )[^\r\n]*", rb"\1", data), eof)


def as_tuple(answer: RawAnswer) -> tuple[int, list[tuple[str, str]], bytes]:
    return answer.status, answer.headers, answer.body


@st.composite
def field_lines(draw: st.DrawFn) -> list[bytes]:
    lines = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(NAMES))
        value = bytes(draw(st.lists(VALUE_CHARS, max_size=12)))
        space = draw(st.sampled_from([b" ", b"", b"  ", b"\t"]))
        lines.append(name + b":" + space + value + b"\r\n")
    return lines


@st.composite
def chunked(draw: st.DrawFn, body: bytes) -> bytes:
    out, rest = [], body
    while rest:
        size = draw(st.integers(1, max(1, len(rest))))
        piece, rest = rest[:size], rest[size:]
        size_text = draw(st.sampled_from(["{:x}", "{:X}", "0{:x}"])).format(len(piece))
        extension = draw(st.sampled_from([b"", b"", b";ext=1", b';name="v"']))
        out.append(size_text.encode() + extension + b"\r\n" + piece + b"\r\n")
    out.append(b"0" + draw(st.sampled_from([b"", b";last"])) + b"\r\n")
    out.extend(draw(st.lists(st.sampled_from([b"Server-Timing: db;dur=5\r\n",
                                              b"X-Checksum: abc\r\n"]), max_size=2)))
    return b"".join(out) + b"\r\n"


@st.composite
def answers(draw: st.DrawFn) -> bytes:
    parts = draw(st.lists(st.sampled_from(INTERIM + ODD_INTERIM[:draw(st.integers(0, 5))]),
                          max_size=2))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"]))
    status = draw(st.sampled_from(STATUSES))
    reason = draw(st.sampled_from([b" OK", b" ", b"", b" Some Reason"]))
    head = [version + b" " + str(status).encode() + reason + b"\r\n", *draw(field_lines())]
    if draw(st.integers(0, 3)) == 0:
        head.insert(draw(st.integers(1, len(head))), draw(st.sampled_from(ODD_LINES)))
    connection = draw(st.sampled_from([None, None, b"close", b"keep-alive", b"Close"]))
    if connection is not None:
        head.append(b"Connection: " + connection + b"\r\n")
    body = draw(st.binary(max_size=40)) if status not in (204, 304) else b""
    framing = draw(st.sampled_from(["length", "length", "chunked", "close"]))
    if framing == "length":
        head.append(b"Content-Length: " + str(len(body)).encode() + b"\r\n")
    elif framing == "chunked":
        head.append(b"Transfer-Encoding: chunked\r\n")
        body = draw(chunked(body))
    parts.append(b"".join(head) + b"\r\n" + body)
    data = b"".join(parts)
    if draw(st.integers(0, 3)) == 0:            # one byte mutated, inserted or dropped
        at = draw(st.integers(0, len(data) - 1))
        mutant = bytes([draw(st.sampled_from(MUTANTS))])
        how = draw(st.sampled_from(["replace", "insert", "drop"]))
        data = (data[:at] + mutant + data[at + 1:] if how == "replace" else
                data[:at] + mutant + data[at:] if how == "insert" else data[:at] + data[at + 1:])
    return data


async def check_every_cut(data: bytes, split: int) -> None:
    for cut in range(len(data) + 1):
        prefix = data[:cut]
        at = min(split, cut)
        fed = await feed([prefix[:at], prefix[at:]], eof=True)
        CASES["exchanges"] += 1
        assert fed.outcome is not None, (prefix, "pending after the server's close")
        if isinstance(fed.outcome, RawAnswer):
            CASES["successes"] += 1
            same_success(prefix, fed.outcome, eof=True)
        else:
            CASES["failures"] += 1


def same_success(data: bytes, outcome: RawAnswer, eof: bool) -> Reference | None:
    """A success of ours is h11's answer, the deliberate differences excused: the reference, or
    None for an empty line after an interim answer (llhttp skips it, the framing is the same)."""
    expected = reference(data, eof=eof)
    if expected.answer is None and empty_line_after_interim(data):
        return None
    if expected.answer is None:
        expected = reason_ignored(data, eof=eof)
    assert expected.answer is not None, (data, "a success h11 does not see", outcome)
    assert as_tuple(outcome) == expected.answer, data
    return expected


async def check_whole_without_close(data: bytes) -> None:
    fed = await feed([data], eof=False)
    CASES["exchanges"] += 1
    if isinstance(fed.outcome, RawAnswer):
        expected = same_success(data, fed.outcome, eof=False)
        if expected is None:
            return
        if fed.connection.reusable:
            # One deliberate difference: h11 closes every HTTP/1.0 connection; llhttp keeps one
            # whose answer said `Connection: keep-alive` and was framed (RFC 9112 9.3).
            assert expected.reusable or kept_alive_1_0(data), (data, "reused where h11 closes")
    elif fed.outcome is None:
        assert reference(data, eof=False).answer is None, (
            data, "waits on an answer h11 finds complete")


@seed(SEED)
@settings(max_examples=EXAMPLES, deadline=None, database=None,
          derandomize="FUZZ_SEED" not in os.environ and "FUZZ_EXAMPLES" not in os.environ,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=answers(), split=st.integers(0, 400))
def test_answers_cut_anywhere_match_h11_or_fail(data: bytes, split: int) -> None:
    async def run() -> None:
        await check_every_cut(data, split)
        await check_whole_without_close(data)

    asyncio.run(run())
    CASES["answers"] += 1


def teardown_module() -> None:
    print(f"\nupstream answer fuzz: {CASES['answers']} answers, {CASES['exchanges']} exchanges "
          f"({CASES['successes']} successes, {CASES['failures']} failures)")
