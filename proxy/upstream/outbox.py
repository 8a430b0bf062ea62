"""`Outbox`: the writes of one turn of the event loop, made together at its end.

Every write on a loopback or LAN socket wakes the peer that waits for it, and waking a sleeping
process is the dearest part of the write (profiled: most of the kernel time of the relay's
writes was spent in the wake-up). Written as each answer is ready, the writes are spread over
the turn by the Python work between them, and the peer (the upstream, or the client) has gone
back to sleep before the next one comes; written together at the end of the turn, most of them
find it still awake. Measured on /track: about 4 µs less system CPU per request, and a steadier
rate.

Order: the writes of one transport keep their order, and whoever writes to a transport directly
(a refusal, a last answer before a close, aiohttp after a hand-over) flushes first.
"""

from __future__ import annotations

import asyncio


class Outbox:
    __slots__ = ("_loop", "_pending")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pending: list[tuple[asyncio.Transport, bytes]] = []

    def write(self, transport: asyncio.Transport, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append((transport, data))

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        for transport, data in pending:
            if not transport.is_closing():    # its peer left: nobody to read it
                transport.write(data)
