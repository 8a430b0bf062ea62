"""The upstream client: pooled keep-alive connections per origin, and the one place where
transport errors exist. Everything that goes wrong on the way becomes an `UpstreamFailure`.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from ..config import UpstreamConfig
from .http1 import ExchangeError, Outcome, RawAnswer
from .pool import ConnectionPool

# Endpoints whose requests the upstream deduplicates (each event's $insert_id), so sending one
# twice is harmless: the pool may resend them after a keep-alive race (see pool.py).
REPLAYABLE_ENDPOINTS = frozenset({"track", "import"})


@dataclass(slots=True, init=False)   # the __init__ is ours: see RoutedRequest (routing.py)
class UpstreamAnswer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def __init__(self, status: int, headers: CIMultiDictProxy[str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body


class UpstreamFailure(Exception):
    """The upstream could not be reached or did not answer in time: always retryable."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind          # connect | timeout | protocol: a metrics label
        self.message = message


class UpstreamClient:
    def __init__(self, config: UpstreamConfig) -> None:
        self._config = config
        self._pools: dict[tuple[str, str, int], ConnectionPool] = {}
        self._ssl: ssl.SSLContext | None = None
        # base URL -> (its pool, Host header, path prefix), for `send_to`
        self._bases: dict[str, tuple[ConnectionPool, str, str]] = {}

    async def start(self) -> None:
        self._ssl = trust_context(self._config.ca_file)

    async def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        self._bases.clear()

    async def send(self, method: str, url: URL, headers: dict[str, str], body: bytes | None,
                   read_timeout: float | None = None, *,
                   replayable: bool = False) -> UpstreamAnswer:
        """Send one request; the caller's headers go as given, plus Host and Content-Length.

        `read_timeout` (default: the config's) is the exchange's one budget: the wait for a
        free connection, connecting, TLS, writing and the whole answer all spend it.
        `replayable`: the upstream drops a repeat of this request (REPLAYABLE_ENDPOINTS), so it
        may go twice; a GET always may. HEAD is refused: the answer parser cannot frame it."""
        return await self.send_to(str(url.origin()), url.raw_path_qs or "/", method, headers,
                                  body, read_timeout, replayable=replayable)

    async def send_to(self, base: str, path_qs: str, method: str, headers: dict[str, str],
                      body: bytes | None, read_timeout: float | None = None, *,
                      replayable: bool = False) -> UpstreamAnswer:
        """`send` to `base` + `path_qs`: a base URL (an origin, or a region's endpoint, which
        callers use on every request) is parsed once."""
        pool, raw = self._prepare(base, path_qs, method, headers, body)
        try:
            answer = await pool.request(raw, read_timeout or self._config.read_timeout,
                                        replayable or method == "GET")
        except ExchangeError as exc:
            raise UpstreamFailure(exc.kind, str(exc)) from exc
        return _answer(answer)

    def submit_to(self, base: str, path_qs: str, method: str, headers: dict[str, str],
                  body: bytes | None, read_timeout: float | None, replayable: bool,
                  done: Callable[[UpstreamAnswer | UpstreamFailure], None]) -> None:
        """`send_to` in callbacks (the lean edge's plain path): `done` is called once, later,
        with the answer or the UpstreamFailure. A request that cannot be written at all (a
        header with a line break) raises UpstreamFailure here, as `send_to` does."""
        pool, raw = self._prepare(base, path_qs, method, headers, body)
        pool.submit(raw, read_timeout or self._config.read_timeout,
                    replayable or method == "GET", partial(_outcome, done))

    def _prepare(self, base: str, path_qs: str, method: str, headers: dict[str, str],
                 body: bytes | None) -> tuple[ConnectionPool, bytes]:
        if method == "HEAD":        # its answer has a Content-Length and no body
            raise ValueError("the upstream client does not send HEAD requests")
        known = self._bases.get(base)
        if known is None:
            url = URL(base, encoded=True)
            known = self._bases[base] = (self._pool(url), _host_header(url),
                                         url.raw_path.rstrip("/"))
        pool, host, prefix = known
        return pool, _serialize(method, prefix + path_qs, host, headers, body)

    def _pool(self, url: URL) -> ConnectionPool:
        scheme, host, port = url.scheme, url.raw_host or "", url.port or 0
        pool = self._pools.get((scheme, host, port))
        if pool is None:
            if self._ssl is None:
                raise RuntimeError("UpstreamClient.start() was not awaited")
            pool = self._pools[(scheme, host, port)] = ConnectionPool(
                host, port, self._ssl if scheme == "https" else None, self._config.pool_size,
                self._config.connect_timeout)
        return pool


def _answer(raw: RawAnswer) -> UpstreamAnswer:
    return UpstreamAnswer(raw.status, CIMultiDictProxy(CIMultiDict(raw.headers)), raw.body)


def _outcome(done: Callable[[UpstreamAnswer | UpstreamFailure], None],
             outcome: Outcome) -> None:
    if isinstance(outcome, ExchangeError):
        done(UpstreamFailure(outcome.kind, str(outcome)))
    else:
        done(_answer(outcome))


def trust_context(ca_file: str) -> ssl.SSLContext:
    """The system's CAs, plus `ca_file`'s (a corporate TLS gateway's) when one is given: added
    to them, never instead of them, so the public upstreams stay trusted."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


def _host_header(url: URL) -> str:
    host = url.raw_host or ""
    if ":" in host:                     # an IPv6 literal goes in brackets (RFC 9110 7.2)
        host = f"[{host}]"
    if url.port is not None and not url.is_default_port():
        host = f"{host}:{url.port}"
    return host


def _serialize(method: str, target: str, host: str, headers: dict[str, str],
               body: bytes | None) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value:     # never let a header value start a new header
            raise UpstreamFailure("protocol", f"header {name} carries a line break")
        lines.append(f"{name}: {value}")
    if body is not None or method == "POST":
        lines.append(f"Content-Length: {len(body or b'')}")
    # aiohttp decoded the client's header bytes as UTF-8 with surrogateescape: this undoes it.
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")
    return head + body if body else head
