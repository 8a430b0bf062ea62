"""`[server] workers`: the relay as a real process tree (`python -m proxy serve`), reloaded with
SIGHUP, stopped with SIGTERM, with workers killed under continuous traffic. The fake upstreams
run in this process; every assertion is on what crossed the wire.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from proxy.config import parse_config
from tests.conftest import relay_config
from tests.support.fakes import FakeUpstream
from tests.support.helpers import FORM, browser_form, event
from tests.support.processes import REPO, NginxFront, RelayProcess
from tests.support.waits import eventually

pytestmark = pytest.mark.slow   # relay process trees, reloaded, killed and stopped

StartRelay = Callable[..., Awaitable[RelayProcess]]


@pytest.fixture
async def start_relay(upstreams: dict[str, FakeUpstream],
                      tmp_path: Path) -> AsyncIterator[StartRelay]:
    started: list[RelayProcess] = []

    async def start(extra: dict[str, Any] | None = None) -> RelayProcess:
        relay = RelayProcess(tmp_path, relay_config(upstreams, extra))
        started.append(relay)
        await relay.start()
        return relay

    yield start
    for relay in started:
        await relay.stop()


@dataclass
class Traffic:
    """Clients sending tracked events back to back until stopped; every outcome is kept."""

    session: aiohttp.ClientSession
    clients: int = 4
    outcomes: dict[str, str] = field(default_factory=dict)   # insert_id -> status or error
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._client(n)) for n in range(self.clients)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _client(self, number: int) -> None:
        sent = 0
        while not self._stop.is_set():
            insert_id = f"c{number}-{sent}"
            sent += 1
            body = browser_form([event("tok_any", **{"$insert_id": insert_id})])
            try:
                async with self.session.post("/track/?ip=1&verbose=1", data=body,
                                             headers=FORM) as response:
                    await response.read()
                    self.outcomes[insert_id] = str(response.status)
            except aiohttp.ClientError as exc:
                self.outcomes[insert_id] = repr(exc)
            await asyncio.sleep(0.005)      # paces traffic: four clients, not a flood

    async def more(self, upstreams: dict[str, FakeUpstream], count: int, what: str) -> None:
        """Wait until `count` more requests than now have reached the fakes."""
        seen = _received(upstreams)
        await eventually(lambda: _received(upstreams) >= seen + count, what=what)

    def failures(self) -> dict[str, str]:
        return {key: value for key, value in self.outcomes.items() if value != "200"}


def _received(upstreams: dict[str, FakeUpstream]) -> int:
    return sum(len(fake.received) for fake in upstreams.values())


def delivered(upstreams: dict[str, FakeUpstream]) -> set[str]:
    return {record["properties"]["$insert_id"] for fake in upstreams.values()
            for received in fake.received for record in received.records()}


async def _new_workers(relay: RelayProcess, old: list[int], count: int) -> list[int]:
    await eventually(lambda: len(relay.worker_pids()) == count
                     and not set(relay.worker_pids()) & set(old), what="the new workers")
    return relay.worker_pids()


async def test_each_worker_listens_on_its_slots_socket_of_one_port(
        start_relay: StartRelay) -> None:
    relay = await start_relay({"server": {"workers": 3, "reuse_port": True}})
    pids = relay.worker_pids()
    assert len(pids) == 3
    inodes = [_listening_inodes(pid, relay.port) for pid in pids]
    assert all(len(found) == 1 for found in inodes)              # one socket each ...
    assert len(set.union(*inodes)) == 3                           # ... a different one
    assert _listening_inodes(relay.pid, relay.port) == set.union(*inodes)   # all kept
    if importlib.util.find_spec("uvloop") is not None:   # the [speed] extra: workers run on it
        assert all("uvloop" in Path(f"/proc/{pid}/maps").read_text() for pid in pids)
        assert "uvloop" not in Path(f"/proc/{relay.pid}/maps").read_text()
    async with aiohttp.ClientSession(relay.url) as session:
        for _ in range(20):
            async with session.get("/healthz") as response:
                assert response.status == 200


async def test_by_default_the_workers_share_one_listening_socket(
        start_relay: StartRelay) -> None:
    relay = await start_relay({"server": {"workers": 3}})
    inodes = [_listening_inodes(pid, relay.port) for pid in relay.worker_pids()]
    assert len(inodes) == 3
    assert all(found == inodes[0] for found in inodes) and len(inodes[0]) == 1


async def test_a_burst_of_connections_is_spread_over_the_workers(
        start_relay: StartRelay) -> None:
    """A front opening its keep-alive pool, or a load test starting: with one shared socket the
    first worker to wake took every connection queued."""
    relay = await start_relay({"server": {"workers": 2, "reuse_port": True}})
    opened = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", relay.port)
                                    for _ in range(40)))
    try:
        for _, writer in opened:        # a request each, so every connection is accepted
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n")
        for reader, _ in opened:
            assert (await reader.readline()).startswith(b"HTTP/1.1 200")
        held = [_established(pid, relay.port) for pid in relay.worker_pids()]
        assert sum(held) == 40
        assert min(held) >= 8, held     # hashed: 40 over 2 is below 8 once in ~10^5 runs
    finally:
        for _, writer in opened:
            writer.close()


async def test_a_replacement_takes_over_its_slots_socket(start_relay: StartRelay) -> None:
    relay = await start_relay({"server": {"workers": 2, "reuse_port": True}})
    victim, survivor = relay.worker_pids()
    sockets = {pid: _listening_inodes(pid, relay.port) for pid in (victim, survivor)}
    os.kill(victim, signal.SIGKILL)
    await eventually(lambda: len(relay.worker_pids()) == 2 and victim not in relay.worker_pids(),
                     what="a replacement worker")
    replacement = next(pid for pid in relay.worker_pids() if pid != survivor)
    await eventually(lambda: _listening_inodes(replacement, relay.port) == sockets[victim],
                     what="the replacement listening on the victim's socket")


async def test_fewer_workers_after_a_reload_still_serve_every_socket(
        start_relay: StartRelay, upstreams: dict[str, FakeUpstream]) -> None:
    relay = await start_relay({"server": {"workers": 3, "reuse_port": True}})
    old = relay.worker_pids()
    kept = _listening_inodes(relay.pid, relay.port)
    relay.write_config(relay_config(upstreams, {"server": {"workers": 2, "reuse_port": True}}))
    await relay.reload()
    new = await _new_workers(relay, old, 2)
    # Closing the third socket would reset what waits in its queue: a worker serves it too.
    assert _listening_inodes(relay.pid, relay.port) == kept
    assert set.union(*(_listening_inodes(pid, relay.port) for pid in new)) == kept
    async with aiohttp.ClientSession(relay.url,
                                     connector=aiohttp.TCPConnector(force_close=True)) as session:
        for _ in range(30):             # new connections, hashed onto all three sockets
            async with session.get("/healthz") as response:
                assert response.status == 200


def _socket_inodes(pid: int) -> set[str]:
    return {os.readlink(fd.path)[8:-1] for fd in os.scandir(f"/proc/{pid}/fd")
            if os.readlink(fd.path).startswith("socket:[")}


def _tcp_rows(pid: int) -> list[list[str]]:
    return [line.split() for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]]


def _listening_inodes(pid: int, port: int) -> set[str]:
    """The inodes of `pid`'s sockets listening on `port`, from /proc (state 0A is LISTEN)."""
    owned = _socket_inodes(pid)
    return {fields[9] for fields in _tcp_rows(pid)
            if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port
            and fields[9] in owned}


