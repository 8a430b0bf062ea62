"""One view of the whole relay in `/metrics` and `/status`, however many workers serve.

prometheus_client's multiprocess files are the format: each process's values in memory-mapped
files in one directory, which a scrape (answered by any worker) combines with the library's
`MultiProcessCollector`. The supervisor prepares the directory before it forks, so every worker,
and every later generation after a reload, writes there: counters are kept across reloads and
dying workers (a dead worker's files stay and keep counting), and the supervisor's own series
(config reloads) join them. Gauges say how they combine (`multiprocess_mode` in metrics.py); the
`live*` ones drop a worker's values when the supervisor reports it dead.

Unlike the library's own multiprocess mode, a worker does not write on every increment (a lock
and a file write, about 1 us per increment, several per request): its metrics stay plain
in-memory values, and `Publisher` copies them to its files every second, at exit, and right
before it answers a scrape. A scrape is thus exact for the worker answering and at most a second
behind for the others; every worker's counters only grow, so their sum never goes backwards.

A scrape also shows the processes themselves: the supervisor as the standard `process_*`
series (its start time is the relay's uptime, unchanged by reloads), each live worker by pid,
and `mixpanel_proxy_build_info`.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from .. import __version__

__all__ = [
    "ENV", "PUBLISH_INTERVAL", "BuildInfo", "Publisher", "active", "aggregated_registry",
    "enable", "families", "process_died", "release",
]

ENV = "PROMETHEUS_MULTIPROC_DIR"
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
PUBLISH_INTERVAL = 1.0    # seconds between a worker's copies of its values to its files
_given = [False]          # the directory came from $PROMETHEUS_MULTIPROC_DIR: not ours to remove


def active() -> bool:
    return bool(os.environ.get(ENV))


def enable() -> Path:
    """In the supervisor, before forking: a clean directory (`$PROMETHEUS_MULTIPROC_DIR` if the
    operator set one, else under systemd's `$RUNTIME_DIRECTORY`, else a new temporary one)."""
    given = os.environ.get(ENV)
    _given[0] = bool(given)
    if given:
        directory = Path(given)
    elif os.environ.get("RUNTIME_DIRECTORY"):
        directory = Path(os.environ["RUNTIME_DIRECTORY"].split(":")[0]) / "metrics"
    else:
        directory = Path(tempfile.mkdtemp(prefix="mixpanel-proxy-metrics-"))
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):      # a previous run's counts are not this run's
        stale.unlink()
    os.environ[ENV] = str(directory)
    return directory


def release(directory: Path) -> None:
    """At the supervisor's exit: the files counted this run only (a directory the operator
    named stays, emptied of them)."""
    for counted in directory.glob("*.db"):
        counted.unlink(missing_ok=True)
    if not _given[0]:
        shutil.rmtree(directory, ignore_errors=True)


def process_died(pid: int) -> None:
    """A worker exited: its live gauges (in-flight requests, readiness, ...) stop counting."""
    mark_process_dead(pid)  # type: ignore[no-untyped-call]


def aggregated_registry() -> CollectorRegistry:
    """What a scrape shows in multiprocess mode: every process's values combined, the
    supervisor's process series, each worker's, and the build."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    ProcessCollector(pid=os.getppid, registry=registry)   # a worker's parent: the supervisor
    registry.register(WorkerProcesses(os.getppid()))
    registry.register(BuildInfo())
    return registry


def families(registry: CollectorRegistry) -> Iterable[Metric]:
    """The families a page shows: the combined view in multiprocess mode, else `registry`."""
    return aggregated_registry().collect() if active() else registry.collect()


class Publisher:
    """Copies one process's registry to its files in the shared directory, in the layout
    `MultiProcessCollector` reads: `counter_<pid>.db`, `histogram_<pid>.db` (buckets not
    cumulative), `gauge_<mode>_<pid>.db`."""

    def __init__(self, registry: CollectorRegistry, gauge_modes: Mapping[str, str]) -> None:
        self._registry = registry
        self._modes = gauge_modes
        self._files: dict[str, MmapedDict] = {}
        self._keys: dict[tuple[str, str, tuple[tuple[str, str], ...]], str] = {}

    def publish(self) -> None:
        now = time.time()
        for family in self._registry.collect():
            if family.type == "counter":
                self._counter(family)
            elif family.type == "gauge":
                mode = self._modes.get(family.name, "all")
                for sample in family.samples:
                    self._write(f"gauge_{mode}", family, sample.name, sample.labels,
                                sample.value, now)
            elif family.type == "histogram":
                self._histogram(family)

    def close(self) -> None:
        for file in self._files.values():
            file.close()  # type: ignore[no-untyped-call]
        self._files.clear()

    def _counter(self, family: Metric) -> None:
        for sample in family.samples:
            if sample.name.endswith("_total"):
                self._write("counter", family, sample.name, sample.labels, sample.value)

    def _histogram(self, family: Metric) -> None:
        below: dict[tuple[tuple[str, str], ...], float] = {}    # cumulative count so far
        for sample in family.samples:
            if sample.name.endswith("_sum"):
                self._write("histogram", family, sample.name, sample.labels, sample.value)
            elif sample.name.endswith("_bucket"):
                series = tuple((k, v) for k, v in sample.labels.items() if k != "le")
                self._write("histogram", family, sample.name, sample.labels,
                            sample.value - below.get(series, 0.0))
                below[series] = sample.value

    def _write(self, kind: str, family: Metric, name: str, labels: Mapping[str, str],
               value: float, timestamp: float = 0.0) -> None:
        cache = (family.name, name, tuple(labels.items()))
        key = self._keys.get(cache)
        if key is None:
            key = self._keys[cache] = mmap_key(family.name, name, list(labels),
                                               list(labels.values()), family.documentation)
        file = self._files.get(kind)
        if file is None:
            path = Path(os.environ[ENV]) / f"{kind}_{os.getpid()}.db"
            file = self._files[kind] = MmapedDict(str(path))  # type: ignore[no-untyped-call]
        file.write_value(key, value, timestamp)  # type: ignore[no-untyped-call]


class BuildInfo(Collector):
    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("mixpanel_proxy_build_info", "The relay's version and "
                                 "Python; always 1.", labels=("version", "python"))
        info.add_metric((__version__, platform.python_version()), 1)
        yield info


class WorkerProcesses(Collector):
    """CPU and memory of each live worker, read from /proc, labelled by pid."""

    def __init__(self, supervisor: int) -> None:
        self._supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        cpu = CounterMetricFamily("mixpanel_proxy_worker_cpu_seconds", "CPU time of each live "
                                  "worker process.", labels=("pid",))
        memory = GaugeMetricFamily("mixpanel_proxy_worker_resident_memory_bytes", "Resident "
                                   "memory of each live worker process.", labels=("pid",))
        for pid in _children(self._supervisor):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
                pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
            except (OSError, IndexError, ValueError):
                continue        # exited between the listing and the read
            cpu.add_metric((str(pid),), (int(stat[11]) + int(stat[12])) / _TICKS)
            memory.add_metric((str(pid),), pages * _PAGE)
        yield cpu
        yield memory


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]
