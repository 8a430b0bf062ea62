"""The `[spool]` section: the durable store-and-forward spool (proxy/spool/).

Off unless `enabled = true`, because it writes a file. `mode` chooses when requests are stored:
`on_failure` (forward first, store when the upstream cannot take them), `always` (store first,
forward in the background) or `off` (store nothing new, but keep draining what is on disk).

/record is spooled by default: its success answer (on which the recorder advances `seq`) comes
only once the batch is durably on disk, and the drainer replays it byte for byte, in `seq` order
per project, so an early 200 hides no loss. Drop it from `endpoints` to leave replay uploads to
the recorder's own retries (503 while the upstream fails).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..endpoints import ENDPOINTS
from .reader import TableReader

SpoolMode = Literal["on_failure", "always", "off"]
SpoolBackend = Literal["sqlite", "redis"]
SPOOL_BACKENDS: tuple[SpoolBackend, ...] = ("sqlite", "redis")
SpoolFallback = Literal["sqlite", "none"]
SPOOL_FALLBACKS: tuple[SpoolFallback, ...] = ("sqlite", "none")
SPOOL_MODES: tuple[SpoolMode, ...] = ("on_failure", "always", "off")
# Read-only endpoints: their answers carry data only the upstream has, so they can't be stored.
UNSPOOLABLE = ("flags", "settings")
SPOOLABLE = tuple(name for name in ENDPOINTS if name not in UNSPOOLABLE)
TRACK_WINDOW = 5 * 24 * 3600          # Mixpanel's /track takes events of the last 5 days only
GIB = 1024**3


@dataclass(frozen=True)
class SpoolConfig:
    enabled: bool = False
    mode: SpoolMode = "on_failure"
    path: str = "mixpanel-proxy-spool.db"
    max_bytes: int = GIB                  # live entries plus dead letters; past it: 503
    endpoints: tuple[str, ...] = SPOOLABLE
    group_commit: bool = True             # concurrent writes share one fsync
    backoff_min: float = 2.0              # drain retry delay, doubled per failure, jittered
    backoff_max: float = 60.0
    retry_after_max: float = 3600.0       # an upstream Retry-After is honoured up to this
    drain_batch: int = 64                 # entries read per drain round
    drain_concurrency: int = 8            # upstream requests in flight per region
    poll_interval: float = 5.0            # an idle drainer looks at the file this often
    track_max_age: float = TRACK_WINDOW   # older /track events go to dead letter, not upstream
    backend: SpoolBackend = "sqlite"      # "redis": one spool for the fleet ([redis] url)
    # backend "redis" while Redis is unreachable: "sqlite" stores into `path` and moves those
    # entries to Redis once it is back; "none" answers 503 + Retry-After.
    fallback: SpoolFallback = "none"
    partitions: int = 16                  # ordered lanes hash onto this many Redis streams
    claim_after: float = 30.0             # seconds before a dead relay's entries are claimed

    @property
    def active(self) -> bool:
        """Whether requests are stored at all (a spool in mode `off` only drains)."""
        return self.enabled and self.mode != "off"


def parse_spool(reader: TableReader) -> SpoolConfig:
    path = reader.string("path", SpoolConfig.path)
    if not path.strip():
        reader.problem("path", "must name a file, e.g. /var/lib/mixpanel-proxy/spool.db")
        path = SpoolConfig.path
    endpoints = reader.string_list("endpoints", SPOOLABLE)
    for name in endpoints:
        if name not in SPOOLABLE:
            reader.problem("endpoints", f"{name!r} cannot be spooled; expected some of "
                                        f"{', '.join(SPOOLABLE)}")
    backoff_min = reader.number("backoff_min", 2.0, minimum=0.01)
    backoff_max = reader.number("backoff_max", 60.0, minimum=0.01)
    if backoff_max < backoff_min:
        reader.problem("backoff_max", f"must be at least backoff_min ({backoff_min}), "
                                      f"got {backoff_max}")
        backoff_max = backoff_min
    config = SpoolConfig(
        enabled=reader.boolean("enabled", False),
        mode=reader.string("mode", "on_failure", choices=SPOOL_MODES),  # type: ignore[arg-type]
        path=path,
        max_bytes=reader.size("max_bytes", GIB, minimum=1024),
        endpoints=tuple(name for name in endpoints if name in SPOOLABLE),
        group_commit=reader.boolean("group_commit", True),
        backoff_min=backoff_min,
        backoff_max=backoff_max,
        retry_after_max=reader.number("retry_after_max", 3600.0, minimum=0),
        drain_batch=reader.integer("drain_batch", 64, minimum=1, maximum=10_000),
        drain_concurrency=reader.integer("drain_concurrency", 8, minimum=1, maximum=256),
        poll_interval=reader.number("poll_interval", 5.0, minimum=0.01),
        track_max_age=reader.number("track_max_age", float(TRACK_WINDOW), minimum=1),
        backend=reader.string("backend", "sqlite",  # type: ignore[arg-type]
                              choices=SPOOL_BACKENDS),
        fallback=reader.string("fallback", "none",  # type: ignore[arg-type]
                               choices=SPOOL_FALLBACKS),
        partitions=reader.integer("partitions", 16, minimum=1, maximum=1024),
        claim_after=reader.number("claim_after", 30.0, minimum=0.1, maximum=3600),
    )
    reader.finish()
    return config
