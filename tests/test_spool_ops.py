"""Operating the spool: its config, a corrupt file at start, `mixpanel-proxy spool ...`."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from proxy.app import create_app
from proxy.cli import main
from proxy.config import ConfigError, parse_config
from proxy.spool import SpoolError
from tests.conftest import US_TOKEN, RelayFactory, relay_config
from tests.support.fakes import FakeUpstream
from tests.support.helpers import FORM, browser_form
from tests.support.processes import REPO
from tests.support.waits import eventually
from tests.test_spool import fresh, on_disk, spool_config


def test_spool_config_defaults_and_problems() -> None:
    config = parse_config({})
    assert (config.spool.enabled, config.spool.mode, config.spool.max_bytes) == (
        False, "on_failure", 1024**3)
    with pytest.raises(ConfigError) as caught:
        parse_config({"spool": {"mode": "sometimes", "endpoints": ["settings"],
                                "max_bytes": "lots", "backoff_min": 5, "backoff_max": 1,
                                "colour": "red"}})
    problems = "\n".join(caught.value.problems)
    assert "spool.mode: must be one of on_failure, always, off, got 'sometimes'" in problems
    assert "spool.endpoints: 'settings' cannot be spooled" in problems
    assert "spool.max_bytes: expected a byte size" in problems
    assert "spool.backoff_max: must be at least backoff_min (5.0), got 1.0" in problems
    assert "spool.colour: unknown key" in problems


def write_config(tmp_path: Path, upstreams: dict[str, FakeUpstream] | None = None,
                 **spool: Any) -> Path:
    data = relay_config(upstreams, spool_config(tmp_path, **spool)) if upstreams else \
        spool_config(tmp_path, **spool)
    path = tmp_path / "relay.toml"
    path.write_text(tomli_w.dumps({**data, "server": {"listen": "127.0.0.1:0"}}))
    return path


def serve(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy", "serve", "--config", str(config)],
                          capture_output=True, text=True, timeout=60, cwd=REPO)


def damage_pages(path: Path) -> None:
    """A real spool with data, then garbage over its pages past the header."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE filler (data BLOB)")
    conn.executemany("INSERT INTO filler VALUES (?)", [(b"x" * 3000,) for _ in range(40)])
    conn.commit()
    conn.close()
    with open(path, "r+b") as file:
        file.seek(4096 * 2)
        file.write(b"\xde\xad\xbe\xef" * 4096)


@pytest.mark.slow   # relay processes that refuse to start
@pytest.mark.parametrize("corrupt", ["not_sqlite", "damaged_pages"])
def test_corrupt_spool_stops_the_start(tmp_path: Path, corrupt: str) -> None:
    spool = tmp_path / "spool.db"
    if corrupt == "not_sqlite":
        spool.write_bytes(b"these are not the bytes of a database\n" * 200)
    else:
        damage_pages(spool)
    before = spool.read_bytes()
    result = serve(write_config(tmp_path))
    assert result.returncode == 3, result.stderr
    assert f"spool.path: {spool}: the spool database is corrupt" in result.stderr
    assert "listening" not in result.stdout
    assert spool.read_bytes() == before        # kept as it was, for recovery


async def test_corrupt_spool_fails_the_app_startup(tmp_path: Path, aiohttp_client: Any) -> None:
    (tmp_path / "spool.db").write_bytes(b"garbage" * 1000)
    app = create_app(parse_config(spool_config(tmp_path)))
    with pytest.raises(SpoolError, match="spool.db: the spool database is corrupt"):
        await aiohttp_client(app)


async def test_status_retry_dead_and_purge(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    us = upstreams["us"]
    config = str(write_config(tmp_path, upstreams))
    us.answer(503)
    client = await make_relay(spool_config(tmp_path))
    body = browser_form(fresh(US_TOKEN))
    assert (await client.post("/track/", data=body, headers=FORM)).status == 200
    us.answer(403, {"status": 0, "error": "forbidden"}, {"Content-Type": "application/json"})
    await eventually(lambda: on_disk(tmp_path, "dead"), what="the dead letter")

    assert main(["spool", "retry-dead", "--config", config]) == 1    # the relay holds it
    assert "a running relay is draining this spool" in capsys.readouterr().err
    assert main(["spool", "status", "--config", config]) == 0         # reading is fine
    out = capsys.readouterr().out
    assert "drained by a running relay" in out
    assert "dead letters: 1 requests" in out and "1 x HTTP 403: the upstream answered 403" in out
    await client.close()

    assert main(["spool", "retry-dead", "--config", config]) == 0
    assert "1 dead letters moved back to the queue" in capsys.readouterr().out
    assert [bytes(row["body"]) for row in on_disk(tmp_path)] == [body]
    assert on_disk(tmp_path, "dead") == []
    us.answer(200)
    us.clear()
    restarted = await make_relay(spool_config(tmp_path))       # the retried entry goes out
    await eventually(lambda: not on_disk(tmp_path), what="the retried delivery")
    assert [received.body for received in us.received] == [body]
    await restarted.close()

    assert main(["spool", "purge", "--config", config]) == 0
    assert "purged 0 dead letters" in capsys.readouterr().out
    assert main(["spool", "status", "--config", config]) == 0
    assert "waiting: 0 requests, 0 bytes" in capsys.readouterr().out


def test_spool_command_without_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["spool", "status", "--config", str(write_config(tmp_path))]) == 1
    assert "spool.db: no spool file here" in capsys.readouterr().err


async def test_two_relays_share_a_file_and_one_drains(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream], tmp_path: Path) -> None:
    """Workers (and a reload's overlapping generations) share the file: every one stores into
    it, one drains it, and another takes over when that one stops."""
    us = upstreams["us"]
    first = await make_relay(spool_config(tmp_path))
    second = await make_relay(spool_config(tmp_path))
    await us.go_down()
    bodies = [browser_form(fresh(US_TOKEN, f"e{n}")) for n in range(4)]
    for n, body in enumerate(bodies):
        relay = first if n % 2 else second
        assert (await relay.post("/track/", data=body, headers=FORM)).status == 200
    assert len(on_disk(tmp_path)) == 4
    await first.close()                       # the drain owner stops; the other takes over
    await us.come_back()
    await eventually(lambda: not on_disk(tmp_path), what="the takeover drain")
    assert sorted(received.body for received in us.received) == sorted(bodies)
