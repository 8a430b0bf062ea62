"""The upstream client's connection protocol, socket-free: byte lists in, outcome out (the way
httpcore's tests/_async/test_http11.py drive its connection with a mock stream). Each case
runs in well under a millisecond."""

from __future__ import annotations

import asyncio

import pytest

from proxy.upstream.http1 import MAX_RESPONSE_BYTES, ExchangeError, RawAnswer
from tests.support.http1_feed import REQUEST, connect, feed

OK = [b"HTTP/1.1 200 OK\r\n", b"Content-Type: plain/text\r\n", b"Content-Length: 13\r\n",
      b"\r\n", b"Hello, world!"]
WHOLE = b"".join(OK)


async def test_an_answer_in_pieces() -> None:
    fed = await feed(OK, eof=False)
    assert fed.transport.written == [REQUEST]
    assert (fed.answer.status, fed.answer.body) == (200, b"Hello, world!")
    assert fed.answer.headers == [("Content-Type", "plain/text"), ("Content-Length", "13")]
    assert fed.connection.reusable and not fed.transport.closed


async def test_a_chunked_answer_and_its_trailers_stay_out_of_the_head() -> None:
    fed = await feed([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Surprise\r\n",
                      b"\r\n3\r\nHel\r\n4\r\nlo, \r\n6\r\nworld!\r\n0\r\n",
                      b"Surprise: You thought we were done here?\r\n", b"\r\n"], eof=False)
    assert fed.answer.body == b"Hello, world!"
    assert fed.answer.headers == [("Transfer-Encoding", "chunked"), ("Trailer", "Surprise")]
    assert fed.connection.reusable


@pytest.mark.parametrize("cut", range(len(WHOLE)))
async def test_a_cut_anywhere_then_eof_is_a_failure(cut: int) -> None:
    """httpcore's test_http11_connection_with_incomplete_response, at every offset: the head
    (status line included) and the promised body must both be complete."""
    fed = await feed([WHOLE[:cut]])
    assert fed.error.kind == "protocol"
    assert "closed before a complete answer" in str(fed.error)
    assert not fed.connection.reusable


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
    b"HTTP/1.0 200 OK\r\n\r\n",
])
async def test_a_body_delimited_by_the_close_ends_at_eof(head: bytes) -> None:
    for body in (b"", b"hello", b"hello world"):
        fed = await feed([head, body[:5], body[5:]])
        assert (fed.answer.status, fed.answer.body) == (200, body)
        assert not fed.connection.reusable


