"""The `[health]` section: how readiness decides that a region is reachable."""

from __future__ import annotations

from dataclasses import dataclass

from ..endpoints import REGIONS
from .reader import TableReader


@dataclass(frozen=True)
class HealthConfig:
    probe_interval: float = 15.0         # seconds between probes of a quiet region; 0: no probes
    probe_path: str = "/"                # GET <region url><probe_path>; any non-5xx answer is up
    probe_timeout: float = 5.0           # seconds a probe may take
    max_age: float = 60.0                # a region's latest success must be this recent; 0: any
    regions: tuple[str, ...] = REGIONS   # the regions probed and reported by /readyz
    regions_given: bool = False          # False: the config's routed regions (see routed_regions)
    require_regions: bool = False        # an unreachable region fails /readyz (spool off only)


def parse_health(reader: TableReader) -> HealthConfig:
    probe_path = reader.string("probe_path", "/")
    if not probe_path.startswith("/") or "?" in probe_path or "#" in probe_path:
        reader.problem("probe_path", f"expected a path such as /, got {probe_path!r}")
        probe_path = "/"
    regions = reader.string_list("regions", REGIONS)
    unknown = [name for name in regions if name not in REGIONS]
    if unknown:
        reader.problem("regions", f"unknown region {unknown[0]!r}; expected some of "
                                  f"{', '.join(REGIONS)}")
        regions = REGIONS
    config = HealthConfig(
        probe_interval=reader.number("probe_interval", 15.0, minimum=0),
        probe_path=probe_path,
        probe_timeout=reader.number("probe_timeout", 5.0, minimum=0.01),
        max_age=reader.number("max_age", 60.0, minimum=0),
        regions=regions,
        regions_given=reader.has("regions"),
        require_regions=reader.boolean("require_regions", False),
    )
    if config.max_age and config.max_age < config.probe_interval:
        reader.problem("max_age", f"must be at least probe_interval ({config.probe_interval}), "
                                  f"or a quiet region turns stale between probes")
    reader.finish()
    return config
