"""deploy/systemd/: the unit as systemd reads it (`systemd-analyze verify`, from Debian's
`systemd` package), what it promises checked against the relay it runs, and the relay run as the
unit runs it (pid file, runtime directory, SIGHUP reload).
"""

from __future__ import annotations

import configparser
import os
import shutil
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from proxy.config import load_config
from proxy.config.crosscheck import deployment_problems
from proxy.server.supervisor import KILL_GRACE
from tests.conftest import relay_config
from tests.support.fakes import FakeUpstream
from tests.support.processes import REPO, RelayProcess
from tests.support.waits import eventually

UNIT = REPO / "deploy" / "systemd" / "mixpanel-proxy.service"
CONFIG = REPO / "deploy" / "systemd" / "relay.toml"
VENV_BIN = "/opt/mixpanel-proxy/bin/mixpanel-proxy"
HARDENING = ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices",
             "ProtectKernelTunables", "ProtectControlGroups", "RestrictAddressFamilies",
             "SystemCallFilter", "CapabilityBoundingSet", "RestrictSUIDSGID", "LockPersonality")


def service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str      # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser["Service"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs Debian's systemd")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    entry_point = shutil.which("mixpanel-proxy")
    assert entry_point, "the project is installed (pip install -e .)"
    unit = tmp_path / "mixpanel-proxy.service"
    unit.write_text(UNIT.read_text().replace(VENV_BIN, entry_point))   # only where it lives
    checked = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0 and not checked.stderr.strip(), checked.stderr


def test_the_unit_runs_the_relay_it_documents() -> None:
    unit = service()
    assert unit["Type"] == "exec" and unit["User"] == unit["Group"] == "mixpanel-proxy"
    assert unit["ExecStart"].split()[:2] == [VENV_BIN, "serve"]
    pid_file = unit["ExecStart"].split("--pid-file ")[1]
    assert pid_file == unit["PIDFile"]
    assert pid_file.startswith(f"/run/{unit['RuntimeDirectory']}/")
    assert unit["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert unit["ExecStartPre"] == f"{VENV_BIN} check"
    config_path = unit["Environment"].removeprefix("MIXPANEL_PROXY_CONFIG=")
    assert config_path == f"/etc/{unit['ConfigurationDirectory']}/relay.toml"
    for key in HARDENING:
        assert key in unit, key
    # The production config keeps its state where the unit's StateDirectory is.
    state = f"/var/lib/{unit['StateDirectory']}/"
    data = tomllib.loads(CONFIG.read_text())
    assert data["spool"]["path"].startswith(state) and data["spool"]["enabled"] is True
    assert data["assets"]["disk_dir"].startswith(state)
    assert {"mixpanel-2-latest.min.js", "mixpanel-recorder.min.js"} <= set(
        data["assets"]["prefetch"])
    config = load_config(CONFIG)
    # systemd's stop timeout outlasts the relay's drain and its kill grace.
    assert int(unit["TimeoutStopSec"]) > config.server.shutdown_timeout + KILL_GRACE
    assert config.log.format == "json"
    problems = deployment_problems(config)          # only the state dir, absent on this host
    assert all(problem.startswith("spool.path: the directory") for problem in problems)


@pytest.mark.slow
async def test_serve_as_the_unit_runs_it(upstreams: dict[str, FakeUpstream],
                                         tmp_path: Path) -> None:
    runtime = tmp_path / "run"
    runtime.mkdir()
    pid_file = runtime / "mixpanel-proxy.pid"
    relay = RelayProcess(tmp_path, relay_config(upstreams, {"server": {"workers": 2}}))
    env = {**os.environ, "RUNTIME_DIRECTORY": str(runtime)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with open(tmp_path / "relay.out", "wb") as out, open(tmp_path / "relay.err", "wb") as err:
        relay.process = subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", "--config", str(relay.config_path),
             "--pid-file", str(pid_file)], stdout=out, stderr=err, cwd=REPO, env=env)
    try:
        await eventually(lambda: "listening on" in relay.stdout, what="the relay to listen")
        assert pid_file.read_text() == f"{relay.pid}\n"
        await eventually(lambda: len(list((runtime / "metrics").glob("*.db"))) >= 2,
                         what="the workers' metrics files under $RUNTIME_DIRECTORY")
        os.kill(int(pid_file.read_text()), signal.SIGHUP)     # ExecReload
        await eventually(lambda: "reloaded " in relay.stderr, what="the reload")
    finally:
        await relay.stop()
    assert relay.process.returncode == 0
    assert not pid_file.exists() and not (runtime / "metrics").exists()


@pytest.mark.slow
async def test_reload_warnings_name_the_address_still_listened_on(
        upstreams: dict[str, FakeUpstream], tmp_path: Path) -> None:
    relay = RelayProcess(tmp_path, relay_config(upstreams))
    await relay.start()
    try:
        for moved in ("127.0.0.1:1", "127.0.0.1:2"):          # `listen` changed twice
            relay.write_config(relay_config(upstreams, {"server": {"listen": moved}}))
            await relay.reload()
    finally:
        await relay.stop()
    warnings = [line for line in relay.stderr.splitlines() if "server.listen changed" in line]
    assert warnings == [f"server.listen changed: the listening socket stays on "
                        f"127.0.0.1:{relay.port} until a restart"] * 2


def readme_block(step: str) -> list[str]:
    """The shell lines of one step of README "Production on Debian"."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Production on Debian"):]
    block = section[section.index(step):].split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip()]


def test_the_readme_installs_what_these_tests_run() -> None:
    """tests/support/debian_nginx.py follows step 3 exactly (the directory copied, the site
    symlinked), and tests/test_nginx_debian.py runs it inside Debian's stock nginx.conf."""
    assert readme_block("**3. nginx") == [
        "sudo cp -r nginx /etc/nginx/mixpanel-proxy",
        "sudo ln -s /etc/nginx/mixpanel-proxy/mixpanel-proxy.conf "
        "/etc/nginx/sites-enabled/mixpanel-proxy",
        "sudo sed -i 's/mp\\.example\\.com/YOUR.RELAY.NAME/' "
        "/etc/nginx/mixpanel-proxy/mixpanel-proxy.conf",
        "sudo install -d /var/cache/nginx/mixpanel-proxy",
    ]
    assert "mp.example.com" in (REPO / "nginx" / "mixpanel-proxy.conf").read_text()
