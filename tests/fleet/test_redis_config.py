"""`[redis]` and the sections that choose a Redis backend: every problem names its key, and a
password never appears in an error, a repr or /readyz."""

from __future__ import annotations

import pytest

from proxy.config import ConfigError, parse_config


def problems(data: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    return caught.value.problems


def test_url_as_redis_py_takes_it_with_tls_and_auth() -> None:
    config = parse_config({"redis": {"url": "rediss://relay:s3cret@redis.internal:6380/2",
                                     "wait_replicas": 1, "wait_timeout": 0.5}})
    assert config.redis.url == "rediss://relay:s3cret@redis.internal:6380/2"
    assert (config.redis.wait_replicas, config.redis.wait_timeout) == (1, 0.5)
    assert "s3cret" not in repr(config.redis)
    assert "s3cret" not in config.redis.redacted_url()
    assert parse_config({"redis": {"url": "unix:///run/redis.sock"}}).redis.configured
    assert not parse_config({}).redis.configured


@pytest.mark.parametrize(("url", "says"), [
    ("http://127.0.0.1:6379", "expected a redis://, rediss:// or unix:// URL"),
    ("redis:///0", "needs a host"),
    ("redis://127.0.0.1/zero", "must be a database number"),
    ("redis://u:s3cret@h:99999/0", "is not a URL"),
])
def test_bad_url_names_the_key_and_never_the_password(url: str, says: str) -> None:
    found = problems({"redis": {"url": url}})
    assert len(found) == 1 and found[0].startswith("redis.url: ") and says in found[0]
    assert "s3cret" not in found[0]


def test_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_REDIS_URL", "redis://:pw@127.0.0.1:6379/0")
    assert parse_config({"redis": {"url_env": "FLEET_REDIS_URL"}}).redis.configured
    assert problems({"redis": {"url_env": "FLEET_NO_SUCH_VAR"}}) == [
        "redis.url_env: the environment variable 'FLEET_NO_SUCH_VAR' is unset or empty"]


def test_backends_need_a_redis_url() -> None:
    assert problems({"spool": {"enabled": True, "backend": "redis"},
                     "limits": {"rate": {"backend": "redis"}}}) == [
        'redis.url: required by spool.backend = "redis"; e.g. url = "redis://127.0.0.1:6379/0"',
        'redis.url: required by limits.rate.backend = "redis"; '
        'e.g. url = "redis://127.0.0.1:6379/0"']
    found = problems({"limits": {"rate": {"backend": "memcached"}},
                      "spool": {"backend": "postgres", "fallback": "disk"},
                      "redis": {"url": "redis://127.0.0.1:6379", "wait_replicas": -1,
                                "colour": "red"}})
    assert sorted(found) == sorted([
        "limits.rate.backend: must be one of local, redis, got 'memcached'",
        "spool.backend: must be one of sqlite, redis, got 'postgres'",
        "spool.fallback: must be one of sqlite, none, got 'disk'",
        "redis.wait_replicas: must be at least 0, got -1",
        "redis.colour: unknown key"])


def test_defaults_stay_local_and_sqlite() -> None:
    config = parse_config({})
    assert config.limits.rate.backend == "local"
    assert (config.spool.backend, config.spool.fallback) == ("sqlite", "none")
