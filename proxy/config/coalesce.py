"""`[coalesce]`: merge concurrent /track requests for one region into one upstream batch."""

from __future__ import annotations

from dataclasses import dataclass

from .reader import TableReader


@dataclass(frozen=True)
class CoalesceConfig:
    enabled: bool = False
    slots: int = 8              # sends in flight per region before requests start to merge
    max_events: int = 2000      # Mixpanel's per-request maximum


def parse_coalesce(reader: TableReader) -> CoalesceConfig:
    config = CoalesceConfig(
        enabled=reader.boolean("enabled", False),
        slots=reader.integer("slots", 8, minimum=1, maximum=1024),
        max_events=reader.integer("max_events", 2000, minimum=1, maximum=2000),
    )
    reader.finish()
    return config
