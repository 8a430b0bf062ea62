"""The process's log lines: plain text by default, or one JSON object per line (`[log] format =
"json"`), every line with its time, level and logger, the access lines included.

Access lines are JSON already (accesslog.py); in JSON mode they get the level and logger spliced
in, so a shipper reads every line of the stream the same way and nothing is parsed twice.

Access lines skip the logging module when they can (`AccessWriter`): through it, a line cost a
/track request more than a tenth of its CPU (a LogRecord, the handler's lock, the formatter, and
a write and a flush of its own on stderr, which Python line-buffers). While the access logger's
lines go only where `setup_logging` sent every line, the writer formats each as that handler
would and writes them together: at most FLUSH_SECONDS after the first of them, or at once when
the next would take a write past FLUSH_BYTES (nginx's `access_log ... buffer= flush=`, with a
far shorter wait), and before the worker ends. FLUSH_BYTES is PIPE_BUF: every worker writes to
the same stderr, a pipe under a container runtime or a supervisor, and a pipe takes a write of
at most PIPE_BUF bytes whole, so two workers' lines never interleave mid-line (a longer write
may be split when the pipe is full, with the other worker's bytes in between). A regular file
takes every write whole (the kernel's lock on the shared file position, or O_APPEND), so there
batches grow to FILE_FLUSH_BYTES: fewer, larger writes.

Any other handler (a test's capture, an application embedding the relay) gets the lines through
logging, as before. Order: any other line (a warning) goes after the access lines already
waiting (the handler's filter writes them first).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import select
import stat
import sys
import time
from typing import Final, TextIO

from ..config import LogConfig
from .tally import running_loop

__all__ = ["AccessWriter", "JsonFormatter", "access_writer", "announce", "flush_access_lines",
           "setup_logging"]

_ACCESS: Final = "mixpanel_proxy.access"
FLUSH_SECONDS: Final = 0.1   # an access line waits at most this long to be written
FLUSH_BYTES: Final = select.PIPE_BUF   # ... or until this much is waiting (the docstring)
FILE_FLUSH_BYTES: Final = 64 * 1024    # ... when stderr is a regular file
_json_mode: Final = [False]


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        level = record.levelname.lower()
        if record.name == _ACCESS and message.startswith("{"):
            return _access_json(message, level)
        line = {"time": _timestamp(record.created), "level": level, "logger": record.name,
                "message": message}
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def _access_json(line: str, level: str = "info") -> str:
    """An access line (a JSON object, `{...}`) with the level and logger spliced in."""
    return f'{{"level":"{level}","logger":"{_ACCESS}",{line[1:]}'


class AccessWriter:
    """Access lines written together, soon (see the module's docstring)."""

    __slots__ = ("_handler", "_json", "_limit", "_lines", "_size", "_loop", "_due")

    def __init__(self, handler: logging.StreamHandler[TextIO], json_mode: bool) -> None:
        self._handler = handler
        self._json = json_mode
        self._limit = batch_limit(handler.stream)
        self._lines: list[str] = []
        self._size = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due = False               # a flush is scheduled on `_loop`

    def takes(self) -> bool:
        """Whether an access line now goes to this writer: the access logger's lines go to its
        handler alone, at INFO. Asked when a batch opens and trusted until it is written (at
        most FLUSH_SECONDS): a line costs the questions about a tenth of its price otherwise,
        so a handler or level set meanwhile applies from the next batch on."""
        if self._lines:
            return True
        handlers = logging.root.handlers
        return (len(handlers) == 1 and handlers[0] is self._handler
                and not _ACCESS_LOGGER.handlers and _ACCESS_LOGGER.propagate
                and _ACCESS_LOGGER.isEnabledFor(logging.INFO))

    def write(self, line: str) -> None:
        if self._json:
            line = _access_json(line)
        size = len(line) + 1            # ASCII: the line's JSON escapes everything else
        if self._size + size > self._limit:
            self.flush()
        if not self._lines and not self._scheduled():
            self._write(line + "\n")
            return
        self._lines.append(line)
        self._size += size

    def _scheduled(self) -> bool:
        """Whether a flush is due within FLUSH_SECONDS: one already is (a batch written early
        for its size leaves it pending), or one is now; False without a loop (a command)."""
        loop = self._loop
        if self._due and loop is not None and not loop.is_closed():
            return True
        loop = self._loop = running_loop(loop)
        if loop is None:
            return False
        self._due = True
        loop.call_later(FLUSH_SECONDS, self._flush_due)
        return True

    def _flush_due(self) -> None:
        self._due = False
        self.flush()

    def flush(self) -> None:
        if self._lines:
            lines, self._lines, self._size = self._lines, [], 0
            self._write("\n".join(lines) + "\n")

    def _write(self, text: str) -> None:
        handler = self._handler
        handler.acquire()
        try:
            handler.stream.write(text)
            handler.stream.flush()
        except Exception:           # as logging does: a broken stderr never stops the relay
            pass
        finally:
            handler.release()

    def filter(self, record: logging.LogRecord) -> bool:
        """The handler's filter: any other line goes after the access lines waiting."""
        self.flush()
        return True


def batch_limit(stream: TextIO) -> int:
    """The most one write of access lines may hold on `stream` (the module's docstring)."""
    try:
        regular = stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (OSError, ValueError):   # no descriptor (a StringIO): as careful as for a pipe
        regular = False
    return FILE_FLUSH_BYTES if regular else FLUSH_BYTES


# Final module names are C statics once compiled (proxy/compiled.py): no dict lookup per line.
_ACCESS_LOGGER: Final = logging.getLogger(_ACCESS)
_writer: Final[list[AccessWriter | None]] = [None]


def access_writer() -> AccessWriter | None:
    """The writer for access lines while they go only where `setup_logging` sent every line;
    None: through the logging module."""
    writer = _writer[0]
    return writer if writer is not None and writer.takes() else None


def flush_access_lines() -> None:
    """Write the access lines still waiting (a worker, before its process ends)."""
    if _writer[0] is not None:
        _writer[0].flush()


def setup_logging(config: LogConfig, stream: TextIO | None = None) -> None:
    """The root handler on stderr (or `stream`), in the configured format (call once, before
    forking)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    _json_mode[0] = config.format == "json"
    handler.setFormatter(JsonFormatter() if _json_mode[0] else logging.Formatter("%(message)s"))
    writer = _writer[0] = AccessWriter(handler, _json_mode[0])
    handler.addFilter(writer)
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(config.level.upper())


def announce(message: str) -> None:
    """A line for whoever started the relay (the listening address), on stdout."""
    if _json_mode[0]:
        message = json.dumps({"time": _timestamp(time.time()), "level": "info",
                              "logger": "mixpanel_proxy", "message": message})
    print(message, flush=True)


def _timestamp(created: float) -> str:
    whole = int(created)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    return f"{text}.{int((created - whole) * 1000):03d}Z"
