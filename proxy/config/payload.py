"""The `[payload]` section: how the relay treats payloads it has to decode and rewrite."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ..endpoints import DEFAULT_MAX_DEPTH
from .reader import TableReader

INSERT_ID_POLICIES: Final = ("when_rewriting", "always", "never")


@dataclass(frozen=True)
class PayloadConfig:
    # when_rewriting: events without `$insert_id` get one when the relay re-encodes their batch
    # anyway (split, policy); always: decode every track/import payload to add them; never.
    insert_id: str = "when_rewriting"
    upstream_gzip_level: int = 6      # gzip rewritten /track and /import bodies; 0: never
    max_depth: int = DEFAULT_MAX_DEPTH


def parse_payload(reader: TableReader) -> PayloadConfig:
    config = PayloadConfig(
        insert_id=reader.string("insert_id", "when_rewriting", choices=INSERT_ID_POLICIES),
        upstream_gzip_level=reader.integer("upstream_gzip_level", 6, minimum=0, maximum=9),
        max_depth=reader.integer("max_depth", DEFAULT_MAX_DEPTH, minimum=4, maximum=256),
    )
    reader.finish()
    return config
