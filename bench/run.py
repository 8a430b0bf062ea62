"""Side-by-side benchmark: the relay against nginx doing the same job, as deployments run them.

One invocation runs every scenario, alternating the contenders run by run so a noisy neighbour
hurts all of them alike, and reports the median req/s, p50/p99 latency, CPU per request (from
/proc) and the ratios to the scenario's nginx, as markdown and JSON, under a header naming the CPU
model, the core count and the machine's load. Loopback only; every wrk run is bounded in time.

    python bench/run.py [--duration 8] [--runs 3] [--workers 2] [--only track,track_https,...]
                        [--python /path/to/python] [--compiled]
                        [--before CHECKOUT]

Scenarios (the first contender of each is its baseline; `front` is set beside `nginx_tls`):
  track, track_c10, record, bundle   plain HTTP upstream, access logs off (as before, for
                   continuity): nginx proxy_pass, the relay alone, the bare callback relay
                   (bench/ceiling.py, /track only), and the shipped nginx/ front over TLS in front
                   of the relay beside nginx on TLS. bundle: nginx serves the same bytes
                   statically, pre-compressed with brotli.
  track_https      the upstream over TLS, as api.mixpanel.com is: nginx with an upstream keep-alive
                   pool and proxy_ssl_session_reuse, the relay with [upstream] ca_file.
  track_defaults   each side with its default access logging: nginx's default access_log
                   (combined, to a file, unbuffered), the relay's embedded [log] defaults (one
                   JSON line per request on stderr, to a file); each beside itself with logs
                   off in the same rounds, so what logging costs each side is a ratio of
                   neighbouring runs (the median over rounds), not of two scenarios minutes apart.
  front_https      what a TLS deployment runs: the shipped front (its own access log) and the relay
                   (access log off, ca_file) with the HTTPS upstream, against nginx doing the same
                   job alone: TLS in with the front's TLS settings and log line, HTTPS out.
Builds: the relay runs from this checkout (pure Python, what `pip install .` gives) unless
`--compiled`, which builds the compiled wheel's package (.ci/compiled-tree: what the Docker image
and `MIXPANEL_PROXY_COMPILE=1 pip install .` ship) into the run's scratch directory and runs
every relay contender from it, with the pure build beside it as `relay_pure` in the track
scenarios. The header names the build.
The fake upstream and CDN are a separate nginx, so the upstream is never the bottleneck and its CPU
is never counted. The "others' CPU %" column is the machine's CPU used during a run by processes
outside it (neighbours on a shared machine): quote rows where it stays near 0.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from contextlib import AbstractContextManager, ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.common import free_port  # noqa: E402
from bench.measure import (  # noqa: E402
    Result,
    machine,
    measure,
    median_result,
    process_tree,
    wrk_script,
)
from bench.servers import (  # noqa: E402
    Ports,
    RelaySetup,
    ceiling,
    fake_upstream_servers,
    front,
    make_certificate,
    nginx,
    proxy_pass_servers,
    relay,
    relay_config,
)
from bench.workloads import ROOT, Workload, workloads  # noqa: E402


@dataclass(frozen=True)
class Scenario:
    workload: str
    contenders: tuple[str, ...]         # the first is the baseline, but see BASELINE
    extras: bool = True                 # `relay_pure`, `relay_before` beside `relay`


PLAIN = ("nginx", "relay", "nginx_tls", "front")
SCENARIOS = {
    "track": Scenario("track", ("nginx", "relay", "ceiling", "nginx_tls", "front")),
    "track_c10": Scenario("track_c10", PLAIN),
    "track_https": Scenario("track", ("nginx_https", "relay_https")),
    "track_defaults": Scenario("track", ("nginx", "nginx_logged", "relay", "relay_logged"),
                               extras=False),
    "front_https": Scenario("track", ("nginx_tls_https", "front_https")),
    "record": Scenario("record", PLAIN),
    "bundle": Scenario("bundle", PLAIN),
}
# The TLS front is set beside the nginx that also takes TLS in.
# The relay logging by default is set beside nginx logging by default.
BASELINE = {"front": "nginx_tls", "nginx_tls": "nginx_tls", "relay_logged": "nginx_logged",
            "nginx_logged": "nginx_logged"}
# What default access logging costs each side: its logged contender against its quiet one.
LOGGING = {"nginx": ("nginx", "nginx_logged"), "relay": ("relay", "relay_logged")}
Contender = tuple[str, list[int]]       # base URL, the pids whose CPU counts


class Lab:
    """The contenders, each started the first time a scenario needs it and kept until the end."""

    def __init__(self, work: Path, args: argparse.Namespace, stack: ExitStack) -> None:
        self.work, self.args, self.stack = work, args, stack
        self.ports = Ports.choose()
        self.tls = make_certificate(work / "tls")
        self.static = work / "static"
        self.static.mkdir()
        self.started: dict[str, Contender] = {}
        self.harness: list[int] = []            # the fake upstream's processes
        self.relays: dict[RelaySetup, tuple[int, list[int]]] = {}
        self.tree = compiled_tree(work / "compiled") if args.compiled else ROOT

    def __getitem__(self, name: str) -> Contender:
        if name not in self.started:
            self.started[name] = self._start(name)
        return self.started[name]

    def _enter(self, manager: AbstractContextManager[int]) -> list[int]:
        return process_tree(self.stack.enter_context(manager))

    def _start(self, name: str) -> Contender:
        if name.startswith("nginx"):
            self._baselines()
            return f"{'https' if 'tls' in name else 'http'}://127.0.0.1:" \
                   f"{getattr(self.ports, name)}", self.started["nginx"][1]
        if name == "ceiling":
            port = free_port()
            pids = self._enter(ceiling(port, self.ports.upstream, self.args.workers,
                                       self.args.python))
            return f"http://127.0.0.1:{port}", pids
        if name == "relay_before":
            return self._relay_from("relay-before", Path(self.args.before))
        if name == "relay_pure":
            return self._relay_from("relay-pure", ROOT)
        setups = {"relay": RelaySetup(), "relay_https": RelaySetup(https=True),
                  "relay_logged": RelaySetup(default_log=True), "front": RelaySetup(),
                  "front_https": RelaySetup(https=True)}
        port, relay_pids = self._relay(setups[name])
        if name.startswith("relay"):
            return f"http://127.0.0.1:{port}", relay_pids
        front_port, front_pid = self.stack.enter_context(front(port))
        return f"https://127.0.0.1:{front_port}", relay_pids + process_tree(front_pid)

    def _relay_from(self, name: str, checkout: Path) -> Contender:
        """The plain relay from another checkout (`--before`, or the pure build beside the
        compiled one), on the same config and upstream."""
        self._baselines()
        port = free_port()
        config = relay_config(port, self.ports, self.args.workers, RelaySetup(), self.tls)
        pids = self._enter(relay(self.work / name, config, port, self.args.python, checkout))
        return f"http://127.0.0.1:{port}", pids

    def _baselines(self) -> None:
        """The fake upstream and the nginx baselines (one nginx, one server per baseline)."""
        if "nginx" in self.started:
            return
        self.work.chmod(0o755)      # nginx's unprivileged workers read the static files here
        ports, up = self.ports, self.work / "up"
        self.harness = self._enter(nginx(up, fake_upstream_servers(ports, self.tls),
                                         f"http://127.0.0.1:{ports.upstream}/"))
        pids = self._enter(nginx(self.work / "px",
                                 proxy_pass_servers(ports, self.static, self.tls,
                                                    self.work / "px"),
                                 f"http://127.0.0.1:{ports.nginx}/"))
        self.started["nginx"] = (f"http://127.0.0.1:{ports.nginx}", pids)

    def _relay(self, setup: RelaySetup) -> tuple[int, list[int]]:
        """One relay per configuration, shared by the contenders that use it."""
        if setup not in self.relays:
            self._baselines()                   # its upstream
            port = free_port()
            config = relay_config(port, self.ports, self.args.workers, setup, self.tls)
            workdir = self.work / f"relay-{len(self.relays)}"
            self.relays[setup] = port, self._enter(relay(workdir, config, port, self.args.python,
                                                         self.tree))
        return self.relays[setup]


def compiled_tree(target: Path) -> Path:
    """The compiled build of this checkout, unpacked beside its tests (.ci/compiled-tree)."""
    subprocess.run(["bash", str(ROOT / ".ci" / "compiled-tree"), str(target)], check=True,
                   stdout=subprocess.DEVNULL, timeout=900)
    return target


def run_scenario(name: str, scenario: Scenario, workload: Workload, lab: Lab,
                 args: argparse.Namespace) -> dict[str, list[Result]]:
    """Every contender, run by run (alternating): each one's runs in order."""
    script = wrk_script(lab.work, name, workload.method, workload.body, workload.headers)
    contenders = {contender: lab[contender] for contender in scenario.contenders}
    runs: dict[str, list[Result]] = {contender: [] for contender in contenders}
    for _ in range(args.runs):
        for contender, (base, pids) in contenders.items():
            static = contender.startswith("nginx") and workload.nginx_path
            path = workload.nginx_path if static else workload.path
            runs[contender].append(measure(name, contender, f"{base}{path}", script,
                                           workload.connections, args.duration, pids,
                                           workload.size, lab.harness))
    return runs


