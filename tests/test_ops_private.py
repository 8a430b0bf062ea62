"""Ops endpoints decided on the resolved client, honest readiness, and what `check` catches.

An outside client is simulated the way it reaches the relay behind the front: the TCP peer is
the trusted front (127.0.0.1), which names the client in `X-Forwarded-For`.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from proxy.cli import main
from proxy.config import parse_config
from proxy.config.crosscheck import deployment_problems
from proxy.config.privacy import matches_empty
from proxy.ops.accesslog import ACCESS_LOGGER
from tests.conftest import RelayFactory
from tests.support.fakes import FakeUpstream
from tests.support.helpers import FORM, browser_form, event

OUTSIDE = {"X-Forwarded-For": "203.0.113.9"}       # as the front forwards an outside client
OPERATOR = {"X-Forwarded-For": "127.0.0.1"}        # curl on the front's own host


async def test_scrapes_through_a_front_are_decided_on_the_client_it_names(
        make_relay: RelayFactory) -> None:
    client = await make_relay()      # defaults: trusted_proxies and allow are loopback
    for path in ("/metrics", "/status"):
        refused = await client.get(path, headers=OUTSIDE)
        assert refused.status == 403, path
        assert await refused.json() == {
            "status": 0, "error": f"{path} is served only to [metrics] allow addresses"}
        assert (await client.get(path, headers=OPERATOR)).status == 200
    # An untrusted peer cannot claim to be the operator: the relay trusts no XFF from it.
    direct = await make_relay({"server": {"trusted_proxies": []},
                               "metrics": {"allow": ["10.0.0.0/8"]}})
    assert (await direct.get("/metrics", headers={"X-Forwarded-For": "10.1.2.3"})).status == 403


async def test_readyz_details_stay_inside(make_relay: RelayFactory, tmp_path: Path) -> None:
    spool = tmp_path / "spool.db"
    client = await make_relay({"spool": {"enabled": True, "path": str(spool)}})
    outside = await (await client.get("/readyz", headers=OUTSIDE)).text()
    assert json.loads(outside) == {"ready": True, "failed": [], "unreachable": ["us"]}
    assert str(tmp_path) not in outside and "127.0.0.1" not in outside
    inside = await (await client.get("/readyz", headers=OPERATOR)).json()
    assert inside["checks"]["spool"]["detail"] == f"{tmp_path} is writable"
    assert inside["checks"]["config"]["ok"] is True


async def test_refused_scrapes_and_failing_probes_are_logged(
        make_relay: RelayFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, ACCESS_LOGGER.name)
    client = await make_relay({"log": {"client_ip": "full"}})
    await client.get("/healthz", headers=OUTSIDE)          # a passing probe: not logged
    await client.get("/metrics", headers=OUTSIDE)
    await client.get("/metrics", headers=OPERATOR)
    lines = [json.loads(record.getMessage()) for record in caplog.records
             if record.name == ACCESS_LOGGER.name]
    assert [(line["path"], line["status"], line["reason"], line["client_ip"])
            for line in lines] == [("/metrics", 403, "ops_refused", "203.0.113.9"),
                                   ("/metrics", 200, "", "127.0.0.1")]
    assert {line["endpoint"] for line in lines} == {"ops"}


async def test_a_region_outage_leaves_a_spooling_relay_ready(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream], tmp_path: Path) -> None:
    client = await make_relay({"spool": {"enabled": True, "path": str(tmp_path / "s.db")}})
    await upstreams["us"].go_down()
    response = await client.post("/track", data=browser_form([event("tok")]), headers=FORM)
    assert response.status == 200            # the spool took it
    ready = await client.get("/readyz", headers=OPERATOR)
    body = await ready.json()
    assert (ready.status, body["ready"], body["failed"]) == (200, True, [])
    assert body["unreachable"] == ["us"]
    assert "cannot connect" in body["regions"]["us"]["detail"]
    assert set(body["regions"]) == {"us"}    # only the routed region, not eu or in


async def test_regions_gate_readiness_only_when_asked_and_spool_off(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay({"health": {"require_regions": True}})
    await upstreams["us"].go_down()
    await client.post("/track", data=browser_form([event("tok")]), headers=FORM)
    ready = await client.get("/readyz", headers=OPERATOR)
    assert (ready.status, (await ready.json())["failed"]) == (503, ["region.us"])
    with pytest.raises(Exception, match="health.require_regions: cannot be used with"):
        parse_config({"health": {"require_regions": True}, "spool": {"enabled": True}})


def test_health_regions_are_the_routed_ones() -> None:
    config = parse_config({"routing": {"default_region": "eu"},
                           "projects": [{"token": "t_in", "region": "in"}]})
    assert config.health.regions == ("eu", "in")
    explicit = parse_config({"health": {"regions": ["us", "eu", "in"]}})
    assert explicit.health.regions == ("us", "eu", "in")


def run_check(tmp_path: Path, data: dict[str, Any],
              capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    path = tmp_path / "relay.toml"
    path.write_text(tomli_w.dumps(data))
    code = main(["check", "--config", str(path)])
    return code, capsys.readouterr().err.splitlines()


def test_check_catches_what_serve_refuses_or_cannot_work(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no-such-dir" / "spool.db"
    code, problems = run_check(tmp_path, {
        "spool": {"enabled": True, "path": str(missing)},
        "routing": {"strict": True},
        "metrics": {"allow": ["10.0.0.0/8", "0.0.0.0/0"]},
    }, capsys)
    assert code == 2
    assert [line.split(":", 1)[0] for line in problems] == [
        "spool.path", "routing.strict", "metrics.allow"]
    assert "does not exist" in problems[0]
    assert "0.0.0.0/0 admits every address" in problems[2]
    (tmp_path / "no-such-dir").mkdir()
    code, problems = run_check(tmp_path, {"spool": {"enabled": True, "path": str(missing)}},
                               capsys)
    assert (code, problems) == (0, [])


@pytest.mark.parametrize("pattern", [r"\b", r"(?=@)", r"x*", r"(?<=\s)", r"\B", r"[0-9]?"])
def test_redact_patterns_that_match_empty_anywhere_are_refused(pattern: str) -> None:
    assert matches_empty(re.compile(pattern))
    with pytest.raises(Exception, match=re.escape("redact_patterns[0]")):
        parse_config({"privacy": {"redact_patterns": [pattern]}})


def test_ordinary_redact_patterns_pass() -> None:
    for pattern in (r"[\w.+-]+@[\w-]+\.[\w.]+", r"\b\d{3}-\d{4}\b", r"secret"):
        assert not matches_empty(re.compile(pattern)), pattern
    assert not deployment_problems(parse_config({}))


async def test_strict_mode_says_plainly_that_no_token_was_sent(make_relay: RelayFactory) -> None:
    client = await make_relay({"routing": {"strict": True}}, projects=True)
    response = await client.post("/engage/", data=browser_form([{"$distinct_id": "u"}]),
                                 headers=FORM)
    assert response.status == 403
    assert (await response.json())["error"] == (
        "the request names no project token, and strict mode serves only listed projects: "
        "not a project this relay serves")
