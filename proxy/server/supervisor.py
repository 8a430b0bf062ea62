"""The supervisor: binds the listening socket once (or one per worker slot, listeners.py), forks
`[server] workers` processes onto it.

Every socket outlives the workers that accept on it, so a connection waiting in its queue is
served by a live worker (any, on the shared socket; the slot's next, with `reuse_port`): one that
dies or drains loses nothing that was not yet accepted.

- a worker that dies is replaced (with a growing delay if it keeps dying young);
- SIGHUP re-reads the config file. A bad file is refused with the same messages as `check` and
  the running workers keep serving; a good one starts a new generation of workers, and only once
  all of them accept does the old generation drain and exit;
- SIGTERM/SIGINT drain every worker (in-flight requests finish within `[server] shutdown_timeout`,
  the app's cleanup runs) and the supervisor exits 0. A second signal kills what is left.

The supervisor itself runs no event loop: it forks, and an event loop does not survive a fork.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter

from .. import __version__
from ..config import Config, ConfigError, load_config
from ..ops import multiproc
from ..ops.logs import announce
from .listeners import Listeners
from .worker import run_worker

log = logging.getLogger("mixpanel_proxy.supervisor")

START_TIMEOUT = 60.0      # seconds a new generation has to start accepting
KILL_GRACE = 5.0          # seconds past shutdown_timeout before a draining worker is killed
YOUNG_DEATH = 5.0         # a worker dying sooner than this is restarted with a growing delay
MAX_RESTART_DELAY = 30.0
_TICK = 0.5
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass
class WorkerProcess:
    pid: int
    slot: int
    generation: int
    started: float
    ready_fd: int | None       # read end of the ready pipe, until the worker reports or dies
    ready: bool = False
    kill_at: float | None = None   # set once the worker was told to drain


def serve(config: Config, path: str | None, pid_file: str | None = None) -> int:
    """Run the relay: bind, supervise the workers, return the exit code."""
    try:
        listeners = Listeners.bind(config.server.host, config.server.port,
                                   config.server.reuse_port)
    except OSError as exc:
        print(f"server.listen: cannot listen on {config.server.host}:{config.server.port} "
              f"({exc.strerror})", file=sys.stderr)
        return 1
    # Before any metric exists and before the first fork: every worker of every generation
    # then writes to one directory, and any of them answers a scrape for all (ops/multiproc.py).
    try:
        metrics_dir = multiproc.enable()
    except OSError as exc:
        print(f"metrics: cannot prepare the directory the workers share their metrics in "
              f"({exc}); set {multiproc.ENV} to a writable directory", file=sys.stderr)
        listeners.close()
        return 1
    if pid_file:
        Path(pid_file).write_text(f"{os.getpid()}\n")
    try:
        return Supervisor(config, path, listeners).run()
    finally:
        multiproc.release(metrics_dir)
        if pid_file:
            Path(pid_file).unlink(missing_ok=True)


class Supervisor:
    def __init__(self, config: Config, path: str | None, listeners: Listeners) -> None:
        self._config = config
        self._bound = config.server          # the listen address the socket was bound for
        self._path = path
        self._listeners = listeners
        self._pid = os.getpid()
        self._workers: dict[int, WorkerProcess] = {}
        self._generation = 0          # the generation serving now
        self._pending: tuple[int, Config, float] | None = None   # generation, config, deadline
        self._reload_again = False
        self._restarts: dict[int, float] = {}    # slot -> when to start its replacement
        self._delays: dict[int, float] = {}      # slot -> next restart delay
        self._serving = False         # the first generation has started accepting
        self._stopping = False
        self._exit_code = 0
        self._wakeup_r, self._wakeup_w = os.pipe()
        # The supervisor's own series, summed with the workers' by the multiprocess collector
        # (the workers export the same family at 0, so it exists before the first reload).
        registry = CollectorRegistry()
        self._reloads = Counter("mixpanel_proxy_config_reloads", "Config reloads, by result.",
                                ("result",), registry=registry)
        self._publisher = multiproc.Publisher(registry, {})

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> int:
        self._install_signals()
        self._start_generation(self._config)
        while not (self._stopping and not self._workers):
            self._wait(_TICK)
            self._reap()
            self._advance_generation()
            self._restart_due()
            self._kill_overdue()
        self._listeners.close()
        log.info("mixpanel-proxy stopped")
        return self._exit_code

    def _install_signals(self) -> None:
        os.set_blocking(self._wakeup_w, False)
        signal.set_wakeup_fd(self._wakeup_w, warn_on_full_buffer=False)
        for signum in (*_STOP_SIGNALS, signal.SIGHUP, signal.SIGCHLD):
            # The C-level handler writes the signal number to the wakeup pipe; _wait reads it.
            signal.signal(signum, lambda *_: None)

    def _wait(self, timeout: float) -> None:
        fds = [self._wakeup_r] + [w.ready_fd for w in self._workers.values()
                                  if w.ready_fd is not None]
        try:
            readable, _, _ = select.select(fds, [], [], timeout)
        except InterruptedError:
            return
        for fd in readable:
            if fd == self._wakeup_r:
                for signum in os.read(self._wakeup_r, 64):
                    self._on_signal(signum)
            else:
                self._on_ready_pipe(fd)

    def _on_signal(self, signum: int) -> None:
        if signum in _STOP_SIGNALS:
            self._stop(force=self._stopping)
        elif signum == signal.SIGHUP and not self._stopping:
            self._reload()

    def _on_ready_pipe(self, fd: int) -> None:
        worker = next(w for w in self._workers.values() if w.ready_fd == fd)
        worker.ready = os.read(fd, 1) == b"1"
        os.close(fd)
        worker.ready_fd = None

    # -- workers ----------------------------------------------------------------------------

    def _start_generation(self, config: Config) -> None:
        generation = self._generation + 1 if self._serving else self._generation
        self._pending = (generation, config, time.monotonic() + START_TIMEOUT)
        for slot in range(config.server.workers):
            self._spawn(slot, generation, config)

    def _spawn(self, slot: int, generation: int, config: Config) -> None:
        sockets = self._listeners.for_worker(slot, config.server.workers)
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            self._become_worker(config, sockets, ready_r, ready_w)
        os.close(ready_w)
        self._workers[pid] = WorkerProcess(pid, slot, generation, time.monotonic(), ready_r)

    def _become_worker(self, config: Config, sockets: list[socket.socket], ready_r: int,
                       ready_w: int) -> None:
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            for fd in (ready_r, self._wakeup_r, self._wakeup_w,
                       *(w.ready_fd for w in self._workers.values() if w.ready_fd is not None)):
                os.close(fd)
            for other in self._listeners.sockets:     # another slot's: not this worker's queue
                if other not in sockets:
                    other.close()
            code = run_worker(config, sockets, ready_w, self._pid)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self._workers.pop(pid, None)
            multiproc.process_died(pid)
            if worker is not None:
                self._on_exit(worker, os.waitstatus_to_exitcode(status))

    def _on_exit(self, worker: WorkerProcess, code: int) -> None:
        if worker.ready_fd is not None:
            os.close(worker.ready_fd)
        if worker.kill_at is not None or self._stopping:
            return  # a drain we asked for
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        if self._pending is not None and worker.generation == self._pending[0]:
            log.error("worker %d %s before accepting", worker.pid, how)
            self._abandon_pending()
            return
        lived = time.monotonic() - worker.started
        delay = self._delays.get(worker.slot, 0.0) if lived < YOUNG_DEATH else 0.0
        self._delays[worker.slot] = min(max(delay * 2, 1.0), MAX_RESTART_DELAY)
        log.warning("worker %d %s; starting a replacement in %.0f s", worker.pid, how, delay)
        self._restarts[worker.slot] = time.monotonic() + delay

    def _restart_due(self) -> None:
        now = time.monotonic()
        for slot, due in list(self._restarts.items()):
            if due <= now and not self._stopping:
                del self._restarts[slot]
                if slot < self._config.server.workers:
                    self._spawn(slot, self._generation, self._config)

    def _drain(self, worker: WorkerProcess, timeout: float) -> None:
        if worker.kill_at is None:
            worker.kill_at = time.monotonic() + timeout + KILL_GRACE
            _signal(worker.pid, signal.SIGTERM)

    def _kill_overdue(self) -> None:
        now = time.monotonic()
        for worker in self._workers.values():
            if worker.kill_at is not None and worker.kill_at <= now:
                log.error("worker %d did not drain in time; killing it", worker.pid)
                _signal(worker.pid, signal.SIGKILL)
                worker.kill_at = float("inf")

    # -- generations: start, reload, stop ---------------------------------------------------

    def _advance_generation(self) -> None:
        if self._pending is None:
            return
        generation, config, deadline = self._pending
        new = [w for w in self._workers.values() if w.generation == generation]
        if new and all(w.ready for w in new):
            self._promote(generation, config)
        elif time.monotonic() > deadline:
            log.error("the new workers did not start accepting within %.0f s", START_TIMEOUT)
            self._abandon_pending()

    def _promote(self, generation: int, config: Config) -> None:
        first = not self._serving
        self._serving = True
        old_timeout = self._config.server.shutdown_timeout
        for worker in self._workers.values():
            if worker.generation != generation:
                self._drain(worker, old_timeout)
        self._pending = None
        self._generation, self._config = generation, config
        self._restarts.clear()
        host, port = self._listeners.address
        if first:
            announce(f"mixpanel-proxy {__version__} listening on http://{_url_host(host)}:{port} "
                     f"(config: {config.source})")
            log.info("%d worker(s) serving", config.server.workers)
        else:
            self._count_reload("ok")
            log.info("reloaded %s: %d worker(s) serving generation %d", config.source,
                     config.server.workers, generation)
        if self._reload_again:
            self._reload_again = False
            self._reload()

    def _abandon_pending(self) -> None:
        assert self._pending is not None
        generation = self._pending[0]
        self._pending = None
        for worker in self._workers.values():
            if worker.generation == generation:
                self._drain(worker, 0.0)
        if not self._serving:   # the very first generation: nothing else serves
            log.error("mixpanel-proxy could not start its workers")
            self._exit_code = 1
            self._stop(force=False)
        else:
            self._count_reload("error")
            log.error("reload abandoned: the previous config keeps serving")

    def _reload(self) -> None:
        if self._pending is not None:
            self._reload_again = True
            return
        try:
            config = load_config(self._path)
        except ConfigError as exc:
            self._count_reload("error")
            log.error("reload refused: %s has problems; the previous config keeps serving",
                      self._path or "the embedded default")
            for problem in exc.problems:
                log.error("%s", problem)
            return
        # The socket bound at start, not the previous config's address: after a second change
        # of `listen` that config names an address the relay never listened on.
        host, port = self._listeners.address
        if (config.server.host, config.server.port) != (self._bound.host, self._bound.port):
            log.warning("server.listen changed: the listening socket stays on %s:%d until a "
                        "restart", host, port)
        log.info("reloading %s", config.source)
        self._start_generation(config)

    def _count_reload(self, result: str) -> None:
        self._reloads.labels(result).inc()
        if multiproc.active():
            self._publisher.publish()

    def _stop(self, force: bool) -> None:
        if force:
            log.warning("second stop signal: killing the remaining workers")
            for worker in self._workers.values():
                _signal(worker.pid, signal.SIGKILL)
            return
        if not self._stopping:
            log.info("stopping: draining %d worker(s)", len(self._workers))
        self._stopping = True
        self._pending = None
        self._restarts.clear()
        # Once the workers close their copies too, new connections are refused at once instead
        # of waiting in a queue that no one will serve.
        self._listeners.close()
        for worker in self._workers.values():
            self._drain(worker, self._config.server.shutdown_timeout)


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except OSError as exc:
        if exc.errno != errno.ESRCH:
            raise


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
