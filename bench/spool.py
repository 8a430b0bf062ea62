"""Spool benchmark: accepted requests per second and client latency in `always` mode, with group
commit versus one fsync per request, next to the relay without a spool. With `--redis`, the
Redis spool (`[spool] backend = "redis"`, redis-server with AOF: `appendfsync always`, nothing
acknowledged is lost; `everysec`, a crash of the machine may lose the last second) runs in the
same rounds, and the table adds the CPU each accepted request cost the relay and Redis.

Loopback only, every wrk run bounded in time. The relay runs as `python -m proxy serve` (one
worker), the upstream is a small aiohttp server in a subprocess answering `1`, and wrk POSTs a
browser-shaped /track batch (five events, base64 `data=`). Contenders alternate round by round
so a noisy neighbour hurts all of them alike; the report is the median round.

    python bench/spool.py [--duration 8] [--rounds 2] [--connections 64] [--redis]
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import measure  # noqa: E402
from bench.common import free_port, wait_for  # noqa: E402

TOKEN = "bench_token_0001"
CONTENDERS: dict[str, dict[str, object]] = {
    "always, group commit": {"enabled": True, "mode": "always", "group_commit": True},
    "always, fsync per request": {"enabled": True, "mode": "always", "group_commit": False},
    "no spool (direct)": {"enabled": False},
}
REDIS_CONTENDERS: dict[str, dict[str, object]] = {
    "always, redis (appendfsync always)": {"enabled": True, "mode": "always", "backend": "redis",
                                           "_appendfsync": "always"},
    "always, redis (appendfsync everysec)": {"enabled": True, "mode": "always",
                                             "backend": "redis", "_appendfsync": "everysec"},
}
UPSTREAM = """
from aiohttp import web
async def ok(request):
    await request.read()
    return web.Response(text="1")
