"""`EdgeSite`: an aiohttp site whose connections start on the lean edge (connection.py).

It listens where a `web.SockSite` would, on the same runner, so the app's startup and cleanup,
its aiohttp handlers and their shutdown are unchanged; it adds what aiohttp's protocol would
otherwise do for the connections the edge keeps: the keep-alive timeout (which also cuts off a
head trickled in byte by byte) and a drain that lets requests in flight finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from typing import cast

from aiohttp import web

from ...app import ACCESS_KEY, CONFIG_KEY, METRICS_KEY, RELAY_KEY
from ...decide.headers import CorsPolicy
from ...ops.metrics import EDGE_HANDOVER_REASONS
from ...relay.plain import PlainPath
from ...upstream.outbox import Outbox
from .. import aiohttp_seam
from ..refusals import json_refusing
from .connection import Edge, EdgeConnection

__all__ = ["EdgeSite"]


class EdgeSite(web.SockSite):
    def __init__(self, runner: web.AppRunner, sock: socket.socket, *,
                 keepalive_timeout: float = 75.0, shutdown_timeout: float = 60.0,
                 backlog: int = 2048, fast_path: bool = True) -> None:
        """`fast_path`: answer plain requests in callbacks (relay/plain.py); off, each framed
        request runs the general path in a Task (the tests run both)."""
        super().__init__(runner, sock, backlog=backlog)
        self._fast_path = fast_path
        self._keepalive_timeout = keepalive_timeout
        self._shutdown_timeout = shutdown_timeout
        self._edge: Edge | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        runner = await aiohttp_seam.register_site(self)
        app, server = runner.app, runner.server
        assert server is not None
        metrics = app[METRICS_KEY]
        handovers = metrics.edge_handovers
        edge = self._edge = Edge(app[RELAY_KEY], app[ACCESS_KEY], app[CONFIG_KEY].limits.body,
                                 json_refusing(server, metrics),
                                 {reason: handovers.labels(reason)
                                  for reason in EDGE_HANDOVER_REASONS},
                                 metrics.reject, CorsPolicy(app[CONFIG_KEY].cors))
        loop = asyncio.get_running_loop()
        if self._fast_path:
            edge.plain = PlainPath(app[RELAY_KEY], metrics, edge.spawn)
            edge.outbox = Outbox(loop)
        sock, backlog = aiohttp_seam.site_socket(self)
        aiohttp_seam.set_site_server(self, await loop.create_server(
            lambda: EdgeConnection(edge).as_protocol(), sock=sock, backlog=backlog))
        self._sweeper = loop.create_task(self._sweep())

    @property
    def edge(self) -> Edge | None:
        """What this site's connections share (None until started)."""
        return self._edge

    def stop_accepting(self) -> None:
        """Close this process's listening socket; answers from now on close their connection."""
        if self._edge is not None:
            self._edge.draining = True
        server = aiohttp_seam.site_server(self)
        if server is None:
            return
        # An accept asyncio has made but not yet attached (its task runs on the next turn of
        # the loop) fails inside asyncio if the server closes first, and that connection hangs
        # unanswered until the worker exits. So: no new accepts from now (the listening socket
        # is no longer watched), and the server closes once those in progress are attached.
        loop = asyncio.get_running_loop()
        for sock in cast(asyncio.Server, server).sockets:    # uvloop's Server has them too
            loop.remove_reader(sock.fileno())
        loop.call_soon(server.close)

    async def stop(self) -> None:
        """Stop accepting, close idle connections, let requests in flight finish (bounded)."""
        self.stop_accepting()
        await super().stop()
        if self._sweeper is not None:
            self._sweeper.cancel()
        edge = self._edge
        if edge is None:
            return
        for connection in list(edge.connections):
            if not connection.busy:
                connection.close()
        if edge.busy:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(edge.idle.wait(), self._shutdown_timeout)
        stragglers = list(edge.tasks)       # past the shutdown timeout: cancelled, not leaked
        for task in stragglers:
            task.cancel()
        await asyncio.gather(*stragglers, return_exceptions=True)
        for connection in list(edge.connections):
            connection.abandon()           # the plain path's stragglers: no Task to cancel
            connection.close()

    async def _sweep(self) -> None:
        """Close connections idle past the keep-alive timeout, and heads that never complete."""
        edge = self._edge
        assert edge is not None
        timeout = self._keepalive_timeout
        while True:
            await asyncio.sleep(min(5.0, timeout / 4))
            deadline = time.monotonic() - timeout
            for connection in list(edge.connections):
                if not connection.busy and connection.idle_since < deadline:
                    connection.close()
