"""What `check` finds beyond single keys: settings that parse but cannot work together.

`parse_config` refuses what no relay could run with; these are the problems a config can have on
a given host or in combination (a spool directory that is not there, strict mode that refuses
every request, an ops allow-list that lets everyone in), which `check` reports so that an
operator learns them before `serve` exits or the relay quietly refuses its traffic.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..endpoints import REGIONS

if TYPE_CHECKING:
    from . import Config

__all__ = ["deployment_problems", "routed_regions", "with_routed_health_regions"]


def routed_regions(config: Config) -> tuple[str, ...]:
    """The regions this config sends traffic to: the default one and each project's."""
    used = {config.routing.default_region, *(project.region for project in config.projects)}
    return tuple(name for name in REGIONS if name in used)


def with_routed_health_regions(config: Config) -> Config:
    """`[health] regions` defaults to the routed regions, not to every region Mixpanel has:
    most relays never send to India, and probing it only adds a region that can look down."""
    if config.health.regions_given:
        return config
    return replace(config, health=replace(config.health, regions=routed_regions(config)))


def deployment_problems(config: Config) -> list[str]:
    """One line per problem, each naming its dotted key, as `ConfigError` does."""
    problems: list[str] = []
    if config.spool.enabled:
        directory = Path(config.spool.path).parent
        if not directory.is_dir():
            problems.append(f"spool.path: the directory {str(directory)!r} does not exist; "
                            "create it (the systemd unit's StateDirectory does) or change the path")
    if config.routing.strict and not config.projects:
        problems.append("routing.strict: true with no [[projects]]: every request would be "
                        "refused with 403; list the projects this relay serves")
    # Behind a front, allow-lists used to be decided on the front's address (always allowed);
    # they are now decided on the client the front names, so the one list that still cannot
    # mean anything is one that admits every address.
    for network in config.metrics.allow:
        if network.prefixlen == 0:
            problems.append(f"metrics.allow: {network} admits every address: /metrics, /status "
                            "and the /readyz details would be public")
    return problems
