"""Side-by-side benchmark: nginx proxy_pass vs the relay vs the relay behind the nginx front.

One invocation runs every scenario, alternating the contenders round by round so a noisy
neighbour hurts all of them alike, and reports req/s, p50/p99 latency, CPU per request and the
relay/nginx ratios as a markdown table and JSON. Loopback only; every wrk run is bounded in time.

    python bench/run.py [--duration 8] [--rounds 2] [--workers 2] [--only track,record,bundle]
                        [--python /path/to/python]

Contenders: `nginx` (plain proxy_pass with keep-alive; for the bundle, the same bytes served
statically, pre-compressed with brotli), `relay` (the relay alone, plain HTTP), and `front` (the
shipped nginx/ config, adapted only in ports and paths as the tests do, over TLS, in front of the
relay). The fake upstream and the fake CDN are a separate nginx, so the upstream is never the
bottleneck and its CPU is never counted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402
from bench.common import free_port, running, wait_for  # noqa: E402

DIST = ROOT / "tests/js/node_modules/mixpanel-browser/dist"
BUNDLE = "mixpanel-recorder-CZqK2y7C.min.js"      # the 340 KB recorder, content-hashed
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    scenario: str
    contender: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_request: float
    errors: int
    mb_per_s: float = 0.0


def process_tree(root: int) -> list[int]:
    """`root` and every descendant, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree, stack = [], [root]
    while stack:
        pid = stack.pop()
        tree.append(pid)
        stack.extend(children.get(pid, []))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])          # utime + stime
    return total / CLK_TCK


UPSTREAM_BODY = '{"status":1,"error":null}'


def nginx_conf(workdir: Path, servers: str) -> str:
    return common.nginx_conf(workdir, f"""
  client_body_temp_path {workdir}/body;
  proxy_temp_path {workdir}/proxy;
  {servers}""", workers=2, error_log="error.log")


def fake_upstream_servers(port: int) -> str:
    """The fake Mixpanel API, and the fake CDN serving the npm package's bundles under /libs/."""
    return f"""
  server {{
    listen 127.0.0.1:{port} reuseport;
    client_max_body_size 20m;
    client_body_buffer_size 1m;
    location /libs/ {{ alias {DIST}/async-modules/; default_type application/javascript; }}
    location / {{ default_type application/json; return 200 '{UPSTREAM_BODY}'; }}
  }}"""


def proxy_pass_servers(port: int, upstream_port: int, static_dir: Path, tls_port: int,
                       tls: Path) -> str:
    """The baseline: plain proxy_pass with keep-alive, and the same bundle served statically;
    on plain HTTP, and on TLS (HTTP/1.1, the same certificate) to set beside the TLS front."""
    return f"""
  upstream fake {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port} reuseport;
    listen 127.0.0.1:{tls_port} ssl reuseport;
    ssl_certificate {tls}/fullchain.pem;
    ssl_certificate_key {tls}/privkey.pem;
    client_max_body_size 20m;
    client_body_buffer_size 1m;   # in memory, as the relay holds bodies: a like-for-like baseline
    location /static/ {{
      alias {static_dir}/;
      default_type application/javascript;
      add_header Content-Encoding br;
    }}
    location / {{
      proxy_pass http://fake;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $remote_addr;
    }}
  }}"""


@contextmanager
def nginx(workdir: Path, servers: str, probe: str) -> Iterator[int]:
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "nginx.conf"
    conf.write_text(nginx_conf(workdir, servers))
    with running(["nginx", "-c", str(conf), "-p", str(workdir), "-g", "daemon off;"],
                 probe) as pid:
        yield pid


@contextmanager
def relay(workdir: Path, port: int, upstream_port: int, workers: int,
          coalesce: bool = False, python: str = sys.executable) -> Iterator[int]:
    config = workdir / "relay.toml"
    upstream = f"http://127.0.0.1:{upstream_port}"
    config.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
