"""A typed reader over one TOML table that collects problems by dotted key.

Every section parser takes a `TableReader`, asks for each key with its type and default, and
calls `finish()`; problems are collected (not raised) so `check` can print all of them at once.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from yarl import URL

T = TypeVar("T")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    None: 1, "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3,
}


class ConfigError(Exception):
    """The config is unusable; `problems` holds one line per problem, each naming its key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class TableReader:
    """Reads typed values from `table`, recording problems under `prefix`-dotted keys."""

    def __init__(self, table: Any, prefix: str, problems: list[str]) -> None:
        self.prefix = prefix
        self.problems = problems
        self._seen: set[str] = set()
        if table is None:
            table = {}
        if not isinstance(table, dict):
            self.problem("", f"expected a table, got {_type_name(table)}")
            table = {}
        self._table: dict[str, Any] = table

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def problem(self, name: str, message: str) -> None:
        where = self.key(name) if name else self.prefix or "(top level)"
        self.problems.append(f"{where}: {message}")

    def has(self, name: str) -> bool:
        return name in self._table

    def raw(self, name: str) -> Any:
        self._seen.add(name)
        return self._table.get(name)

    def _typed(self, name: str, default: T, kind: type | tuple[type, ...], what: str) -> T:
        self._seen.add(name)
        if name not in self._table:
            return default
        value = self._table[name]
        # bool is an int subclass in Python; TOML keeps them apart, and so do we.
        if isinstance(value, bool) and bool not in _as_tuple(kind):
            self.problem(name, f"expected {what}, got a boolean")
            return default
        if not isinstance(value, kind):
            self.problem(name, f"expected {what}, got {_type_name(value)} {value!r}")
            return default
        return value  # type: ignore[return-value]

    def string(self, name: str, default: str, choices: tuple[str, ...] | None = None) -> str:
        value = self._typed(name, default, str, "a string")
        if choices is not None and value not in choices:
            self.problem(name, f"must be one of {', '.join(choices)}, got {value!r}")
            return default
        return value

    def boolean(self, name: str, default: bool) -> bool:
        return self._typed(name, default, bool, "true or false")

    def integer(self, name: str, default: int, minimum: int | None = None,
                maximum: int | None = None) -> int:
        value: int = self._typed(name, default, int, "an integer")
        bounded: int = self._bounded(name, value, default, minimum, maximum)
        return bounded

    def number(self, name: str, default: float, minimum: float | None = None,
               maximum: float | None = None) -> float:
        value = float(self._typed(name, default, (int, float), "a number"))
        bounded: float = self._bounded(name, value, default, minimum, maximum)
        return bounded

    def _bounded(self, name: str, value: Any, default: Any, minimum: Any, maximum: Any) -> Any:
        if minimum is not None and value < minimum:
            self.problem(name, f"must be at least {minimum}, got {value}")
            return default
        if maximum is not None and value > maximum:
            self.problem(name, f"must be at most {maximum}, got {value}")
            return default
        return value

    def size(self, name: str, default: int, minimum: int = 0) -> int:
        """A byte size: an integer, or a string such as "10MiB", "512KB", "2MB"."""
        self._seen.add(name)
        if name not in self._table:
            return default
        value = self._table[name]
        parsed = parse_size(value)
        if parsed is None:
            self.problem(name, f"expected a byte size such as 1048576 or \"10MiB\", got {value!r}")
            return default
        bounded: int = self._bounded(name, parsed, default, minimum, None)
        return bounded

    def string_list(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self._typed(name, list(default), list, "a list of strings")
        if not all(isinstance(item, str) for item in value):
            self.problem(name, "expected a list of strings")
            return default
        return tuple(value)

    def networks(self, name: str, default: tuple[str, ...]) -> tuple[Network, ...]:
        result = []
        for item in self.string_list(name, default):
            try:
                result.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                self.problem(name, f"{item!r} is not an IP address or CIDR network")
        return tuple(result)

    def url(self, name: str, default: str, schemes: tuple[str, ...] = ("http", "https")) -> URL:
        text = self.string(name, default)
        return checked_url(text, schemes, lambda msg: self.problem(name, msg)) or URL(default)

    def table(self, name: str) -> TableReader:
        self._seen.add(name)
        return TableReader(self._table.get(name), self.key(name), self.problems)

    def tables(self, name: str) -> Iterator[TableReader]:
        """An array of tables (`[[name]]`), each read at `name[i]`."""
        self._seen.add(name)
        value = self._table.get(name, [])
        if not isinstance(value, list):
            self.problem(name, "expected an array of tables ([[...]])")
            return
        for index, item in enumerate(value):
            yield TableReader(item, f"{self.key(name)}[{index}]", self.problems)

    def items(self) -> Iterator[tuple[str, Any]]:
        """Every key of a free-form table (aliases, per-endpoint maps); all count as seen."""
        for name, value in self._table.items():
            self._seen.add(name)
            yield name, value

    def finish(self) -> None:
        """Report every key nobody asked for: unknown keys are errors, never ignored."""
        for name in self._table:
            if name not in self._seen:
                self.problem(name, "unknown key")


def checked_url(text: str, schemes: tuple[str, ...], report: Callable[[str], None]) -> URL | None:
    try:
        url = URL(text)
    except ValueError as exc:
        report(f"{text!r} is not a URL ({exc})")
        return None
    if url.scheme not in schemes or not url.host:
        report(f"expected an absolute {' or '.join(schemes)} URL, got {text!r}")
        return None
    if url.query_string or url.fragment:
        report(f"must not carry a query or fragment, got {text!r}")
        return None
    return url


def parse_size(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if not isinstance(value, str):
        return None
    match = _SIZE.match(value)
    if not match:
        return None
    unit = match.group(2).lower() if match.group(2) else None
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _type_name(value: Any) -> str:
    return {dict: "a table", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)
