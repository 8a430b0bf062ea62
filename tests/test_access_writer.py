"""Access lines around the logging module (ops/logs.py AccessWriter): written together soon
(one write for all the lines of FLUSH_SECONDS, or at once past FLUSH_BYTES), formatted as the
handler would, in order with every other line, and through logging whenever anyone else
listens."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from proxy.config import parse_config
from proxy.ops import logs
from proxy.ops.accesslog import ACCESS_LOGGER


class CountingStream(io.StringIO):
    """stderr as the handler sees it, counting the writes that reach it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


@pytest.fixture
def stream() -> Iterator[CountingStream]:
    """setup_logging's handler on a counting stream; the root logger restored afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    counting = CountingStream()
    yield counting
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logs._writer[0] = None


def access(n: int) -> str:
    return f'{{"endpoint":"track","status":200,"n":{n}}}'


WRITTEN = logs.FLUSH_SECONDS * 2 + 0.05     # surely past the flush, on a busy machine too


async def test_lines_reach_stderr_together_soon(stream: CountingStream) -> None:
    logs.setup_logging(parse_config({}).log, stream)
    writer = logs.access_writer()
    assert writer is not None
    for n in range(20):
        writer.write(access(n))
        await asyncio.sleep(0)                     # each in a turn of its own
    assert stream.writes == 0
    await asyncio.sleep(WRITTEN)
    assert stream.writes == 1
    assert stream.getvalue().splitlines() == [access(n) for n in range(20)]


async def test_past_flush_bytes_the_lines_are_written_at_once(stream: CountingStream) -> None:
    logs.setup_logging(parse_config({}).log, stream)
    writer = logs.access_writer()
    assert writer is not None
    line = access(1)
    count = logs.FLUSH_BYTES // len(line) + 2
    for _ in range(count):
        writer.write(line)
    assert stream.writes == 1                      # no wait: the buffer is bounded
    written = stream.getvalue().count("\n")
    assert count - 2 <= written < count            # the rest waits for the next flush


def test_flush_access_lines_writes_what_waits(stream: CountingStream) -> None:
    async def write_and_stop() -> None:
        logs.setup_logging(parse_config({}).log, stream)
        writer = logs.access_writer()
        assert writer is not None
        writer.write(access(1))
        writer.write(access(2))

    asyncio.run(write_and_stop())                 # the loop ends before the flush is due
    assert stream.writes == 0
    logs.flush_access_lines()                     # what a worker does last
    assert stream.getvalue().splitlines() == [access(1), access(2)]


async def test_json_mode_splices_level_and_logger_as_the_formatter_does(
        stream: CountingStream) -> None:
    logs.setup_logging(parse_config({"log": {"format": "json"}}).log, stream)
    writer = logs.access_writer()
    assert writer is not None
    writer.write(access(1))
    await asyncio.sleep(WRITTEN)
    assert json.loads(stream.getvalue()) == {"level": "info", "logger": ACCESS_LOGGER.name,
                                             "endpoint": "track", "status": 200, "n": 1}


async def test_another_line_goes_after_the_access_lines_waiting(stream: CountingStream) -> None:
    logs.setup_logging(parse_config({}).log, stream)
    writer = logs.access_writer()
    assert writer is not None
    writer.write(access(1))
    logging.getLogger("mixpanel_proxy.relay").warning("upstream slow")
    writer.write(access(2))
    await asyncio.sleep(WRITTEN)
    assert stream.getvalue().splitlines() == [access(1), "upstream slow", access(2)]


def test_without_a_loop_a_line_is_written_at_once(stream: CountingStream) -> None:
    logs.setup_logging(parse_config({}).log, stream)
    writer = logs.access_writer()
    assert writer is not None
    writer.write(access(1))
    assert stream.getvalue() == access(1) + "\n"


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.mark.parametrize("listener", ["root", "access"])
def test_another_handler_gets_the_lines_through_logging(stream: CountingStream,
                                                        listener: str) -> None:
    logs.setup_logging(parse_config({}).log, stream)
    capture = Capture()
    logger = logging.getLogger() if listener == "root" else ACCESS_LOGGER
    logger.addHandler(capture)
    try:
        assert logs.access_writer() is None
        recorder_line = access(1)
        ACCESS_LOGGER.info(recorder_line)       # what AccessRecorder.record then does
        assert capture.lines == [recorder_line]
    finally:
        logger.removeHandler(capture)
    assert logs.access_writer() is not None


def test_before_setup_logging_there_is_no_writer(stream: CountingStream) -> None:
    assert logs.access_writer() is None


async def test_a_handler_added_while_a_batch_waits_gets_the_lines_from_the_next_batch_on(
        stream: CountingStream) -> None:
    logs.setup_logging(parse_config({}).log, stream)
    writer = logs.access_writer()
    assert writer is not None
    writer.write(access(1))                    # a batch opens: its checks hold until written
    capture = Capture()
    logging.getLogger().addHandler(capture)
    try:
        assert logs.access_writer() is writer
        writer.write(access(2))
        await asyncio.sleep(WRITTEN)
        assert stream.getvalue().splitlines() == [access(1), access(2)]
        assert logs.access_writer() is None        # asked again: someone else listens now
        ACCESS_LOGGER.info(access(3))
        assert capture.lines == [access(3)]
    finally:
        logging.getLogger().removeHandler(capture)


def test_no_writer_while_the_access_logger_is_above_info(stream: CountingStream) -> None:
    logs.setup_logging(parse_config({}).log, stream)
    level = ACCESS_LOGGER.level
    ACCESS_LOGGER.setLevel(logging.WARNING)
    try:
        assert logs.access_writer() is None
    finally:
        ACCESS_LOGGER.setLevel(level)
    assert logs.access_writer() is not None