workers = {workers}
[log]
access = false
[coalesce]
enabled = {str(coalesce).lower()}
[health]
probe_interval = 0
[assets]
cdn_url = "{upstream}/libs/"
prefetch = ["{BUNDLE}"]
[regions.us]
url = "{upstream}"
[regions.eu]
url = "{upstream}"
[regions.in]
url = "{upstream}"
""")
    proc = subprocess.Popen([python, "-m", "proxy", "serve", "--config", str(config)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=workdir.joinpath(
                                "relay.log").open("w"))
    try:
        wait_for(f"http://127.0.0.1:{port}/healthz")
        wait_for(f"http://127.0.0.1:{port}/libs/{BUNDLE}")
        yield proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@contextmanager
def front(relay_port: int) -> Iterator[tuple[int, int]]:
    """The shipped nginx front (tests/support/processes.py adapts ports and paths):
    (https port, pid)."""
    from tests.support.processes import NginxFront

    nginx_front = NginxFront(relay_port)
    asyncio.run(nginx_front.start())
    try:
        assert nginx_front.process is not None
        yield nginx_front.https_port, nginx_front.process.pid
    finally:
        nginx_front.stop()


def make_certificate(directory: Path) -> Path:
    """The same self-signed certificate the shipped nginx/self-signed.sh makes."""
    subprocess.run([str(ROOT / "nginx" / "self-signed.sh"), str(directory)], check=True,
                   capture_output=True)
    return directory


def bundle_files(static: Path) -> int:
    """The recorder pre-compressed with brotli for nginx's static baseline; returns its size."""
    import brotli

    compressed = brotli.compress((DIST / "async-modules" / BUNDLE).read_bytes(), quality=11)
    (static / BUNDLE).write_bytes(compressed)
    return len(compressed)


def track_body() -> bytes:
    """A ~2 KB base64 batch, as mixpanel-browser's XHR sends it."""
    rng = random.Random(7)
    events = [{"event": f"event {n}", "properties": {
        "token": "bench_token", "distinct_id": f"user-{rng.randrange(10**6)}",
        "time": 1764330000.0 + n, "$insert_id": f"{rng.getrandbits(64):016x}",
        "$current_url": "https://shop.example/products/item", "mp_lib": "web",
        "$lib_version": "2.83.0"}} for n in range(9)]
    encoded = base64.b64encode(json.dumps(events).encode()).decode()
    return ("data=" + urllib.request.quote(encoded, safe="")).encode()


def record_body() -> bytes:
    """~200 KB of gzip, as the recorder's CompressionStream produces (incompressible-ish)."""
    rng = random.Random(11)
    raw = json.dumps([{"type": 3, "data": {"source": 1, "positions": [
        {"x": rng.randrange(2000), "y": rng.randrange(2000), "id": rng.randrange(10**6),
         "timeOffset": -rng.randrange(500)} for _ in range(40)]}, "timestamp": 1764330000000 + n}
        for n in range(900)]).encode()
    return gzip.compress(raw)


def wrk_script(workdir: Path, name: str, method: str, body: bytes | None,
               headers: dict[str, str]) -> Path:
    lines = [f'wrk.method = "{method}"']
    if body is not None:
        path = workdir / f"{name}.body"
        path.write_bytes(body)
        lines.append(f'local f = io.open("{path}", "rb"); wrk.body = f:read("*a"); f:close()')
    lines += [f'wrk.headers["{key}"] = "{value}"' for key, value in headers.items()]
    script = workdir / f"{name}.lua"
    script.write_text("\n".join(lines) + "\n")
    return script


def run_wrk(url: str, script: Path, connections: int, duration: float) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{int(duration)}s", "--latency", "-s", str(script),
         url],
        capture_output=True, text=True, timeout=duration + 60, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rate": rate, "p50": _percentile(out, "50"), "p99": _percentile(out, "99"),
            "errors": errors + (int(non2xx.group(1)) if non2xx else 0)}


def _percentile(out: str, which: str) -> float:
    match = re.search(rf"^\s+{which}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    if not match:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def measure(scenario: str, contender: str, url: str, script: Path, connections: int,
            duration: float, pids: list[int], body_size: int) -> Result:
    before = cpu_seconds(pids)
    stats = run_wrk(url, script, connections, duration)
    cpu = cpu_seconds(pids) - before
    requests = stats["rate"] * duration
    return Result(scenario, contender, round(stats["rate"], 1), stats["p50"], stats["p99"],
                  round(cpu / max(requests, 1) * 1e6, 1), int(stats["errors"]),
                  round(stats["rate"] * body_size / 1e6, 1))


@dataclass(frozen=True)
class Scenario:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes | None
    connections: int
    nginx_path: str | None = None       # where the nginx baseline serves the same thing
    size: int = 0                       # payload bytes per request, for MB/s


def scenarios(static: Path) -> dict[str, Scenario]:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    track = "/track/?verbose=1&ip=1&_=1764330000123"
    track_batch, replay = track_body(), record_body()
    return {
        "track": Scenario("POST", track, form, track_batch, 50, size=len(track_batch)),
        "track_c10": Scenario("POST", track, form, track_batch, 10, size=len(track_batch)),
        "record": Scenario("POST", "/record/?format=gzip&seq=0&replay_id=r&mp_lib=web",
                           {"Content-Type": "application/octet-stream"}, replay, 50,
                           size=len(replay)),
        "bundle": Scenario("GET", f"/libs/{BUNDLE}", {"Accept-Encoding": "br"}, None, 50,
                           nginx_path=f"/static/{BUNDLE}", size=bundle_files(static)),
    }


