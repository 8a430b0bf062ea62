"""One serving process: the aiohttp app on the listening sockets of its slot, inherited from the
supervisor (listeners.py: usually one).

A worker tells the supervisor it is accepting by writing one byte to its ready pipe, and drains on
SIGTERM/SIGINT: it stops accepting (on a reload, the next generation's worker of the same slot
accepts from the same socket; a replacement does after a death), then for a short grace keeps
serving the connections it already has, each answer saying `Connection: close`: a client that
had just connected gets its request answered instead of a reset. Then it lets in-flight requests
finish, runs the app's cleanup (which flushes what must be flushed) and exits 0, all within
`[server] shutdown_timeout`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import sys

from aiohttp import web

from ..app import create_app
from ..config import Config
from ..ops.logs import flush_access_lines
from .edge import EdgeSite

log = logging.getLogger("mixpanel_proxy.worker")

EXIT_STARTUP_FAILED = 3
DRAIN_GRACE = 0.5          # at most; never more than half of shutdown_timeout
# aiohttp's AppRunner keeps idle connections, and ones still sending their headers (slowloris),
# for 3630 s unless told; nginx/relay-upstream.conf counts on 75 s (its own 60 s is below it).
KEEPALIVE_TIMEOUT = 75.0
_PARENT_POLL_SECONDS = 1.0
GC_FIRST_GENERATION = 20_000     # allocations between collections (CPython's default: 700)


class _Draining:
    """Set once the worker stops accepting: answers from then on close their connection."""

    def __init__(self) -> None:
        self.active = False

    async def on_response_prepare(self, request: web.Request,
                                  response: web.StreamResponse) -> None:
        if self.active:
            response.force_close()
            # aiohttp has written its Connection header into the head before this hook runs.
            response.headers["Connection"] = "close"


def run_worker(config: Config, sockets: list[socket.socket], ready_fd: int,
               parent_pid: int) -> int:
    """Serve until told to stop; the return value is the process's exit code."""
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    loop = _new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(_serve(config, sockets, ready_fd, parent_pid))
    finally:
        loop.close()
        flush_access_lines()     # the last turn's, before the process ends (os._exit)


def _new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


async def _serve(config: Config, sockets: list[socket.socket], ready_fd: int,
                 parent_pid: int) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # SIGHUP belongs to the supervisor; a terminal hang-up must not kill a worker mid-request.
    loop.add_signal_handler(signal.SIGHUP, lambda: None)
    grace = min(DRAIN_GRACE, config.server.shutdown_timeout / 2)
    draining = _Draining()
    app = create_app(config)
    app.on_response_prepare.append(draining.on_response_prepare)
    runner = web.AppRunner(app, access_log=None, handle_signals=False,
                           keepalive_timeout=KEEPALIVE_TIMEOUT,
                           shutdown_timeout=config.server.shutdown_timeout - grace)
    try:
        await runner.setup()
        sites = [EdgeSite(runner, sock, keepalive_timeout=KEEPALIVE_TIMEOUT,
                          shutdown_timeout=config.server.shutdown_timeout - grace)
                 for sock in sockets]
        for site in sites:
            await site.start()
    except Exception:
        log.exception("worker %d could not start", os.getpid())
        await runner.cleanup()
        return EXIT_STARTUP_FAILED
    _settle_garbage_collector()
    _report_ready(ready_fd)
    watcher = asyncio.create_task(_watch_parent(parent_pid, stop))
    await stop.wait()
    watcher.cancel()
    for site in sites:
        site.stop_accepting()    # the slot's next worker takes the queue from here
    draining.active = True
    await asyncio.sleep(grace)
    # Closes idle connections, waits for in-flight requests (the edge's, then aiohttp's), runs
    # the app's cleanup.
    await runner.cleanup()
    return 0


def _settle_garbage_collector() -> None:
    """Profiles of /track showed ~7% of a worker's CPU in the cyclic collector, most of it
    re-scanning what start-up built (config, app, caches), which lives as long as the process.
    Freezing those objects takes them out of every scan; a larger first generation runs the
    collector less often for the short-lived objects each request makes (reference counting
    frees nearly all of them anyway)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_FIRST_GENERATION, *gc.get_threshold()[1:])


def _report_ready(ready_fd: int) -> None:
    try:
        os.write(ready_fd, b"1")
    finally:
        os.close(ready_fd)


async def _watch_parent(parent_pid: int, stop: asyncio.Event) -> None:
    """Drain and exit if the supervisor died: an orphan would hold the port, unsupervised."""
    while os.getppid() == parent_pid:
        await asyncio.sleep(_PARENT_POLL_SECONDS)
    print(f"worker {os.getpid()}: supervisor {parent_pid} is gone, draining", file=sys.stderr)
    stop.set()
