"""Soak: does the relay's memory stay flat under 1,000 concurrent keep-alive connections?

wrk drives the `/track` workload (bench/workloads.py: the ~2 KB batch bench/run.py sends) at
`--connections` keep-alive connections against the relay on bench/run.py's config (access log
off, the fake upstream nginx behind it), while the RSS of the relay's whole process tree
(supervisor + workers, VmRSS from /proc) and its open sockets are sampled every `--interval`
seconds. Then the same, shorter, against nginx proxy_pass on the same upstream, for the
side-by-side figure. Loopback only; every wrk run is bounded in time.

    python bench/soak.py [--duration 300] [--connections 1000] [--workers 2] [--interval 5]
                         [--nginx-duration SECONDS] [--out DIR]

Per contender: req/s, p50/p99, errors (wrk's socket errors and non-2xx answers; its "timeout"
counts answers that came after more than 2 s, not connections given up), CPU µs per request, and
RSS at the first sample after the warm-up (the first 10% of the run), at the end,
the peak, and the slope in MiB per minute of a least-squares line through the samples after the
warm-up. The verdict is "flat" when the end is within 10% (or 8 MiB, whichever is larger) of the
post-warm-up value and the slope is under 1 MiB/min. Also kept: the idle RSS before the load and
a few seconds after it, the open sockets (the client connections plus the upstream pool: /metrics
has no connection count), RSS and sockets per process, the relay's own /metrics counts over the
run (answers by status class, refusals, upstream failures and exchanges over 1 s), and every sample
(in the JSON). The relay's config sets no connection cap ([server] has none; the listen backlog is
2048), so 1,000 connections are all held: the sockets column shows them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.common import free_port  # noqa: E402
from bench.measure import Result, machine, measure, process_tree, wrk_script  # noqa: E402
from bench.servers import (  # noqa: E402
    Ports,
    RelaySetup,
    fake_upstream_servers,
    make_certificate,
    nginx,
    proxy_pass_servers,
    relay,
    relay_config,
)
from bench.workloads import Workload, workloads  # noqa: E402
from tests.support.metrics import parse  # noqa: E402

WARM_UP = 0.10                  # the first tenth of a run is warm-up: caches, pools, arenas fill
FLAT_FRACTION = 0.10            # the end may sit this far from the post-warm-up value ...
FLAT_FLOOR_MIB = 8.0            # ... or this many MiB, whichever is larger
FLAT_SLOPE_MIB_PER_MIN = 1.0
SETTLE_S = 3.0                  # the idle sample after the load waits this long


@dataclass(frozen=True)
class Sample:
    t: float                    # seconds since wrk started
    rss_mib: float              # the whole process tree
    sockets: int                # open sockets over the tree: the client connections show here
    by_pid: dict[int, tuple[float, int]]    # (RSS MiB, sockets) per process: which one grows


@dataclass
class Soak:
    contender: str
    duration_s: int
    connections: int
    result: Result
    samples: list[Sample]                       # under load, from t = 0 to wrk's end
    idle_before: Sample
    idle_after: Sample
    summary: dict[str, float | str] = field(default_factory=dict)
    own_view: dict[str, float] = field(default_factory=dict)   # the relay's /metrics, over the run


def memory_sample(root: int, t: float) -> Sample:
    """VmRSS and open sockets of `root`'s tree now (processes that exit meanwhile are skipped;
    the tree is walked afresh each time, so a restarted worker is counted)."""
    by_pid: dict[int, tuple[float, int]] = {}
    for pid in process_tree(root):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:         # it exited meanwhile
            continue
        kib = next((int(line.split()[1]) for line in status.splitlines()
                    if line.startswith("VmRSS:")), 0)
        by_pid[pid] = round(kib / 1024, 1), open_sockets(pid)
    return Sample(round(t, 1), round(sum(rss for rss, _ in by_pid.values()), 1),
                  sum(sockets for _, sockets in by_pid.values()), by_pid)


def open_sockets(pid: int) -> int:
    """How many of `pid`'s descriptors are sockets; one closing while it is counted is not."""
    count = 0
    try:
        descriptors = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return 0
    for descriptor in descriptors:
        try:
            count += descriptor.readlink().name.startswith("socket:")
        except OSError:
            continue
    return count


