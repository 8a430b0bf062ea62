"""The listening sockets: one that every worker shares (the default), or, with `[server]
reuse_port = true` on Linux, one per worker slot bound with SO_REUSEPORT, which the kernel
balances new connections over.

Why the choice: with one shared socket every worker's event loop watches it, and the first to
wake accepts every connection queued (libuv accepts until the queue is empty). Measured on
/track with two workers and one wrk thread, a burst of 50 keep-alive connections (a load test's
start, or a front opening its keep-alive pool at once) landed on one worker in two runs of
three: it served them all while the other idled (17.7k and 19.6k req/s against 26.3k when they
split). With a socket per slot the kernel hashes each new connection onto one socket of the
group: the splits stayed near even in every run (24-25k req/s, pure Python build). But on a
machine where the relay shares its cores with the load (the 2-core benchmark, with wrk and the
upstream beside it), the skewed split costs nothing and its fuller loop turns cost less CPU per
request (`bench/run.py`, five rounds: 25.7k shared against 24.2k balanced). So balance is for
workers with cores of their own: the default stays the shared queue, whose connections any live
worker serves.

What a slot's socket keeps: the supervisor holds every socket for the relay's life and each
worker of slot i (a replacement, the next generation after a reload) inherits socket i, so a
connection queued there waits for that slot's next worker instead of being reset. Nothing is
closed before the relay stops (closing a listening socket resets what waits in its queue): after
a reload that lowers `[server] workers`, worker i also serves sockets i + N, i + 2N, ...
"""

from __future__ import annotations

import socket
import sys

BACKLOG = 2048
# Linux spreads connections over a SO_REUSEPORT group; other kernels (the BSDs, macOS) give them
# all to one member, so there the workers share one socket whatever the config says.
CAN_BALANCE = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


class Listeners:
    """The supervisor's listening sockets, by worker slot."""

    def __init__(self, first: socket.socket, balanced: bool) -> None:
        self._sockets = [first]
        self._balanced = balanced

    @classmethod
    def bind(cls, host: str, port: int, reuse_port: bool = False) -> Listeners:
        """The first socket, bound now (an OSError names why not); with `reuse_port`, the other
        slots' sockets are bound to its address as workers need them."""
        balanced = reuse_port and CAN_BALANCE
        return cls(_listen(host, port, balanced), balanced)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._sockets[0].getsockname()[:2]
        return str(host), int(port)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._sockets)

    def for_worker(self, slot: int, workers: int) -> list[socket.socket]:
        """The sockets worker `slot` of a generation of `workers` accepts on."""
        if not self._balanced:
            return [self._sockets[0]]
        host, port = self.address
        while len(self._sockets) < workers:
            self._sockets.append(_listen(host, port, True))
        return [sock for index, sock in enumerate(self._sockets) if index % workers == slot]

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()


def _listen(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=BACKLOG,
                                reuse_port=reuse_port)