app = web.Application()
app.router.add_route("*", "/{tail:.*}", ok)
web.run_app(app, host="127.0.0.1", port=int(__import__("sys").argv[1]), print=None)
"""


def track_body() -> str:
    now = time.time()
    events = [{"event": f"bench {n}", "properties": {
        "token": TOKEN, "distinct_id": "user-1", "time": now, "$insert_id": f"insert{n:010d}",
        "$current_url": "https://example.com/pricing", "mp_lib": "web"}} for n in range(5)]
    return "data=" + base64.b64encode(json.dumps(events).encode()).decode()


def write_wrk_script(workdir: Path) -> Path:
    script = workdir / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f'wrk.body = "{track_body()}"\n'
        'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n')
    return script


def toml_config(port: int, upstream_port: int, spool: dict[str, object], path: Path,
                redis_url: str = "") -> str:
    lines = [f'[server]\nlisten = "127.0.0.1:{port}"\n', '[log]\naccess = false\n'
             'level = "warning"\n']
    if redis_url:
        lines.append(f'[redis]\nurl = "{redis_url}"\n')
    for region in ("us", "eu", "in"):
        lines.append(f'[regions.{region}]\nurl = "http://127.0.0.1:{upstream_port}"\n')
    spool_lines = "\n".join(f"{key} = {json.dumps(value)}" for key, value in spool.items()
                            if not key.startswith("_"))    # _appendfsync: the bench's own
    lines.append(f'[spool]\npath = "{path}"\n{spool_lines}\n')
    return "\n".join(lines)


def parse_wrk(output: str) -> tuple[float, float, float, int]:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _percentile(output, "50%")
    p99 = _percentile(output, "99%")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return rps, p50, p99, int(non_2xx.group(1)) if non_2xx else 0


def _percentile(output: str, label: str) -> float:
    match = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
    assert match, output
    value, unit = float(match.group(1)), match.group(2)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def stored_count(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("mixpanel_proxy_spool_stored_total{"))


def cpu_seconds(pid: int) -> float:
    """User + system CPU of `pid` and its children (a supervisor's workers), from /proc."""
    return measure.cpu_seconds(measure.process_tree(pid))


Result = tuple[float, float, float, int, float, float, float]


def run_one(name: str, workdir: Path, upstream_port: int, script: Path,
            args: argparse.Namespace, redis: RedisBench | None) -> Result:
    port = free_port()
    db = workdir / f"spool-{time.monotonic_ns()}.db"
    config = workdir / "relay.toml"
    spool = {**CONTENDERS, **REDIS_CONTENDERS}[name]
    on_redis = spool.get("backend") == "redis"
    if on_redis:
        assert redis is not None
        redis.flush(str(spool["_appendfsync"]))
    config.write_text(toml_config(port, upstream_port, spool, db,
                                  redis.url if redis is not None and on_redis else ""))
    relay = subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--config", str(config)],
                             cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        wait_for(f"http://127.0.0.1:{port}/healthz")
        relay_cpu = cpu_seconds(relay.pid)
        redis_cpu = cpu_seconds(redis.pid) if redis is not None and on_redis else 0.0
        output = subprocess.run(
            ["wrk", "-t", "1", "-c", str(args.connections), "-d", f"{args.duration}s",
             "--latency", "-s", str(script), f"http://127.0.0.1:{port}/track/"],
            capture_output=True, text=True, timeout=args.duration + 30, check=True).stdout
        relay_cpu = cpu_seconds(relay.pid) - relay_cpu
        redis_cpu = (cpu_seconds(redis.pid) - redis_cpu
                     if redis is not None and on_redis else 0.0)
        stored = stored_count(port)
    finally:
        relay.terminate()
        relay.wait(timeout=30)
    rps, p50, p99, errors = parse_wrk(output)
    accepted = max(1.0, rps * args.duration)
    return (rps, p50, p99, errors, stored, relay_cpu * 1e3 / accepted,
            redis_cpu * 1e3 / accepted)


class RedisBench:
    """A redis-server for the Redis contenders: loopback, AOF on (appendfsync set per run)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir",
             str(workdir), "--save", "", "--appendonly", "yes", "--appendfsync", "always"],
            stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self._ping():
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.process.pid

    def _ping(self) -> bool:
        try:
            return bool(self._client().ping())
        except OSError:
            return False
        except Exception:    # redis-py's ConnectionError while it starts
            return False

    def _client(self) -> Any:
        import redis
        return redis.Redis(host="127.0.0.1", port=self.port)

    def flush(self, appendfsync: str) -> None:
        client = self._client()
        client.flushall()
        client.config_set("appendfsync", appendfsync)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--redis", action="store_true",
                        help="add the Redis spool (redis-server, appendfsync always)")
    args = parser.parse_args()
    names = list(CONTENDERS) + (list(REDIS_CONTENDERS) if args.redis else [])
    results: dict[str, list[Result]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="spool-bench-") as tmp:
        workdir = Path(tmp)
        script = write_wrk_script(workdir)
        upstream_port = free_port()
        upstream = subprocess.Popen([sys.executable, "-c", UPSTREAM, str(upstream_port)])
        redis = RedisBench(workdir) if args.redis else None
        try:
            wait_for(f"http://127.0.0.1:{upstream_port}/")
            for _ in range(args.rounds):
                for name in names:
                    results[name].append(
                        run_one(name, workdir, upstream_port, script, args, redis))
        finally:
            upstream.terminate()
            upstream.wait(timeout=10)
            if redis is not None:
                redis.stop()
    print(f"| contender ({args.connections} connections, {args.duration} s, median of "
          f"{args.rounds}) | accepted req/s | p50 ms | p99 ms | non-2xx | stored "
          "| relay CPU ms/req | redis CPU ms/req |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, rounds in results.items():
        median = sorted(rounds)[len(rounds) // 2]
        rps, p50, p99, errors, stored, relay_ms, redis_ms = median
        print(f"| {name} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {errors} | {stored:,.0f} "
              f"| {relay_ms:.3f} | {redis_ms:.3f} |")
        print(f"|   (all rounds req/s: {', '.join(f'{r[0]:,.0f}' for r in rounds)}; "
              f"median p99 {statistics.median(r[2] for r in rounds):.2f} ms) | | | | | | | |")


if __name__ == "__main__":
    main()
