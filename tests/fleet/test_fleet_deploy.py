"""The fleet's deploy recipes (deploy/redis/, deploy/kubernetes/redis/): the relay configs they
mount parse, Redis runs with AOF and noeviction, the Redis URL comes from a Secret / the
environment and never sits in a config file. (Schemas: tests/test_deploy.py validates every
manifest under deploy/kubernetes/, these included.)"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.config import parse_config

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "deploy" / "redis"
KUBE = REPO / "deploy" / "kubernetes" / "redis"


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kind(name: str) -> dict[str, Any]:
    [found] = [doc for path in sorted(KUBE.glob("*.yaml")) for doc in documents(path)
               if doc["kind"] == name]
    return found


def redis_flags(args: list[str]) -> dict[str, str]:
    return {args[n][2:]: args[n + 1] for n in range(len(args) - 1) if args[n].startswith("--")}


def test_compose_runs_three_relays_on_redis_with_aof(monkeypatch: pytest.MonkeyPatch) -> None:
    compose = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    redis, relay = compose["services"]["redis"], compose["services"]["relay"]
    flags = redis_flags(redis["command"])
    assert flags["appendonly"] == "yes" and flags["appendfsync"] in ("everysec", "always")
    assert flags["maxmemory-policy"] == "noeviction"
    assert relay["deploy"]["replicas"] == 3
    assert "./relay.toml:/etc/mixpanel-proxy/config.toml:ro" in relay["volumes"]
    url = relay["environment"]["MIXPANEL_PROXY_REDIS_URL"].replace(
        "${REDIS_PASSWORD:?set REDIS_PASSWORD}", "pw")
    monkeypatch.setenv("MIXPANEL_PROXY_REDIS_URL", url)
    config = parse_config(tomllib.loads((COMPOSE / "relay.toml").read_text()))
    assert (config.spool.backend, config.limits.rate.backend) == ("redis", "redis")
    assert config.redis.url == "redis://:pw@redis:6379/0"
    assert config.spool.path.startswith("/var/lib/mixpanel-proxy/")
    assert any(volume.endswith(":/var/lib/mixpanel-proxy") for volume in relay["volumes"])


def test_kubernetes_variant_reads_the_url_from_the_secret(
        monkeypatch: pytest.MonkeyPatch) -> None:
    secret, deployment = kind("Secret"), kind("Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item for item in container["env"]}
    reference = env["MIXPANEL_PROXY_REDIS_URL"]["valueFrom"]["secretKeyRef"]
    assert reference == {"name": secret["metadata"]["name"], "key": "url"}
    monkeypatch.setenv("MIXPANEL_PROXY_REDIS_URL", secret["stringData"]["url"])
    configmap = kind("ConfigMap")
    assert deployment["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] == (
        configmap["metadata"]["name"])
    config = parse_config(tomllib.loads(configmap["data"]["config.toml"]))
    assert (config.spool.backend, config.spool.fallback) == ("redis", "none")
    assert config.redis.configured and "CHANGE-ME" not in repr(config.redis)
    redis = kind("StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    flags = redis_flags(redis["args"])
    assert flags["appendonly"] == "yes" and flags["maxmemory-policy"] == "noeviction"
    assert flags["requirepass"] == "$(REDIS_PASSWORD)"
