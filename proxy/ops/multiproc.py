"""One view of the whole relay in `/metrics` and `/status`, however many workers serve.

prometheus_client's multiprocess mode is the library's own answer: every process writes its
values to memory-mapped files in one directory, and a scrape (answered by any worker) sums them.
The supervisor prepares the directory before it forks, so every worker, and every later
generation after a reload, writes there: counters are kept across reloads and dying workers (a
dead worker's files stay and keep counting), and the supervisor's own series (config reloads)
join them. Gauges say how they combine (`multiprocess_mode` in metrics.py); the `live*` ones
drop a worker's values when the supervisor reports it dead.

A scrape also shows the processes themselves: the supervisor as the standard `process_*`
series (its start time is the relay's uptime, unchanged by reloads), each live worker by pid,
and `mixpanel_proxy_build_info`.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, ProcessCollector, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from .. import __version__

__all__ = [
    "ENV", "BuildInfo", "active", "aggregated_registry", "enable", "families", "process_died",
    "release",
]

ENV = "PROMETHEUS_MULTIPROC_DIR"
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_pid = [os.getpid()]
_given = [False]          # the directory came from $PROMETHEUS_MULTIPROC_DIR: not ours to remove


def active() -> bool:
    return bool(os.environ.get(ENV))


def enable() -> Path:
    """In the supervisor, before any metric exists and before forking: a clean directory
    (`$PROMETHEUS_MULTIPROC_DIR` if the operator set one, else under systemd's
    `$RUNTIME_DIRECTORY`, else a new temporary one), and the multiprocess value class."""
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
    # The library's default asks the OS for the pid on every increment, to notice a fork; a
    # pid remembered and renewed at fork costs nothing on the request path.
    os.register_at_fork(after_in_child=_renew_pid)
    values.ValueClass = values.MultiProcessValue(  # type: ignore[no-untyped-call]
        process_identifier=_cached_pid)
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


def _renew_pid() -> None:
    _pid[0] = os.getpid()


def _cached_pid() -> int:
    return _pid[0]


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
