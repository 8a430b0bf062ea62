"""`[redis]`: the Redis a fleet of relays shares (`[spool] backend = "redis"`,
`[limits.rate] backend = "redis"`).

`url` is taken as redis-py takes it: `redis://[user:password@]host[:port][/db]`, `rediss://` for
TLS, `unix:///path/to/redis.sock`. Credentials live in the URL (or in the environment variable
named by `url_env`, so a Kubernetes Secret never sits in the config file).

`wait_replicas` > 0 makes every spool write wait (Redis `WAIT`) until that many replicas have
it, at most `wait_timeout` seconds; fewer in time counts as a failed write, never a success.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from yarl import URL

from .reader import TableReader

REDIS_SCHEMES = ("redis", "rediss", "unix")


@dataclass(frozen=True)
class RedisConfig:
    url: str = field(default="", repr=False)   # empty: no Redis; repr: never print a password
    key_prefix: str = "mixpanel-proxy"
    connect_timeout: float = 1.0      # seconds; a relay never waits long on a dead Redis
    timeout: float = 2.0              # seconds per command
    wait_replicas: int = 0            # WAIT for this many replicas after a spool write
    wait_timeout: float = 1.0         # seconds WAIT may take
    retry_interval: float = 1.0       # seconds between reconnection attempts once it is down

    @property
    def configured(self) -> bool:
        return bool(self.url)

    def redacted_url(self) -> str:
        """The URL without its password, for logs and /readyz."""
        try:
            url = URL(self.url)
        except ValueError:
            return "(unparsable URL)"
        return str(url.with_password("***")) if url.password else str(url)


def parse_redis(reader: TableReader) -> RedisConfig:
    url = reader.string("url", "")
    env_name = reader.string("url_env", "")
    if env_name:
        if url:
            reader.problem("url_env", "set either url or url_env, not both")
        url = os.environ.get(env_name, "")
        if not url:
            reader.problem("url_env", f"the environment variable {env_name!r} is unset or empty")
    if url:
        problem = url_problem(url)
        if problem:
            reader.problem("url_env" if env_name else "url", problem)
            url = ""
    prefix = reader.string("key_prefix", RedisConfig.key_prefix)
    if not prefix or any(char in prefix for char in "{} \t\r\n"):
        reader.problem("key_prefix", "must be non-empty, without braces or whitespace")
        prefix = RedisConfig.key_prefix
    config = RedisConfig(
        url=url, key_prefix=prefix,
        connect_timeout=reader.number("connect_timeout", 1.0, minimum=0.01, maximum=60),
        timeout=reader.number("timeout", 2.0, minimum=0.01, maximum=60),
        wait_replicas=reader.integer("wait_replicas", 0, minimum=0, maximum=64),
        wait_timeout=reader.number("wait_timeout", 1.0, minimum=0.001, maximum=60),
        retry_interval=reader.number("retry_interval", 1.0, minimum=0.01, maximum=600),
    )
    reader.finish()
    return config


def url_problem(text: str) -> str | None:
    """What is wrong with a Redis URL (never echoing a password), or None."""
    try:
        url = URL(text)
    except ValueError:
        return "is not a URL"
    if url.scheme not in REDIS_SCHEMES:
        return (f"expected a redis://, rediss:// or unix:// URL, got scheme {url.scheme!r}")
    if url.scheme == "unix":
        return None if url.path not in ("", "/") else "a unix:// URL needs a socket path"
    if not url.host:
        return "needs a host, e.g. redis://127.0.0.1:6379/0"
    database = url.path.strip("/")
    if database and not database.isdigit():
        return f"the path must be a database number, got {database!r}"
    return None