def _established(pid: int, port: int) -> int:
    """How many connections to `port` `pid` holds (state 01 is ESTABLISHED)."""
    owned = _socket_inodes(pid)
    return sum(1 for fields in _tcp_rows(pid)
               if fields[3] == "01" and int(fields[1].split(":")[1], 16) == port
               and fields[9] in owned)


async def test_a_dead_worker_is_replaced(start_relay: StartRelay) -> None:
    relay = await start_relay({"server": {"workers": 2}})
    victim, survivor = relay.worker_pids()
    os.kill(victim, signal.SIGKILL)
    await eventually(lambda: len(relay.worker_pids()) == 2 and victim not in relay.worker_pids(),
                     what="a replacement worker")
    assert survivor in relay.worker_pids()
    assert f"worker {victim} was killed by signal 9" in relay.stderr
    async with aiohttp.ClientSession(relay.url) as session:
        async with session.get("/healthz") as response:
            assert response.status == 200


async def test_reload_applies_the_new_config_without_a_failed_request(
        start_relay: StartRelay, upstreams: dict[str, FakeUpstream]) -> None:
    relay = await start_relay({"server": {"workers": 2}})
    old = relay.worker_pids()
    # One connection per request: a keep-alive connection that a draining worker closes while
    # a request is being written is the front's to retry (see the nginx test below).
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(relay.url, connector=connector) as session:
        traffic = Traffic(session)
        traffic.start()
        await traffic.more(upstreams, 10, "traffic to us before the reload")
        relay.write_config(relay_config(upstreams, {"server": {"workers": 3},
                                                    "routing": {"default_region": "eu"}}))
        await relay.reload()
        await _new_workers(relay, old, 3)
        await eventually(lambda: len(upstreams["eu"].received) >= 20, what="traffic to eu")
        to_us = len(upstreams["us"].received)
        await traffic.more(upstreams, 20, "more traffic to the new generation")
        await traffic.stop()
    assert traffic.failures() == {}
    assert len(upstreams["us"].received) == to_us      # the old generation is gone
    assert set(traffic.outcomes) == delivered(upstreams)


