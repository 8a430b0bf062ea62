"""Load and soak harness: the relay as a real process (`python -m proxy serve`), fake regional
upstreams in a second process, and this process as the load generator (aiohttp clients).

    python -m tests.support.soak run --seconds 300 --connections 1000 [--json out.json]
    python -m tests.support.soak fakes          # (used by `run`)

`connections` clients each hold one keep-alive connection to the relay for the whole run and
send one request every `interval` seconds (jittered), cycling through a mix of every API
endpoint: browser batches for three regions (one batch split across two), profile and group
updates, /import, /record, /flags and /settings. Paced, not flat out, as browsers are: the
point is to hold many connections for a long time, not to measure throughput (bench/ does).
The report: requests, errors (anything but 200, or no answer), p50/p99/max latency, the relay's
RSS and open descriptors once a second, and the requests each region received against the 200s
the clients were given (lost = accepted by the relay, never received upstream).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from tests.support.processes import RelayProcess

TOKENS = {"us": "tok_us_1234", "eu": "tok_eu_5678", "in": "tok_in_9012"}
DATA_ENDPOINTS = ("track", "engage", "groups", "import", "record")


@dataclass
class Report:
    seconds: float
    connections: int
    requests: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    by_endpoint: dict[str, int] = field(default_factory=dict)
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    rss_mib: list[float] = field(default_factory=list)       # one sample a second
    open_fds: list[int] = field(default_factory=list)
    rss_second_quarter_mib: float = 0.0
    rss_last_quarter_mib: float = 0.0
    accepted_by_region: dict[str, int] = field(default_factory=dict)
    received_by_region: dict[str, int] = field(default_factory=dict)
    lost: int = 0


# -- the request mix ------------------------------------------------------------------------------
def _event(region: str, n: int) -> dict[str, Any]:
    return {"event": "soak", "properties": {"token": TOKENS[region], "distinct_id": f"d{n % 97}",
                                            "time": time.time(), "$insert_id": f"{region}{n:x}"}}


def _form(payload: Any) -> bytes:
    return b"data=" + quote(base64.b64encode(json.dumps(payload).encode())).encode()


def _basic(region: str) -> str:
    return "Basic " + base64.b64encode(f"{TOKENS[region]}:".encode()).decode()


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def build_request(n: int) -> tuple[str, str, str, bytes, dict[str, str], list[str]]:
    """(endpoint, method, target, body, headers, regions its data goes to) for request n."""
    region = ("us", "eu", "in")[n % 3]
    kind = n % 9
    if kind == 0:
        return "track", "POST", "/track/?ip=1", _form([_event("us", n), _event("eu", n + 1)]),\
            FORM, ["us", "eu"]                               # split across two regions
    if kind in (1, 2):
        return "track", "POST", f"/track/?ip=1&_={n}", _form([_event(region, n)] * 3), FORM, \
            [region]
    if kind == 3:
        return "engage", "POST", "/engage/", _form([{"$token": TOKENS[region],
                                                     "$distinct_id": "d", "$set": {"n": n}}]), \
            FORM, [region]
    if kind == 4:
        return "groups", "POST", "/groups/", _form([{"$token": TOKENS[region], "$group_key": "c",
                                                     "$group_id": "g", "$set": {"n": n}}]), \
            FORM, [region]
    if kind == 5:
        body = json.dumps([_event(region, n)]).encode()
        return "import", "POST", "/import?strict=1", body, {
            "Content-Type": "application/json", "Authorization": _basic(region)}, [region]
    if kind == 6:
        return "record", "POST", f"/record/?format=gzip&seq={n}&replay_id=r{n}", \
            gzip.compress(b'[{"type":3,"data":{}}]' * 20), {
                "Content-Type": "application/octet-stream", "Authorization": _basic(region)}, \
            [region]
    if kind == 7:
        return "flags", "GET", f"/flags/?context=%7B%22distinct_id%22%3A%22d{n}%22%7D", b"", \
            {"Authorization": _basic(region)}, []
    return "settings", "GET", "/settings/?sdk=web", b"", {"Authorization": _basic(region)}, []


# -- the fake upstreams (their own process) -------------------------------------------------------
async def serve_fakes() -> None:
    """Three FakeUpstreams; counts per region, cleared as they come so memory stays flat.
    Prints their URLs as one JSON line, and the counts as another on SIGTERM."""
    from aiohttp.test_utils import TestServer

    from tests.support.fakes import FakeUpstream

    fakes = {name: FakeUpstream(name) for name in TOKENS}
    for fake in fakes.values():
        fake.server = TestServer(fake.app(), host="127.0.0.1")
        await fake.server.start_server()
    print(json.dumps({name: fake.url for name, fake in fakes.items()}), flush=True)
    counts: Counter[str] = Counter()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    while not stop.is_set():
        for name, fake in fakes.items():
            counts[name] += sum(_records_in(item) for item in fake.received
                                if item.path.split("/")[1] in DATA_ENDPOINTS)
            fake.clear()
        try:
            await asyncio.wait_for(stop.wait(), 0.2)
        except TimeoutError:
            pass
    print(json.dumps(dict(counts)), flush=True)


def _records_in(item: Any) -> int:
    """Events or updates in one upstream request; a /record body counts as one."""
    if item.path.startswith("/record"):
        return 1
    if item.path.startswith("/import"):
        return len(json.loads(item.plain_body()))
    return len(item.records())


# -- the load generator ---------------------------------------------------------------------------
class Load:
    def __init__(self, url: str, connections: int, interval: float, seconds: float) -> None:
        self.url, self.connections, self.interval, self.seconds = url, connections, interval, \
            seconds
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.by_endpoint: Counter[str] = Counter()
        self.accepted: Counter[str] = Counter()     # records (or /record bodies) answered 200
        self.started = time.monotonic()

    async def run(self) -> None:
        deadline = time.monotonic() + self.seconds
        await asyncio.gather(*(self._client(number, deadline)
                               for number in range(self.connections)))

    async def _client(self, number: int, deadline: float) -> None:
        """One client, one keep-alive connection of its own (a shared pool would reuse a few)."""
        connector = aiohttp.TCPConnector(limit=1, keepalive_timeout=60)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            n = number
            await asyncio.sleep(random.uniform(0, self.interval))  # paces traffic: a spread start
            while time.monotonic() < deadline:
                started = time.monotonic()
                await self._one(session, n)
                n += self.connections
                pause = self.interval * random.uniform(0.8, 1.2) - (time.monotonic() - started)
                await asyncio.sleep(max(0.0, pause))     # paces traffic: one per interval

    async def _one(self, session: aiohttp.ClientSession, n: int) -> None:
        endpoint, method, target, body, headers, regions = build_request(n)
        started = time.monotonic()
        try:
            async with session.request(method, self.url + target, data=body or None,
                                       headers=headers) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.errors.append(f"{self._at()} {endpoint}: {exc!r}")
            return
        self.latencies.append(time.monotonic() - started)
        self.by_endpoint[endpoint] += 1
        if status != 200:
            self.errors.append(f"{self._at()} {endpoint}: status {status}")
            return
        for region in regions:
            self.accepted[region] += 1 if endpoint == "record" else (
                3 if endpoint == "track" and len(regions) == 1 else 1)

    def _at(self) -> str:
        return f"t={time.monotonic() - self.started:.1f}s"


def rss_and_fds(relay: RelayProcess) -> tuple[float, int]:
    rss_kib, fds = 0, 0
    for pid in (relay.pid, *relay.worker_pids()):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            rss_kib += int(next(line.split()[1] for line in status.splitlines()
                                if line.startswith("VmRSS:")))
            fds += len(os.listdir(f"/proc/{pid}/fd"))
        except (OSError, StopIteration):
            continue
    return rss_kib / 1024, fds


async def sample(relay: RelayProcess, report: Report, stop: asyncio.Event) -> None:
    while not stop.is_set():
        rss, fds = rss_and_fds(relay)
        report.rss_mib.append(round(rss, 1))
        report.open_fds.append(fds)
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except TimeoutError:
            pass


async def run(seconds: float, connections: int, interval: float) -> Report:
    fakes = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.support.soak", "fakes", stdout=asyncio.subprocess.PIPE)
    assert fakes.stdout is not None
    urls = json.loads(await fakes.stdout.readline())
    workdir = Path(tempfile.mkdtemp(prefix="mixpanel-soak-"))
    relay = RelayProcess(workdir, {
        "regions": {name: {"url": url} for name, url in urls.items()},
        "projects": [{"token": token, "region": region} for region, token in TOKENS.items()],
        "health": {"probe_interval": 0}, "log": {"access": False},
        # /settings' 0.45 s deadline (tests/test_relay_edges.py) would turn one stall of a noisy
        # neighbour into a soak failure: the soak is about holding up over time, not deadlines.
        "upstream": {"pool_size": 256, "settings_timeout": 10.0}})
    report = Report(seconds=seconds, connections=connections)
    try:
        await relay.start()
        load = Load(relay.url, connections, interval, seconds)
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample(relay, report, stop))
        await load.run()
        stop.set()
        await sampler
    finally:
        await relay.stop()
        fakes.send_signal(signal.SIGTERM)
        received = json.loads(await fakes.stdout.readline() or b"{}")
        await fakes.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    summarize(report, load, received)
    return report


def summarize(report: Report, load: Load, received: dict[str, int]) -> None:
    latencies = sorted(load.latencies)
    report.requests = len(latencies) + len(load.errors)
    report.errors = len(load.errors)
    report.error_samples = load.errors[:10]
    report.by_endpoint = dict(load.by_endpoint)
    if latencies:
        report.p50_ms = round(1000 * latencies[len(latencies) // 2], 1)
        report.p99_ms = round(1000 * latencies[int(len(latencies) * 0.99)], 1)
        report.max_ms = round(1000 * latencies[-1], 1)
    quarter = max(1, len(report.rss_mib) // 4)
    second, last = report.rss_mib[quarter:2 * quarter], report.rss_mib[-quarter:]
    report.rss_second_quarter_mib = round(sum(second) / max(1, len(second)), 1)
    report.rss_last_quarter_mib = round(sum(last) / max(1, len(last)), 1)
    report.accepted_by_region = dict(load.accepted)
    report.received_by_region = received
    report.lost = sum(max(0, count - received.get(region, 0))
                      for region, count in load.accepted.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["run", "fakes"])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=2.0,
                        help="seconds between one client's requests")
    parser.add_argument("--json", type=Path, help="write the report here too")
    args = parser.parse_args()
    if args.mode == "fakes":
        asyncio.run(serve_fakes())
        return
    report = asyncio.run(run(args.seconds, args.connections, args.interval))
    text = json.dumps(asdict(report), indent=1)
    if args.json:
        args.json.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