def header(before: dict[str, str], after: dict[str, str], args: argparse.Namespace) -> str:
    return (f"CPU: {before['cpu']}, {before['cores']} cores; load average {before['loadavg']} "
            f"before, {after['loadavg']} after; {args.workers} relay workers "
            f"({'compiled' if args.compiled else 'pure Python'} build), {args.runs} "
            f"alternating runs of {args.duration} s each, medians; wrk -t2.")


def baseline_of(result: Result, scenario: Scenario) -> str:
    return BASELINE.get(result.contender, scenario.contenders[0])


def markdown(results: list[Result], log_costs: dict[str, list[float]]) -> str:
    lines = ["| scenario | contender | req/s | p50 ms | p99 ms | CPU µs/req | MB/s | errors "
             "| others' CPU % | req/s vs nginx | CPU vs nginx |", "|---" * 11 + "|"]
    rows = {(r.scenario, r.contender): r for r in results}
    for r in results:
        b = rows.get((r.scenario, baseline_of(r, SCENARIOS[r.scenario])))
        ratio = f"{r.requests_per_s / b.requests_per_s:.2f}×" if b and b.requests_per_s else "—"
        cpu = (f"{r.cpu_us_per_request / b.cpu_us_per_request:.1f}×"
               if b and b.cpu_us_per_request else "—")
        lines.append(f"| {r.scenario} | {r.contender} | {r.requests_per_s:,.0f} | {r.p50_ms:.2f} "
                     f"| {r.p99_ms:.2f} | {r.cpu_us_per_request:.0f} | {r.mb_per_s:.1f} "
                     f"| {r.errors} | {r.others_cpu_pct:.0f} | {ratio} | {cpu} |")
    if log_costs:
        lines += ["", "Throughput change with default access logging (track_defaults, the median "
                  "of each round's logged run against its logs-off run, and their range): " +
                  ", ".join(f"{side} {statistics.median(costs):+.1%} ({min(costs):+.1%} to "
                            f"{max(costs):+.1%})" for side, costs in log_costs.items()) + "."]
    return "\n".join(lines)


