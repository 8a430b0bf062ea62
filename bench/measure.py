"""Measuring one contender: wrk for rate and latency, /proc for the CPU its processes spent, and
the machine's own load beside it, since a shared machine's noise is part of every figure."""

from __future__ import annotations

import os
import re
import resource
import statistics
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

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
    others_cpu_pct: float = 0.0         # the machine's CPU used by processes outside the run
    error_kinds: dict[str, int] = field(default_factory=dict)   # wrk's counts, by kind


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


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies over all cores since boot, from /proc/stat's first line."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]                            # idle + iowait
    return sum(values) - idle, sum(values)


def machine() -> dict[str, str]:
    """What the figures were measured on: the CPU model and core count, and the load when asked."""
    fields = dict(line.split(":", 1) for line in subprocess.run(
        ["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines() if ":" in line)
    return {"cpu": fields.get("Model name", "unknown").strip(),
            "cores": str(os.cpu_count()),
            "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3])}


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
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rate is None:
        raise RuntimeError(f"wrk printed no rate for {url}:\n{out}")
    kinds = error_kinds(out)
    return {"rate": float(rate.group(1)), "p50": _percentile(out, "50"),
            "p99": _percentile(out, "99"), "errors": sum(kinds.values()),
            **{f"error_{kind}": float(count) for kind, count in kinds.items()}}


def error_kinds(out: str) -> dict[str, int]:
    """wrk's socket errors (connect, read, write, timeout) and non-2xx/3xx answers, the non-zero
    ones."""
    kinds = {kind: int(n) for kind, n in re.findall(r"(connect|read|write|timeout) (\d+)", out)}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    kinds["non_2xx"] = int(non2xx.group(1)) if non2xx else 0
    return {kind: count for kind, count in kinds.items() if count}


def _percentile(out: str, which: str) -> float:
    match = re.search(rf"^\s+{which}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    if not match:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def children_cpu_seconds() -> float:
    """CPU of this process's finished children: wrk's, once it has been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(scenario: str, contender: str, url: str, script: Path, connections: int,
            duration: float, pids: list[int], body_size: int, harness: list[int]) -> Result:
    """One wrk run against `pids`; `harness` (the fake upstream) is ours too, so that the CPU
    nobody in the run used (neighbours on a shared machine) can be reported beside the figures."""
    own, theirs, wrk = cpu_seconds(pids), cpu_seconds(harness), children_cpu_seconds()
    busy_before, total_before = machine_jiffies()
    stats = run_wrk(url, script, connections, duration)
    busy_after, total_after = machine_jiffies()
    cpu = cpu_seconds(pids) - own
    ours = cpu + cpu_seconds(harness) - theirs + children_cpu_seconds() - wrk
    others = (busy_after - busy_before) / CLK_TCK - ours
    requests = stats["rate"] * duration
    return Result(scenario, contender, round(stats["rate"], 1), stats["p50"], stats["p99"],
                  round(cpu / max(requests, 1) * 1e6, 1), int(stats["errors"]),
                  round(stats["rate"] * body_size / 1e6, 1),
                  round(max(0.0, 100 * others * CLK_TCK / max(total_after - total_before, 1))),
                  {key.removeprefix("error_"): int(value) for key, value in stats.items()
                   if key.startswith("error_")})


def median_result(runs: list[Result]) -> Result:
    """One row from a contender's alternating runs: the median of each figure, errors summed."""
    first = runs[0]
    rate = statistics.median(r.requests_per_s for r in runs)
    return Result(first.scenario, first.contender, round(rate, 1),
                  statistics.median(r.p50_ms for r in runs),
                  statistics.median(r.p99_ms for r in runs),
                  statistics.median(r.cpu_us_per_request for r in runs),
                  sum(r.errors for r in runs),
                  statistics.median(r.mb_per_s for r in runs),
                  statistics.median(r.others_cpu_pct for r in runs),
                  dict(sum((Counter(r.error_kinds) for r in runs), Counter())))
