"""`mixpanel-proxy check --online`: a real subprocess probing fake regions and a fake CDN."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import pytest

from tests.support.fake_cdn import FakeCdn
from tests.support.fakes import FakeUpstream

pytestmark = pytest.mark.slow   # the CLI as a real process, per test

LINE = re.compile(r"^(?P<name>.+?)\s+(?P<verdict>reachable|UNREACHABLE)\s+(?P<ms>[\d.]+) ms\s+"
                  r"(?P<url>\S+)\s+\((?P<detail>.*)\)$")


def write_config(path: Path, urls: dict[str, str], cdn_url: str, extra: str = "") -> Path:
    regions = "".join(f'[regions.{name}]\nurl = "{url}"\n' for name, url in urls.items())
    path.write_text(f'{regions}\n[assets]\ncdn_url = "{cdn_url}"\n\n[upstream]\n'
                    f"connect_timeout = 1.0\n\n{extra}", encoding="utf-8")
    return path


def urls(upstreams: dict[str, FakeUpstream]) -> dict[str, str]:
    return {name: fake.url for name, fake in upstreams.items()}


async def check_online(config: Path) -> tuple[int, dict[str, dict[str, str]], str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "check", "--online", "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    lines = out.decode().splitlines()
    assert lines[0] == f"{config}: ok", err.decode()
    targets = {}
    for line in lines[1:]:
        match = LINE.match(line)
        assert match, line
        targets[match["name"]] = match.groupdict()
    assert process.returncode is not None
    return process.returncode, targets, out.decode()


async def test_every_target_reachable(upstreams: dict[str, FakeUpstream], tmp_path: Path) -> None:
    cdn = FakeCdn()
    await cdn.start()
    try:
        config = write_config(tmp_path / "relay.toml", urls(upstreams), cdn.url,
                              '[health]\nprobe_path = "/health-probe"\n')
        code, targets, _ = await check_online(config)
        assert cdn.count("mixpanel-2-latest.min.js") == 1
    finally:
        await cdn.close()
    assert code == 0
    assert set(targets) == {"region us", "region eu", "region in", "cdn"}
    for target in targets.values():
        assert target["verdict"] == "reachable"
        assert float(target["ms"]) > 0
    assert targets["cdn"]["detail"] == "answered 200"
    assert targets["cdn"]["url"] == cdn.url + "mixpanel-2-latest.min.js"
    for fake in upstreams.values():        # one plain GET of the probe path, nothing else
        [probe] = fake.received
        assert (probe.method, probe.path, probe.body) == ("GET", "/health-probe", b"")


async def test_unreachable_region_and_broken_cdn_fail_the_check(
        upstreams: dict[str, FakeUpstream], tmp_path: Path) -> None:
    cdn = FakeCdn()
    await cdn.start()
    cdn.misbehave("status_500")
    record = upstreams["in"].url
    # US replay on a host of its own: probed as a target of its own.
    extra = f'[regions.us.endpoints]\nrecord = "{record}/replay"\n'
    config = write_config(tmp_path / "relay.toml", urls(upstreams), cdn.url, extra)
    assert upstreams["eu"].server is not None
    await upstreams["eu"].server.close()
    try:
        code, targets, _ = await check_online(config)
    finally:
        await cdn.close()
    assert code == 1
    assert targets["region us"]["verdict"] == "reachable"
    assert targets["region us/record"]["verdict"] == "reachable"
    assert targets["region us/record"]["url"] == f"{record}/replay/"
    assert targets["region eu"]["verdict"] == "UNREACHABLE"
    assert "cannot connect" in targets["region eu"]["detail"]
    assert (targets["cdn"]["verdict"], targets["cdn"]["detail"]) == ("UNREACHABLE",
                                                                     "answered 500")
    assert sorted(got.path for got in upstreams["in"].received) == ["/", "/replay/"]
