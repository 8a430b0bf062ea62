"""The process's log lines: plain text by default, or one JSON object per line (`[log] format =
"json"`), every line with its time, level and logger, the access lines included.

Access lines are JSON already (accesslog.py); in JSON mode they get the level and logger spliced
in, so a shipper reads every line of the stream the same way and nothing is parsed twice.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from ..config import LogConfig

__all__ = ["JsonFormatter", "announce", "setup_logging"]

_ACCESS = "mixpanel_proxy.access"
_json_mode = [False]


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        level = record.levelname.lower()
        if record.name == _ACCESS and message.startswith("{"):
            return f'{{"level":"{level}","logger":"{_ACCESS}",{message[1:]}'
        line = {"time": _timestamp(record.created), "level": level, "logger": record.name,
                "message": message}
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def setup_logging(config: LogConfig) -> None:
    """The root handler on stderr, in the configured format (call once, before forking)."""
    handler = logging.StreamHandler(sys.stderr)
    _json_mode[0] = config.format == "json"
    handler.setFormatter(JsonFormatter() if _json_mode[0] else logging.Formatter("%(message)s"))
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
