"""The `[privacy]` section: what the relay removes or blurs in payloads before Mixpanel sees them.

Off by default: with every key at its default, no payload is decoded for privacy's sake.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from .reader import TableReader

IP_POLICIES: Final = ("full", "truncated", "omitted")
# Mixpanel deduplicates on (event, distinct_id, time, $insert_id) and routes on the token: no
# policy may drop or rewrite these (wire contract 6 and 8.13).
NEVER_ALTERED: Final = frozenset({"token", "distinct_id", "time", "$insert_id"})
# An allow-list keeps these as well: without them identity merge breaks, silently.
ALWAYS_KEPT: Final = NEVER_ALTERED | {"$device_id", "$user_id"}


@dataclass(frozen=True)
class PrivacyConfig:
    drop_properties: tuple[str, ...] = ()          # removed wherever properties live
    allow_properties: tuple[str, ...] = ()         # when set: only these (and ALWAYS_KEPT) stay
    redact_patterns: tuple[re.Pattern[str], ...] = ()
    redact_marker: str = "[redacted]"
    ip: str = "full"                               # full | truncated (/24, /48) | omitted
    ipv4_prefix: int = 24
    ipv6_prefix: int = 48

    @property
    def rewrites_payloads(self) -> bool:
        """Whether any rule needs to see inside track/engage/groups/import payloads."""
        return bool(self.drop_properties or self.allow_properties or self.redact_patterns
                    or self.ip != "full")


def parse_privacy(reader: TableReader) -> PrivacyConfig:
    config = PrivacyConfig(
        drop_properties=_property_names(reader, "drop_properties", protect=True),
        allow_properties=_property_names(reader, "allow_properties", protect=False),
        redact_patterns=_patterns(reader),
        redact_marker=reader.string("redact_marker", "[redacted]"),
        ip=reader.string("ip", "full", choices=IP_POLICIES),
        ipv4_prefix=reader.integer("ipv4_prefix", 24, minimum=0, maximum=32),
        ipv6_prefix=reader.integer("ipv6_prefix", 48, minimum=0, maximum=128),
    )
    reader.finish()
    return config


def _property_names(reader: TableReader, key: str, protect: bool) -> tuple[str, ...]:
    names = reader.string_list(key, ())
    for name in names:
        if not name:
            reader.problem(key, "a property name cannot be empty")
        elif protect and name in NEVER_ALTERED:
            reader.problem(key, f"{name!r} is never altered: Mixpanel routes or deduplicates "
                                "events by it")
    return tuple(name for name in names if name and not (protect and name in NEVER_ALTERED))


def _patterns(reader: TableReader) -> tuple[re.Pattern[str], ...]:
    patterns = []
    for index, text in enumerate(reader.string_list("redact_patterns", ())):
        where = f"redact_patterns[{index}]"
        try:
            pattern = re.compile(text)
        except re.error as exc:
            reader.problem(where, f"{text!r} is not a valid regular expression ({exc})")
            continue
        if matches_empty(pattern):
            reader.problem(where, f"{text!r} can match the empty string (a boundary, a "
                                  "lookaround, an optional part), so it would insert the marker "
                                  "between characters instead of replacing what it was meant for")
            continue
        patterns.append(pattern)
    return tuple(patterns)


# Values a pattern is tried on: words, an email, digits, punctuation, spaces, non-ASCII. A pattern
# that matches zero characters anywhere in them (`\b`, `(?=@)`, `x*`) would be applied at every
# such position of every string; "" alone misses all of those.
_EMPTY_MATCH_PROBES = ("", "a", "word", "two words", "user@example.com", "+1 (555) 010-9999",
                       "1234", "a.b-c_d", "  ", "é", "\n")


def matches_empty(pattern: re.Pattern[str]) -> bool:
    return any(match.start() == match.end()
               for sample in _EMPTY_MATCH_PROBES for match in pattern.finditer(sample))
