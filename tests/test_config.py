"""Config: every problem names its dotted key; `check` exits 2 on them; `serve` refuses to start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from proxy.config import ConfigError, load_config, parse_config

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"


def problems_of(data: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    return caught.value.problems


def test_embedded_default() -> None:
    config = load_config(None)
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8080)
    assert config.routing.default_region == "us"
    assert str(config.regions["eu"].url) == "https://api-eu.mixpanel.com"
    # The SDK's own default host for replay, kept while the region keeps Mixpanel's URL.
    assert str(config.regions["us"].base_url("record")) == "https://api-js.mixpanel.com"
    assert str(config.regions["us"].base_url("track")) == "https://api.mixpanel.com"


def test_moving_a_region_moves_every_endpoint() -> None:
    config = parse_config({"regions": {"us": {"url": "http://127.0.0.1:9"}}})
    assert str(config.regions["us"].base_url("record")) == "http://127.0.0.1:9"


def test_every_problem_is_named_by_key() -> None:
    found = problems_of({
        "server": {"listen": "nope", "trusted_proxies": ["10.0.0.0/33"], "colour": "red"},
        "routing": {"default_region": "mars", "strict": "yes", "aliases": {"e": "trak"}},
        "regions": {"eu": {"url": "ftp://x", "endpoints": {"bogus": "http://x"}}},
        "projects": [{"token": "", "region": "eu"}, {"token": "t", "region": "xx"}],
        "limits": {"body": {"track": "lots"}},
        "cors": {"allowed_origins": ["not an origin"]},
        "unknown_section": {},
    })
    keys = [line.split(":", 1)[0] for line in found]
    assert keys == [
        "server.listen", "server.trusted_proxies", "server.colour",
        "routing.default_region", "routing.strict", "routing.aliases.e",
        "regions.eu.url", "regions.eu.endpoints.bogus",
        "projects[0].token", "projects[1].region",
        "cors.allowed_origins", "limits.body.track", "unknown_section",
    ]


def test_duplicate_tokens_and_sizes() -> None:
    found = problems_of({"projects": [{"token": "abc", "region": "eu"},
                                      {"token": "abc", "region": "us"}]})
    assert found == ["projects[1].token: token abc… is listed twice"]
    config = parse_config({"limits": {"body": {"track": "1MiB", "record": 5000}}})
    assert config.limits.body["track"] == 1048576 and config.limits.body["record"] == 5000


def test_example_config_is_valid() -> None:
    load_config(EXAMPLE)


REMOVED = ("request coalescing was removed: it cost more CPU per request than it saved "
           "(issue 16); remove the [coalesce] section")


def test_a_coalesce_section_that_left_it_off_still_starts() -> None:
    """The section config.example.toml shipped, and an empty one, are read and ignored."""
    for section in ({}, {"enabled": False}, {"enabled": False, "slots": 8, "max_events": 2000}):
        config = parse_config({"coalesce": section, "routing": {"default_region": "eu"}})
        assert config.routing.default_region == "eu"


def test_a_coalesce_section_that_asks_for_it_stops_the_start(tmp_path: Path) -> None:
    assert problems_of({"coalesce": {"enabled": True, "slots": 8}}) == [
        f"coalesce.enabled: {REMOVED}"]
    # A key the section never had was an unknown key before; now it says why.
    assert problems_of({"coalesce": {"enabled": False, "max_wait": 0.01}}) == [
        f"coalesce.max_wait: {REMOVED}"]
    assert problems_of({"coalesce": {"enabled": "yes"}}) == [
        "coalesce.enabled: expected true or false, got a string 'yes'"]
    old = tmp_path / "old.toml"
    old.write_text("[coalesce]\nenabled = true\nslots = 8\nmax_events = 2000\n")
    with pytest.raises(ConfigError) as caught:
        load_config(old)
    assert caught.value.problems == [f"coalesce.enabled: {REMOVED}"]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy", *args], capture_output=True,
                          text=True, timeout=30, env=env)


@pytest.mark.slow   # the CLI as processes
def test_check_cli(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[routing]\ndefault_region = "mars"\n[server]\nlisten = "x"\n')
    result = run_cli("check", "--config", str(bad))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "server.listen: expected host:port such as 127.0.0.1:8080, got 'x'",
        "routing.default_region: must be one of us, eu, in, got 'mars'",
    ]
    good = tmp_path / "good.toml"
    good.write_text('[routing]\ndefault_region = "eu"\n')
    assert run_cli("check", "--config", str(good)).returncode == 0
    broken = tmp_path / "broken.toml"
    broken.write_text("[routing\n")
    result = run_cli("check", "--config", str(broken))
    assert result.returncode == 2 and "not valid TOML" in result.stderr


@pytest.mark.slow   # a relay process that refuses to start
def test_serve_refuses_a_bad_config_from_the_environment(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nworkers = 0\n')
    import os
    result = run_cli("serve", env={**os.environ, "MIXPANEL_PROXY_CONFIG": str(bad)})
    assert result.returncode == 2
    assert result.stderr.strip() == "server.workers: must be at least 1, got 0"
