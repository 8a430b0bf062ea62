"""Every aiohttp internal the server relies on, in one place.

The lean edge shares aiohttp's runner, socket and request handlers rather than re-implementing
them, and aiohttp offers no public API for that. pyproject.toml bounds aiohttp to the minor
version these were checked against; on an upgrade, check each one below (tests/test_edge.py,
tests/test_edge_protocol.py, tests/test_edge_drain.py and tests/test_long_heads.py exercise all
of them through the production path):

1. `web.BaseSite.start(site)`: registers a site with its runner. EdgeSite calls it instead of
   `SockSite.start`, which would also build aiohttp's own asyncio server on the socket.
2. `BaseSite._runner`, `SockSite._sock`, `BaseSite._backlog`: the runner, socket and backlog a
   site was built with.
3. `BaseSite._server`: the asyncio server `BaseSite.stop` closes; EdgeSite puts its own there.
4. `RequestHandler.__slots__` and `RequestHandler.handle_error`: a handler that aiohttp's `Server`
   built (from settings it keeps private) can take a subclass of the same layout whose
   `handle_error` answers in JSON (server/refusals.py).
5. `TestServer._make_runner` (tests/support/edge_server.py): the runner a TestServer would use,
   with the test's settings.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any, TypeVar, cast

from aiohttp import web

__all__ = ["adopt", "make_test_runner", "register_site", "set_site_server", "site_server",
           "site_socket"]

Handler = TypeVar("Handler", bound=web.RequestHandler)


async def register_site(site: web.SockSite) -> web.AppRunner:
    """(1, 2) Register `site` with its runner, without aiohttp's server; the runner."""
    await web.BaseSite.start(site)
    return cast(web.AppRunner, site._runner)


def site_socket(site: web.SockSite) -> tuple[socket.socket, int]:
    """(2) The listening socket and backlog `site` was built with."""
    return site._sock, site._backlog


def site_server(site: web.BaseSite) -> asyncio.AbstractServer | None:
    """(3) The asyncio server that `site.stop()` closes."""
    return site._server


def set_site_server(site: web.BaseSite, server: asyncio.AbstractServer) -> None:
    """(3) Make `server` the one `site.stop()` closes."""
    site._server = server


def adopt(handler: web.RequestHandler, subclass: type[Handler]) -> Handler:
    """(4) `handler`, with every setting aiohttp's Server gave it, as an instance of
    `subclass` (which must add no slots)."""
    # No slots of its own (and so no __dict__ either): the same layout, or Python refuses.
    assert subclass.__dict__.get("__slots__") == (), f"{subclass.__name__} must add no slots"
    handler.__class__ = subclass
    return cast(Handler, handler)


async def make_test_runner(server: Any, **kwargs: Any) -> web.BaseRunner:
    """(5) The runner an aiohttp TestServer would start, with `kwargs` as its settings."""
    runner = await server._make_runner(**kwargs)
    return cast(web.BaseRunner, runner)