def relay_counts(metrics_url: str) -> dict[str, float]:
    """What the relay's own /metrics says: answers by status class, its refusals, upstream
    failures, and upstream exchanges over 1 s (wrk counts an answer over 2 s as a timeout)."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        samples = parse(response.read().decode())
    counts: defaultdict[str, float] = defaultdict(
        float, {"refused": 0.0, "upstream_failures": 0.0, "upstream_over_1s": 0.0})
    for (name, labels), value in samples.items():
        label = dict(labels)
        if name == "mixpanel_proxy_requests_total" and label.get("endpoint") == "track":
            counts[f"answers_{label['status']}"] += value
        elif name == "mixpanel_proxy_rejections_total":
            counts["refused"] += value
        elif name == "mixpanel_proxy_upstream_failures_total":
            counts["upstream_failures"] += value
        elif name == "mixpanel_proxy_upstream_seconds_count":
            counts["upstream_over_1s"] += value
        elif name == "mixpanel_proxy_upstream_seconds_bucket" and label.get("le") == "1.0":
            counts["upstream_over_1s"] -= value
    return dict(counts)


def soak(contender: str, url: str, root: int, harness: list[int], workload: Workload,
         script: Path, args: argparse.Namespace, duration: int, relay: bool = False) -> Soak:
    """wrk against `url` for `duration` s (run in a thread, through bench/measure.py's `measure`)
    while `root`'s tree is sampled here every `args.interval` s; a `relay`'s /metrics is read
    before and after."""
    counts_before = relay_counts(url + "/metrics") if relay else {}
    idle_before = memory_sample(root, 0.0)
    samples: list[Sample] = []
    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        run: Future[Result] = pool.submit(
            measure, "track", contender, url + workload.path, script, args.connections,
            duration, process_tree(root), workload.size, harness)
        tick = 0
        while not run.done():
            samples.append(memory_sample(root, time.monotonic() - started))
            tick += 1
            wait([run], timeout=max(0.0, started + tick * args.interval - time.monotonic()))
        result = run.result()
    time.sleep(SETTLE_S)
    idle_after = memory_sample(root, time.monotonic() - started)
    report = Soak(contender, duration, args.connections, result, samples, idle_before,
                  idle_after)
    if relay:
        counts = relay_counts(url + "/metrics")
        report.own_view = {key: round(value - counts_before.get(key, 0.0))
                           for key, value in sorted(counts.items())}
    report.summary = summarize(samples, duration)
    return report


def summarize(samples: list[Sample], duration: int) -> dict[str, float | str]:
    """The figures the verdict rests on, from the samples after the warm-up."""
    settled = [s for s in samples if s.t >= WARM_UP * duration]
    if len(settled) < 2:
        return {"verdict": "too short", "why": "fewer than 2 samples after the warm-up"}
    start, end = settled[0].rss_mib, settled[-1].rss_mib
    fit = statistics.linear_regression([s.t / 60 for s in settled],
                                       [s.rss_mib for s in settled])
    slope = fit.slope
    bound = max(FLAT_FRACTION * start, FLAT_FLOOR_MIB)
    flat = abs(end - start) <= bound and slope < FLAT_SLOPE_MIB_PER_MIN
    window = settled[-1].t - settled[0].t
    note = "" if window >= 60 else f" (fitted over {window:.0f} s: a short window magnifies noise)"
    return {"rss_after_warm_up_mib": start, "rss_end_mib": end,
            "rss_peak_mib": max(s.rss_mib for s in samples),
            "slope_mib_per_min": round(slope, 2),
            "sockets_peak": max(s.sockets for s in samples),
            "verdict": "flat" if flat else "NOT flat",
            "why": f"end {end - start:+.1f} MiB from the post-warm-up value (bound ±{bound:.1f}), "
                   f"slope {slope:+.2f} MiB/min (bound {FLAT_SLOPE_MIB_PER_MIN}){note}"}


def markdown(soaks: list[Soak], before: dict[str, str], after: dict[str, str],
             args: argparse.Namespace) -> str:
    lines = [f"CPU: {before['cpu']}, {before['cores']} cores; load average {before['loadavg']} "
             f"before, {after['loadavg']} after; {args.workers} relay workers; `/track` ~2 KB "
             f"POST, wrk -t2 -c{args.connections}; RSS of the whole process tree (VmRSS) every "
             f"{args.interval} s; warm-up: the first {WARM_UP:.0%} of each run.", "",
             "| contender | s | req/s | p50 ms | p99 ms | errors | CPU µs/req | others' CPU % "
             "| RSS idle MiB | after warm-up | end | peak | idle after | slope MiB/min "
             "| sockets peak | verdict |", "|---" * 16 + "|"]
    for s in soaks:
        r, f = s.result, s.summary
        lines.append(
            f"| {s.contender} | {s.duration_s} | {r.requests_per_s:,.0f} | {r.p50_ms:.1f} "
            f"| {r.p99_ms:.1f} | {_errors(r)} | {r.cpu_us_per_request:.0f} "
            f"| {r.others_cpu_pct:.0f} "
            f"| {s.idle_before.rss_mib:.1f} | {_mib(f, 'rss_after_warm_up_mib')} "
            f"| {_mib(f, 'rss_end_mib')} | {_mib(f, 'rss_peak_mib')} "
            f"| {s.idle_after.rss_mib:.1f} | {f.get('slope_mib_per_min', '—')} "
            f"| {f.get('sockets_peak', '—')} | {f['verdict']} |")
    lines.append("")
    lines += [_details(s) for s in soaks]
    return "\n".join(lines)


def _details(soak: Soak) -> str:
    """The verdict's reasons, every sample, who holds the memory and the relay's own counts."""
    last = soak.samples[-1].by_pid if soak.samples else {}
    line = (f"- {soak.contender}: {soak.summary['verdict']}: {soak.summary['why']}. RSS MiB per "
            "sample: " + " ".join(f"{sample.rss_mib:.0f}" for sample in soak.samples)
            + ". At the end, per process (MiB / sockets): "
            + ", ".join(f"{rss:.1f} / {sockets}" for rss, sockets in last.values()))
    if soak.own_view:
        line += ". Its /metrics over the run: " + ", ".join(
            f"{key} {value:.0f}" for key, value in soak.own_view.items())
    return line + "."


def _errors(result: Result) -> str:
    kinds = ", ".join(f"{kind} {count}" for kind, count in result.error_kinds.items())
    return f"{result.errors} ({kinds})" if kinds else str(result.errors)


def _mib(summary: dict[str, float | str], key: str) -> str:
    value = summary.get(key)
    return f"{value:.1f}" if isinstance(value, float) else "—"


def run_all(work: Path, args: argparse.Namespace) -> list[Soak]:
    """The fake upstream, nginx proxy_pass beside it and the relay (bench/servers.py, as
    bench/run.py starts them); the relay soaked first, then nginx."""
    ports, tls, static = Ports.choose(), make_certificate(work / "tls"), work / "static"
    static.mkdir()
    work.chmod(0o755)           # nginx's unprivileged workers read the static files here
    track = workloads(static)["track"]
    script = wrk_script(work, "track", track.method, track.body, track.headers)
    soaks = []
    with ExitStack() as stack:
        harness = process_tree(stack.enter_context(nginx(
            work / "up", fake_upstream_servers(ports, tls), f"http://127.0.0.1:{ports.upstream}/")))
        nginx_pid = stack.enter_context(nginx(
            work / "px", proxy_pass_servers(ports, static, tls, work / "px"),
            f"http://127.0.0.1:{ports.nginx}/"))
        port = free_port()
        relay_pid = stack.enter_context(relay(
            work / "relay", relay_config(port, ports, args.workers, RelaySetup(), tls), port))
        soaks.append(soak("relay", f"http://127.0.0.1:{port}", relay_pid, harness, track,
                          script, args, args.duration, relay=True))
        if args.nginx_duration > 0:
            soaks.append(soak("nginx", f"http://127.0.0.1:{ports.nginx}", nginx_pid, harness,
                              track, script, args, args.nginx_duration))
    return soaks


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=300, help="seconds of load on the relay")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2, help="relay worker processes")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--nginx-duration", type=int,
                        help="seconds of load on nginx (default: a third of --duration; 0: skip)")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    if args.nginx_duration is None:
        args.nginx_duration = max(1, args.duration // 3)
    if args.duration < 1 or args.connections < 1 or args.interval <= 0:
        parser.error("--duration, --connections and --interval must be positive")
    return args


def main() -> int:
    args = parse_args()
    before = machine()
    with tempfile.TemporaryDirectory() as tmp:
        soaks = run_all(Path(tmp), args)
    after = machine()
    report = markdown(soaks, before, after, args)
    print(report)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.md").write_text(report + "\n")
    (out / "soak.json").write_text(json.dumps(
        {"machine": before, "machine_after": after, "connections": args.connections,
         "workers": args.workers, "interval_s": args.interval,
         "soaks": [asdict(s) for s in soaks]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
