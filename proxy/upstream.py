"""The upstream client: one keep-alive ClientSession per app, and the only place where aiohttp
client errors exist. Everything that goes wrong on the way becomes an `UpstreamFailure`.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from .config import UpstreamConfig

# aiohttp would otherwise add its own User-Agent, Accept-Encoding and a guessed Content-Type:
# the upstream must see what the client sent, not what the relay's library likes.
_SKIP_AUTO_HEADERS = ("User-Agent", "Accept-Encoding", "Content-Type")


@dataclass(frozen=True, slots=True)
class UpstreamAnswer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


class UpstreamFailure(Exception):
    """The upstream could not be reached or did not answer in time: always retryable."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind          # connect | timeout | protocol: a metrics label
        self.message = message


class UpstreamClient:
    def __init__(self, config: UpstreamConfig) -> None:
        self._config = config
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._config.pool_size, ttl_dns_cache=60, enable_cleanup_closed=True)
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=_SKIP_AUTO_HEADERS,
            timeout=self._timeout(self._config.read_timeout),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _timeout(self, read_timeout: float) -> aiohttp.ClientTimeout:
        # Never aiohttp's 300 s total: connect and read are bounded separately, and the whole
        # exchange by both together.
        return aiohttp.ClientTimeout(
            total=self._config.connect_timeout + read_timeout,
            sock_connect=self._config.connect_timeout,
            sock_read=read_timeout,
        )

    async def send(self, method: str, url: URL, headers: dict[str, str], body: bytes | None,
                   read_timeout: float | None = None) -> UpstreamAnswer:
        if self._session is None:
            raise RuntimeError("UpstreamClient.start() was not awaited")
        timeout = self._timeout(read_timeout) if read_timeout is not None else None
        try:
            async with self._session.request(
                method, url, headers=headers, data=body, allow_redirects=False,
                timeout=timeout if timeout is not None else aiohttp.helpers.sentinel,
            ) as response:
                content = await response.read()
                return UpstreamAnswer(response.status, response.headers, content)
        except TimeoutError as exc:
            raise UpstreamFailure("timeout", f"{url.host} did not answer in time") from exc
        except aiohttp.ClientConnectorError as exc:
            message = f"cannot connect to {url.host} ({exc.os_error})"
            raise UpstreamFailure("connect", message) from exc
        except aiohttp.ClientError as exc:
            raise UpstreamFailure("protocol", f"{url.host}: {type(exc).__name__} {exc}") from exc