def log_costs(runs: dict[str, list[Result]]) -> dict[str, list[float]]:
    """What default access logging costs each side, as a fraction of its logs-off throughput,
    round by round (the two runs neighbours in time); the report gives their median."""
    costs = {}
    for side, (off, on) in LOGGING.items():
        pairs = [(quiet.requests_per_s, logged.requests_per_s)
                 for quiet, logged in zip(runs.get(off, []), runs.get(on, []), strict=True)]
        if pairs and all(quiet for quiet, _ in pairs):
            costs[side] = [logged / quiet - 1 for quiet, logged in pairs]
    return costs


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    parser.add_argument("--runs", "--rounds", type=int, default=3, dest="runs",
                        help="alternating runs per scenario; medians are reported")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", default=",".join(SCENARIOS),
                        help=f"comma-separated scenarios, from: {', '.join(SCENARIOS)}")
    parser.add_argument("--python", default=sys.executable,
                        help="the interpreter that runs the relay and the ceiling (it must have "
                             "the project's dependencies); interpreters built with PGO/LTO, as "
                             "the official python images and Debian's are, run it faster")
    parser.add_argument("--before", metavar="CHECKOUT",
                        help="also run the plain relay from another checkout (e.g. a worktree of "
                             "the last release) as `relay_before` in the track scenarios")
    parser.add_argument("--compiled", action="store_true",
                        help="run the relay contenders from the compiled build (the Docker "
                             "image's), with the pure build beside it as `relay_pure`")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    unknown = set(args.only.split(",")) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    return args


def main() -> int:
    args = parse_args()
    before = machine()
    results: list[Result] = []
    costs: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        lab = Lab(Path(tmp), args, stack)
        loads = workloads(lab.static)
        for name in args.only.split(","):
            scenario = SCENARIOS[name]
            extra = (("relay_pure",) if args.compiled else ()) + \
                (("relay_before",) if args.before else ())
            if "relay" in scenario.contenders and scenario.extras:
                scenario = Scenario(scenario.workload, (*scenario.contenders, *extra))
            runs = run_scenario(name, scenario, loads[scenario.workload], lab, args)
            results += [median_result(contender_runs) for contender_runs in runs.values()]
            if name == "track_defaults":
                costs = log_costs(runs)
    report = header(before, machine(), args) + "\n\n" + markdown(results, costs)
    print(report)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.md").write_text(report + "\n")
    (out / "bench.json").write_text(json.dumps(
        {"machine": before, "runs": args.runs, "duration_s": args.duration,
         "results": [asdict(r) for r in results], "logging_cost": costs}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