async def test_a_bad_config_is_refused_with_the_check_messages(
        start_relay: StartRelay, upstreams: dict[str, FakeUpstream]) -> None:
    relay = await start_relay({"server": {"workers": 2}})
    workers = relay.worker_pids()
    good = relay.config_path.read_text()
    relay.config_path.write_text(good + '\nbogus = 1\n[cors]\nmax_age = "long"\n')
    check = subprocess.run([sys.executable, "-m", "proxy", "check", "--config",
                            str(relay.config_path)], capture_output=True, text=True, cwd=REPO)
    assert check.returncode == 2
    await relay.reload()
    assert "reload refused" in relay.stderr
    for problem in check.stderr.splitlines():
        assert problem in relay.stderr
    assert relay.worker_pids() == workers       # the old workers keep serving
    async with aiohttp.ClientSession(relay.url) as session:
        async with session.post("/track/", headers=FORM,
                                data=browser_form([event("tok_any")])) as response:
            assert response.status == 200
    assert upstreams["us"].received


@pytest.mark.nginx
async def test_traffic_through_nginx_survives_reloads_and_dying_workers(
        start_relay: StartRelay, upstreams: dict[str, FakeUpstream]) -> None:
    relay = await start_relay({"server": {"workers": 2}})
    front = NginxFront(relay.port)
    await front.start()
    try:
        connector = aiohttp.TCPConnector(ssl=False)
        async with aiohttp.ClientSession(front.url, connector=connector) as session:
            traffic = Traffic(session)
            traffic.start()
            await traffic.more(upstreams, 20, "traffic before the reload")
            old = relay.worker_pids()
            await relay.reload()                          # SIGHUP: a whole new generation
            workers = await _new_workers(relay, old, 2)
            await traffic.more(upstreams, 20, "traffic to the new generation")
            os.kill(workers[0], signal.SIGKILL)           # a worker dies mid-traffic
            await eventually(lambda: len(relay.worker_pids()) == 2
                             and workers[0] not in relay.worker_pids(), what="a replacement")
            await traffic.more(upstreams, 20, "traffic after the replacement")
            os.kill(workers[1], signal.SIGTERM)           # a worker drains and is replaced
            await eventually(lambda: len(relay.worker_pids()) == 2
                             and workers[1] not in relay.worker_pids(), what="a replacement")
            await traffic.more(upstreams, 20, "traffic after the second replacement")
            await traffic.stop()
    finally:
        front.stop()
    assert traffic.failures() == {}
    assert set(traffic.outcomes) <= delivered(upstreams)


async def test_sigterm_finishes_in_flight_requests_then_exits_0(
        start_relay: StartRelay, upstreams: dict[str, FakeUpstream]) -> None:
    relay = await start_relay({"server": {"workers": 2, "shutdown_timeout": 10}})
    us = upstreams["us"]
    us.hold()
    async with aiohttp.ClientSession(relay.url) as session:
        requests = [asyncio.create_task(_post_track(session, f"slow-{n}")) for n in range(6)]
        await eventually(lambda: len(us.received) == 6, what="requests in flight")
        relay.send(signal.SIGTERM)
        # Every worker is draining (their listening sockets are closed) before any answer.
        await eventually(lambda: "stopping: draining" in relay.stderr and _refused(relay.port),
                         what="the workers to drain")
        assert not any(request.done() for request in requests)
        us.release()
        statuses = await asyncio.gather(*requests)
    assert statuses == [200] * 6
    assert await relay.wait() == 0
    assert "stopped" in relay.stderr
    assert _refused(relay.port)


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


