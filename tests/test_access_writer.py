"""Access lines around the logging module (ops/logs.py AccessWriter): written together soon
(one write for all the lines of FLUSH_SECONDS, or at once past FLUSH_BYTES), formatted as the
handler would, in order with every other line, and through logging whenever anyone else
listens."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import proxy
from proxy.config import parse_config
from proxy.ops import logs
from proxy.ops.accesslog import ACCESS_LOGGER
from tests.support.logcapture import MessageCapture


class CountingStream(io.StringIO):
    """stderr as the handler sees it, counting the writes that reach it."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []

    @property
    def writes(self) -> int:
        return len(self.texts)

    def write(self, text: str) -> int:
        self.texts.append(text)
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


async def test_each_write_is_whole_lines_within_flush_bytes(stream: CountingStream) -> None:
    logs.setup_logging(parse_config({}).log, stream)
    writer = logs.access_writer()
    assert writer is not None
    per_write = logs.FLUSH_BYTES // (len(access(10)) + 1)
    count = per_write * 3 + 2
    for n in range(10, 10 + count):
        writer.write(access(n))
    assert stream.writes == 3                      # no wait for the full ones: bounded
    await asyncio.sleep(WRITTEN)
    assert stream.writes == 4
    assert stream.getvalue().splitlines() == [access(n) for n in range(10, 10 + count)]
    assert all(len(text.encode()) <= logs.FLUSH_BYTES and text.endswith("\n")
               for text in stream.texts)


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


@pytest.mark.parametrize("listener", ["root", "access"])
def test_another_handler_gets_the_lines_through_logging(stream: CountingStream,
                                                        listener: str) -> None:
    logs.setup_logging(parse_config({}).log, stream)
    capture = MessageCapture()
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
    capture = MessageCapture()
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


WORKER = """
import asyncio, os, sys
from proxy.config import parse_config
from proxy.ops import logs

logs.setup_logging(parse_config({}).log, os.fdopen(int(sys.argv[1]), "w"))


async def main() -> None:
    writer = logs.access_writer()
    for n in range(int(sys.argv[3])):
        writer.write('{"worker":%s,"n":%d,"pad":"%s"}' % (sys.argv[2], n, "x" * 300))
        if n % 20 == 0:
            await asyncio.sleep(0)

asyncio.run(main())
logs.flush_access_lines()
"""


def test_workers_sharing_a_pipe_never_tear_each_others_lines() -> None:
    """Workers share stderr, a pipe under a container runtime: with the pipe full (a slow
    reader), every write is taken whole or waits, and every line arrives intact."""
    lines_each = 1500
    read_end, write_end = os.pipe()
    package_root = Path(proxy.__file__).resolve().parent.parent
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(write_end), str(worker),
                                 str(lines_each)], pass_fds=(write_end,), cwd=package_root,
                                env={**os.environ, "PYTHONPATH": str(package_root)})
               for worker in (1, 2)]
    os.close(write_end)
    received = bytearray()
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        time.sleep(0.3)                           # both writers fill the pipe and wait
        while chunk := pipe.read(1024):           # then take turns as it drains slowly
            received += chunk
            time.sleep(0.0002)
    assert [worker.wait(timeout=30) for worker in workers] == [0, 0]
    seen: dict[int, list[int]] = {1: [], 2: []}
    for line in received.decode().splitlines():
        entry = json.loads(line)                  # a torn line fails here
        seen[entry["worker"]].append(entry["n"])
    assert seen == {1: list(range(lines_each)), 2: list(range(lines_each))}


def test_batches_grow_larger_on_a_regular_file_than_on_a_pipe(tmp_path: Path) -> None:
    """A regular file takes any write whole, so its batches may hold FILE_FLUSH_BYTES; a pipe
    (what a container runtime gives) only PIPE_BUF; a stream without a descriptor as a pipe."""
    read_end, write_end = os.pipe()
    with open(tmp_path / "stderr", "w") as file, os.fdopen(write_end, "w") as pipe:
        assert logs.batch_limit(file) == logs.FILE_FLUSH_BYTES
        assert logs.batch_limit(pipe) == logs.FLUSH_BYTES == select.PIPE_BUF
        assert logs.batch_limit(io.StringIO()) == logs.FLUSH_BYTES
    os.close(read_end)


async def test_on_a_regular_file_four_pipes_worth_wait_as_one_batch(
        stream: CountingStream, tmp_path: Path) -> None:
    """(`stream` only restores the root logger afterwards.)"""
    path = tmp_path / "stderr"
    with open(path, "w") as file:
        logs.setup_logging(parse_config({}).log, file)
        writer = logs.access_writer()
        assert writer is not None
        count = 4 * logs.FLUSH_BYTES // (len(access(100)) + 1)
        for n in range(100, 100 + count):
            writer.write(access(n))
        assert path.stat().st_size == 0            # one batch, still waiting for its time
        await asyncio.sleep(WRITTEN)
        assert path.read_text().splitlines() == [access(n) for n in range(100, 100 + count)]
