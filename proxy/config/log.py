"""The `[log]` section: process log level and the per-request JSON access log."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .reader import TableReader

LOG_LEVELS: Final = ("debug", "info", "warning", "error")
CLIENT_IP_POLICIES: Final = ("full", "truncated", "omitted")
LOG_FORMATS: Final = ("text", "json")


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"                  # the process's log level
    access: bool = True                  # one JSON line per request on `mixpanel_proxy.access`
    client_ip: str = "truncated"         # full | truncated (/24, /48) | omitted, in access logs
    format: str = "text"                 # text | json: every line one JSON object with time, level


def parse_log(reader: TableReader) -> LogConfig:
    config = LogConfig(
        level=reader.string("level", "info", choices=LOG_LEVELS),
        access=reader.boolean("access", True),
        client_ip=reader.string("client_ip", "truncated", choices=CLIENT_IP_POLICIES),
        format=reader.string("format", "text", choices=LOG_FORMATS),
    )
    reader.finish()
    return config