async def test_a_connection_close_answer_is_not_reused() -> None:
    fed = await feed([b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n1"],
                     eof=False)
    assert fed.answer.body == b"1" and not fed.connection.reusable


async def test_early_hints_and_continue_are_skipped() -> None:
    """httpcore's test_http11_early_hints: the 1xx heads are not the answer, nor part of it."""
    fed = await feed([b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
                      b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n", *OK],
                     eof=False)
    assert (fed.answer.status, fed.answer.body) == (200, b"Hello, world!")
    assert ("Link", "</style.css>; rel=preload") not in fed.answer.headers
    assert fed.connection.reusable


async def test_an_interim_answer_alone_then_eof_is_a_failure() -> None:
    fed = await feed([b"HTTP/1.1 103 Early Hints\r\nLink: </a.js>\r\n\r\n"])
    assert fed.error.kind == "protocol" and "closed before" in str(fed.error)


async def test_an_unasked_switch_of_protocols_is_a_failure() -> None:
    fed = await feed([b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      b"Connection: Upgrade\r\n\r\n\x81\x05hello"], eof=False)
    assert "101" in str(fed.error) and fed.transport.closed


@pytest.mark.parametrize("data", [
    b"Wait, this isn't valid HTTP!",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n1",
    b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
])
async def test_a_malformed_answer_is_a_failure_and_closes(data: bytes) -> None:
    fed = await feed([data], eof=False)
    assert fed.error.kind == "protocol" and "malformed" in str(fed.error)
    assert fed.transport.closed


@pytest.mark.parametrize("codings", [
    [b"gzip, chunked"], [b"gzip", b"chunked"], [b"chunked", b"chunked"], [b"identity"]])
async def test_a_transfer_coding_other_than_chunked_is_a_failure(codings: list[bytes]) -> None:
    """A differential fuzzer finding: llhttp undoes the chunking of `gzip, chunked` and would
    hand over a body still gzipped as if it were the answer (h11 refuses it)."""
    head = b"".join(b"Transfer-Encoding: " + coding + b"\r\n" for coding in codings)
    fed = await feed([b"HTTP/1.1 200 OK\r\n" + head + b"\r\n1\r\nx\r\n0\r\n\r\n"])
    assert fed.error.kind == "protocol" and fed.transport.closed


async def test_trailing_whitespace_is_not_part_of_a_value() -> None:
    """A differential fuzzer finding: llhttp keeps it, h11 (and RFC 9110 5.5) do not."""
    fed = await feed([b"HTTP/1.1 429 Too Many\r\nRetry-After: 7 \t\r\nContent-Length: 0\r\n\r\n"],
                     eof=False)
    assert fed.answer.headers == [("Retry-After", "7"), ("Content-Length", "0")]


@pytest.mark.parametrize("lead", [b"\r\n", b"\n", b"\r"])
async def test_an_empty_line_before_the_status_line_is_a_failure(lead: bytes) -> None:
    fed = await feed([lead + WHOLE], eof=False)
    assert fed.error.kind == "protocol" and fed.transport.closed


async def test_bytes_while_idle_close_the_connection() -> None:
    connection, transport = connect()
    first = await feed(OK, eof=False, on=(connection, transport))
    assert first.answer.status == 200 and connection.reusable
    connection.data_received(b"HTTP/1.1 500 Stray\r\nContent-Len")    # nobody asked
    assert transport.closed and not connection.reusable


async def test_bytes_after_the_answer_in_the_same_read_close_it_and_spare_the_answer() -> None:
    fed = await feed([WHOLE + b"HTTP/1.1 500 Stray\r\nX-Stray: 1\r\nContent-Length: 1\r\n\r\n5"],
                     eof=False)
    assert (fed.answer.status, fed.answer.body) == (200, b"Hello, world!")
    assert ("X-Stray", "1") not in fed.answer.headers
    assert fed.transport.closed and not fed.connection.reusable


async def test_a_reused_connection_closed_unanswered_may_be_retried() -> None:
    fed = await feed([], reused=True)
    assert fed.error.retryable
    fresh = await feed([])                          # a fresh one: the server refused it
    assert not fresh.error.retryable
    started = await feed([b"HTTP/1.1 200 OK\r\n"], reused=True)
    assert not started.error.retryable              # an answer began: never again


async def test_the_deadline_ends_the_exchange() -> None:
    fed = await feed([b"HTTP/1.1 200 OK\r\n"], eof=False, timeout=0)
    assert fed.error.kind == "timeout" and "did not answer in time" in str(fed.error)


async def test_an_oversized_body_is_refused_and_closes() -> None:
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {MAX_RESPONSE_BYTES + 1}\r\n\r\n".encode()
    chunk = b"x" * (1024 * 1024)
    fed = await feed([head, *[chunk] * (MAX_RESPONSE_BYTES // len(chunk) + 1)], eof=False)
    assert "too large" in str(fed.error) and fed.transport.closed


async def test_an_interim_answer_with_a_body_is_a_failure() -> None:
    fed = await feed([b"HTTP/1.1 150 Odd\r\nContent-Length: 2\r\n\r\nhi", *OK], eof=False)
    assert fed.error.kind == "protocol" and fed.transport.closed


async def test_a_connection_answers_one_exchange_after_another() -> None:
    connection, transport = connect()
    for n in range(3):
        body = str(n).encode()
        fed = await feed([b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n" + body],
                         eof=False, on=(connection, transport))
        assert fed.answer.body == body
    assert transport.written == [REQUEST] * 3 and not transport.closed


async def test_a_callback_exchange_is_handed_its_answer_only_after_the_parse() -> None:
    """`begin` (the plain path's exchange, no future): the owner learns the outcome once llhttp
    has returned, so bytes after the answer in the same read retire the connection before the
    owner can start its next exchange on it, and never become that exchange's answer."""
    connection, transport = connect()
    deadline = asyncio.get_running_loop().time() + 30
    outcomes: list[RawAnswer | ExchangeError] = []

    def done(outcome: RawAnswer | ExchangeError) -> None:
        outcomes.append(outcome)
        if len(outcomes) == 1 and connection.reusable:     # as the pool: reuse if it can
            connection.begin(REQUEST, deadline, "up.test", done)

    connection.begin(REQUEST, deadline, "up.test", done)
    connection.data_received(WHOLE + b"HTTP/1.1 500 Stray\r\nContent-Length: 1\r\n\r\n5")
    await asyncio.sleep(0)      # one loop turn: the outcome is delivered once the parse returned
    first = outcomes[0]
    assert isinstance(first, RawAnswer) and (first.status, first.body) == (200, b"Hello, world!")
    assert outcomes == [first] and transport.written == [REQUEST]
    assert transport.closed and not connection.reusable


async def test_a_callback_exchange_may_begin_the_next_from_its_callback() -> None:
    connection, transport = connect()
    deadline = asyncio.get_running_loop().time() + 30
    bodies: list[bytes] = []

    def done(outcome: RawAnswer | ExchangeError) -> None:
        assert isinstance(outcome, RawAnswer)
        bodies.append(outcome.body)
        if len(bodies) < 3:
            connection.begin(REQUEST, deadline, "up.test", done)

    connection.begin(REQUEST, deadline, "up.test", done)
    for n in range(3):
        connection.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n%d" % n)
    assert bodies == [b"0", b"1", b"2"] and transport.written == [REQUEST] * 3
    assert not transport.closed