async def test_sigterm_waits_no_longer_than_shutdown_timeout(
        start_relay: StartRelay, upstreams: dict[str, FakeUpstream]) -> None:
    relay = await start_relay({"server": {"workers": 1, "shutdown_timeout": 0.5},
                               "upstream": {"read_timeout": 30.0}})
    us = upstreams["us"]
    us.hold()                                   # the upstream never answers while held
    async with aiohttp.ClientSession(relay.url) as session:
        request = asyncio.create_task(_post_track(session, "too-slow"))
        await eventually(lambda: len(us.received) == 1, what="a request in flight")
        relay.send(signal.SIGTERM)
        # The relay exits with the upstream still holding the request: it gave up waiting.
        assert await relay.wait(timeout=10) == 0
        with pytest.raises(aiohttp.ClientError):
            await request
    us.release()


async def _post_track(session: aiohttp.ClientSession, insert_id: str,
                      at: float = 1764330000.0) -> int:
    body = browser_form([event("tok_any", time=at, **{"$insert_id": insert_id})])
    async with session.post("/track/", data=body, headers=FORM) as response:
        await response.read()
        return response.status


def test_a_separate_metrics_listener_works_with_several_workers() -> None:
    # Every worker binds it (SO_REUSEPORT) and answers for all (tests/test_metrics_workers.py).
    config = parse_config({"server": {"workers": 2}, "metrics": {"listen": "127.0.0.1:9090"}})
    assert config.metrics.listen == ("127.0.0.1", 9090)


async def test_workers_that_cannot_start_stop_the_relay_with_exit_1(
        upstreams: dict[str, FakeUpstream], tmp_path: Path) -> None:
    with socket.socket() as busy:           # the metrics port is taken: a worker cannot start
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        relay = RelayProcess(tmp_path, relay_config(
            upstreams, {"metrics": {"listen": f"127.0.0.1:{port}"}}))
        with pytest.raises(AssertionError, match="relay did not start"):
            await relay.start()
        assert await relay.wait() == 1
    assert "could not start its workers" in relay.stderr
    assert "listening on" not in relay.stdout


async def test_a_reload_whose_workers_cannot_start_keeps_the_old_ones(
        start_relay: StartRelay, upstreams: dict[str, FakeUpstream]) -> None:
    relay = await start_relay({"server": {"workers": 1}})
    workers = relay.worker_pids()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        relay.write_config(relay_config(upstreams, {"metrics": {
            "listen": f"127.0.0.1:{busy.getsockname()[1]}"}}))
        relay.send(signal.SIGHUP)
        await eventually(lambda: "reload abandoned" in relay.stderr, what="the reload to fail")
    assert relay.worker_pids() == workers
    async with aiohttp.ClientSession(relay.url) as session:
        async with session.get("/metrics") as response:   # still the old config's listener
            assert response.status == 200


async def test_what_was_accepted_before_sigterm_is_delivered_after_the_restart(
        start_relay: StartRelay, upstreams: dict[str, FakeUpstream], tmp_path: Path) -> None:
    spool = {"enabled": True, "mode": "always", "path": str(tmp_path / "spool.db"),
             "poll_interval": 0.2, "backoff_min": 0.1, "backoff_max": 0.2}
    upstreams["us"].answer(503)                 # Mixpanel is down: everything stays spooled
    relay = await start_relay({"server": {"workers": 2}, "spool": spool})
    async with aiohttp.ClientSession(relay.url) as session:
        # Events of now: the spool keeps /track events only within Mixpanel's 5-day window.
        statuses = [await _post_track(session, f"kept-{n}", time.time()) for n in range(10)]
    assert statuses == [200] * 10
    relay.send(signal.SIGTERM)
    assert await relay.wait() == 0              # the app's cleanup closed the spool cleanly
    upstreams["us"].answer(200)
    upstreams["us"].clear()
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    second = RelayProcess(second_dir, relay_config(upstreams, {"spool": spool}))
    await second.start()
    try:
        wanted = {f"kept-{n}" for n in range(10)}
        await eventually(lambda: wanted <= delivered(upstreams), what="the spooled events")
    finally:
        await second.stop()
