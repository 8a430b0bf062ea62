"""A test server that serves the app the way a worker does: through the lean edge (EdgeSite).

aiohttp's TestServer listens with a plain SockSite; this one listens with
`proxy.server.edge.EdgeSite`, so a test's requests take the production path: plain SDK requests
answered by the edge, anything else handed over to aiohttp with its bytes intact.
"""

from __future__ import annotations

import socket
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from proxy.server import aiohttp_seam
from proxy.server.edge import EdgeSite


class EdgeTestServer(TestServer):
    """`fast_path`: the edge answers plain requests on the plain path (relay/plain.py, as a
    worker does), or runs every framed request through the general path (`ApiRelay.handle`)."""

    def __init__(self, *args: Any, keepalive_timeout: float = 75.0, fast_path: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._keepalive_timeout = keepalive_timeout
        self._fast_path = fast_path

    async def start_server(self, loop: Any = None, **kwargs: Any) -> None:
        if self.runner:
            return
        runner = await aiohttp_seam.make_test_runner(
            self, handler_cancellation=True, keepalive_timeout=self._keepalive_timeout, **kwargs)
        assert isinstance(runner, web.AppRunner)
        self.runner = runner
        await runner.setup()
        sock = socket.create_server((self.host, 0))
        self.port = sock.getsockname()[1]
        site = EdgeSite(runner, sock, keepalive_timeout=self._keepalive_timeout,
                        shutdown_timeout=5.0, fast_path=self._fast_path)
        await site.start()
        self.scheme = "http"
        self._root = URL(f"http://{self.host}:{self.port}")
