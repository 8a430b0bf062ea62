"""The [log], [health] and [metrics] listen keys: defaults, and errors that name the key."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from proxy.config import ConfigError, parse_config


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse_config(data)
    return raised.value.problems


def test_defaults() -> None:
    config = parse_config({})
    assert (config.log.level, config.log.access, config.log.client_ip) == ("info", True,
                                                                           "truncated")
    assert (config.health.probe_interval, config.health.max_age) == (15.0, 60.0)
    assert config.health.regions == ("us",)     # the routed regions: default_region alone
    assert config.metrics.listen is None
    assert parse_config({"metrics": {"listen": "0.0.0.0:9090"}}).metrics.listen == ("0.0.0.0",
                                                                                    9090)


@pytest.mark.parametrize(("data", "expected"), [
    ({"log": {"level": "loud"}}, "log.level: must be one of debug, info, warning, error"),
    ({"log": {"access": "yes"}}, "log.access: expected true or false"),
    ({"log": {"client_ip": "hashed"}}, "log.client_ip: must be one of full, truncated, omitted"),
    ({"log": {"format": "xml"}}, "log.format: must be one of text, json"),
    ({"health": {"probe_path": "health"}}, "health.probe_path: expected a path such as /"),
    ({"health": {"regions": ["us", "mars"]}}, "health.regions: unknown region 'mars'"),
    ({"health": {"probe_interval": -1}}, "health.probe_interval: must be at least 0"),
    ({"health": {"probe_interval": 30, "max_age": 10}},
     "health.max_age: must be at least probe_interval (30.0)"),
    ({"metrics": {"listen": "9090"}}, "metrics.listen: expected host:port"),
])
def test_errors_name_the_key(data: dict[str, Any], expected: str) -> None:
    [problem] = problems(data)
    assert problem.startswith(expected), problem


def test_the_example_file_holds_every_key() -> None:
    text = (Path(__file__).parent.parent / "config.example.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    assert set(data["log"]) == {"level", "access", "client_ip", "format"}
    assert set(data["health"]) == {"probe_interval", "probe_path", "probe_timeout", "max_age",
                                   "regions", "require_regions"}
    assert "# listen = " in text
    parse_config(data)