# Each contender is set beside the nginx that speaks the same protocol: the TLS front beside nginx
# on TLS, the rest beside plain nginx.
BASELINE = {"front": "nginx_tls", "nginx_tls": "nginx_tls"}


def markdown(results: list[Result]) -> str:
    lines = ["| scenario | contender | req/s | p50 ms | p99 ms | CPU µs/req | MB/s | errors "
             "| req/s vs baseline | CPU vs baseline |", "|---" * 10 + "|"]
    base = {(r.scenario, r.contender): r for r in results}
    for r in results:
        b = base.get((r.scenario, BASELINE.get(r.contender, "nginx")))
        ratio = f"{r.requests_per_s / b.requests_per_s:.2f}×" if b and b.requests_per_s else "—"
        cpu = (f"{r.cpu_us_per_request / b.cpu_us_per_request:.1f}×"
               if b and b.cpu_us_per_request else "—")
        lines.append(f"| {r.scenario} | {r.contender} | {r.requests_per_s:,.0f} | {r.p50_ms:.2f} "
                     f"| {r.p99_ms:.2f} | {r.cpu_us_per_request:.0f} | {r.mb_per_s:.1f} "
                     f"| {r.errors} | {ratio} | {cpu} |")
    return "\n".join(lines)


def run_scenario(name: str, scenario: Scenario, contenders: dict[str, tuple[str, list[int]]],
                 work: Path, args: argparse.Namespace) -> list[Result]:
    """Every contender, round by round (alternating), the median run of each."""
    script = wrk_script(work, name, scenario.method, scenario.body, scenario.headers)
    runs: dict[str, list[Result]] = {contender: [] for contender in contenders}
    for _ in range(args.rounds):
        for contender, (base, pids) in contenders.items():
            baseline = contender in ("nginx", "nginx_tls")
            path = scenario.nginx_path if baseline and scenario.nginx_path else scenario.path
            runs[contender].append(measure(name, contender, base + path, script,
                                           scenario.connections, args.duration, pids,
                                           scenario.size))
    return [median_result(r) for r in runs.values()]


def median_result(runs: list[Result]) -> Result:
    best = sorted(runs, key=lambda r: r.requests_per_s)[len(runs) // 2]
    best.p50_ms = statistics.median(r.p50_ms for r in runs)
    best.p99_ms = statistics.median(r.p99_ms for r in runs)
    best.cpu_us_per_request = statistics.median(r.cpu_us_per_request for r in runs)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", default="track,track_c10,record,bundle")
    parser.add_argument("--coalesce", action="store_true",
                        help="run the relay with [coalesce] enabled = true")
    parser.add_argument("--python", default=sys.executable,
                        help="the interpreter that runs the relay (it must have the project's "
                             "dependencies); interpreters built with PGO/LTO, as the official "
                             "python images and Debian's are, run it measurably faster")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    ports = {name: free_port() for name in ("upstream", "nginx", "nginx_tls", "relay")}
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        work.chmod(0o755)          # nginx's unprivileged workers read the static files here
        static = work / "static"
        static.mkdir()
        plan = scenarios(static)
        tls = make_certificate(work / "tls")
        with nginx(work / "up", fake_upstream_servers(ports["upstream"]),
                   f"http://127.0.0.1:{ports['upstream']}/") as _up, \
             nginx(work / "px", proxy_pass_servers(ports["nginx"], ports["upstream"], static,
                                                   ports["nginx_tls"], tls),
                   f"http://127.0.0.1:{ports['nginx']}/") as nginx_pid, \
             relay(work, ports["relay"], ports["upstream"], args.workers,
                   args.coalesce, args.python) as relay_pid, \
             front(ports["relay"]) as (front_port, front_pid):
            relay_pids = process_tree(relay_pid)
            nginx_pids = process_tree(nginx_pid)
            contenders = {
                "nginx": (f"http://127.0.0.1:{ports['nginx']}", nginx_pids),
                "nginx_tls": (f"https://127.0.0.1:{ports['nginx_tls']}", nginx_pids),
                "relay": (f"http://127.0.0.1:{ports['relay']}", relay_pids),
                "front": (f"https://127.0.0.1:{front_port}",
                          relay_pids + process_tree(front_pid)),
            }
            for name in args.only.split(","):
                results += run_scenario(name, plan[name], contenders, work, args)
    table = markdown(results)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.md").write_text(table + "\n")
    (out / "bench.json").write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
