"""A logging handler that keeps each record's message: what reached a logger, as text."""

from __future__ import annotations

import logging


class MessageCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
