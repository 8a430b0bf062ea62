"""Sections the relay no longer has, read only so that the configs which did without them keep
starting, and the ones which relied on them stop with the reason.

`[coalesce]` merged concurrent /track requests into one upstream batch. It cost more CPU per
request than it saved, also against an HTTPS upstream (issue 16), and was removed. A section
that left it off still starts: `enabled = false`, and the `slots` and `max_events` that
config.example.toml shipped beside it, tuned nothing then and mean nothing now. `enabled = true`
is an error, because that config asked for a behaviour the relay no longer has; so is any other
key, as it was before the removal (an unknown key), now with the reason.
"""

from __future__ import annotations

from .reader import TableReader

COALESCE_REMOVED = ("request coalescing was removed: it cost more CPU per request than it saved "
                    "(issue 16); remove the [coalesce] section")
_COALESCE_IGNORED = ("slots", "max_events")


def check_coalesce(reader: TableReader) -> None:
    """Problems for a `[coalesce]` section that still asks for coalescing, none otherwise."""
    if reader.boolean("enabled", False):
        reader.problem("enabled", COALESCE_REMOVED)
    for name, _ in reader.items():
        if name != "enabled" and name not in _COALESCE_IGNORED:
            reader.problem(name, COALESCE_REMOVED)
