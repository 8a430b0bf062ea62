"""The shipped nginx front as a site inside Debian's stock nginx.conf, with Debian's default site
next to it, run by the real nginx (tests/support/debian_nginx.py): `nginx -t` accepts it, port 80
is shared by name, heads up to 64 KiB pass and longer ones get JSON 414/431, Transfer-Encoding is
refused on API paths, nginx's own refusals are JSON, and the ops endpoints stay inside.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.support.debian_nginx import DebianNginx, RecordingBackend
from tests.support.processes import RelayProcess

pytestmark = [pytest.mark.slow, pytest.mark.nginx, pytest.mark.asyncio(loop_scope="module")]

HOST = "mp.example.com"
KIB = 1024


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def front() -> AsyncIterator[tuple[DebianNginx, RecordingBackend]]:
    backend = RecordingBackend()
    nginx = DebianNginx(await backend.start())
    await nginx.start()
    yield nginx, backend
    nginx.stop()
    await backend.stop()


async def exchange(port: int, data: bytes, tls: bool = True, idle: float = 1.5) -> bytes:
    """Send raw bytes, return everything the server wrote until it closed or went quiet."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context if tls else None, server_hostname=HOST if tls else None)
    writer.write(data)
    await writer.drain()
    received = b""
    try:
        for _ in range(1000):
            chunk = await asyncio.wait_for(reader.read(65536), idle)
            if not chunk:
                break
            received += chunk
    except (TimeoutError, ConnectionError, ssl.SSLError):
        pass
    writer.close()
    return received


def answer(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def request(target: str, *headers: str, method: str = "GET") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {HOST}", *headers, "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_nginx_t_accepts_the_site_inside_debians_nginx_conf(
        front: tuple[DebianNginx, RecordingBackend]) -> None:
    nginx, _ = front
    output = nginx.config_test_output
    assert "test is successful" in output
    assert "duplicate" not in output and "conflicting server name" not in output, output


async def test_port_80_is_shared_with_debians_default_site_by_name(
        front: tuple[DebianNginx, RecordingBackend]) -> None:
    nginx, _ = front
    status, headers, _ = answer(await exchange(nginx.http_port, request("/track"), tls=False))
    assert (status, headers["location"]) == (308, f"https://{HOST}/track")
    challenge = request("/.well-known/acme-challenge/probe")    # certbot --webroot, port 80
    status, headers, _ = answer(await exchange(nginx.http_port, challenge, tls=False))
    assert status == 404 and "location" not in headers       # a file lookup, not a redirect
    other = (b"GET / HTTP/1.1\r\nHost: www.example.org\r\nConnection: close\r\n\r\n")
    status, headers, _ = answer(await exchange(nginx.http_port, other, tls=False))
    assert status != 308 and "location" not in headers      # Debian's default site answered


async def test_heads_up_to_64_kib_reach_the_relay(
        front: tuple[DebianNginx, RecordingBackend]) -> None:
    nginx, backend = front
    data = "e" * (60 * KIB)                    # a Node-style GET /track with a big event
    raw = await exchange(nginx.https_port, request(f"/track?data={data}"))
    assert answer(raw)[0] == 200, raw[:300]
    assert f"GET /track?data={data} HTTP/1.1".encode() in backend.heads[-1]
    cookie = "c=" + "k" * (60 * KIB)           # a big site's cookies, sent to a first-party relay
    raw = await exchange(nginx.https_port, request("/track", f"Cookie: {cookie}"))
    assert answer(raw)[0] == 200, raw[:300]
    assert cookie.encode() in backend.heads[-1]


async def test_heads_past_64_kib_are_refused_with_json(
        front: tuple[DebianNginx, RecordingBackend]) -> None:
    nginx, backend = front
    seen = len(backend.heads)
    raw = await exchange(nginx.https_port, request("/track?data=" + "e" * (65 * KIB)))
    status, headers, body = answer(raw)
    assert (status, headers["content-type"]) == (414, "application/json")
    assert json.loads(body)["error"].startswith("the request line exceeds the 65536-byte")
    raw = await exchange(nginx.https_port, request("/track", "Cookie: c=" + "k" * (65 * KIB)))
    status, headers, body = answer(raw)
    assert (status, headers["content-type"]) == (431, "application/json")
    assert json.loads(body) == {"status": 0, "error":
                                "a request header field exceeds the 65536-byte limit"}
    assert b"kkkk" not in raw and len(backend.heads) == seen


async def test_transfer_encoding_is_refused_on_api_paths_with_one_answer(
        front: tuple[DebianNginx, RecordingBackend]) -> None:
    nginx, backend = front
    seen = len(backend.heads)
    chunked = (b"POST /track HTTP/1.1\r\nHost: mp.example.com\r\nTransfer-Encoding: chunked\r\n"
               b"Content-Type: application/x-www-form-urlencoded\r\n"
               b"Connection: close\r\n\r\n5\r\ndata=\r\n0\r\n\r\n")
    status, headers, body = answer(await exchange(nginx.https_port, chunked))
    assert (status, headers["content-type"]) == (411, "application/json")
    assert "Content-Length" in json.loads(body)["error"]
    # The smuggling shape: a malformed chunked body whose next lines look like a request.
    hidden = (b"POST /track HTTP/1.1\r\nHost: mp.example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"0\r\nGET /engage?data=hidden HTTP/1.1\r\nHost: mp.example.com\r\n\r\n")
    raw = await exchange(nginx.https_port, hidden)
    assert raw.count(b"HTTP/1.1 ") == 1 and answer(raw)[0] == 411, raw
    assert len(backend.heads) == seen                     # nothing reached the relay


@pytest.mark.parametrize("bad", [
    b"POST /track HTTP/1.1\r\nHost: mp.example.com\r\nContent-Length: x1\r\n\r\n",
    b"GET /tr\x01ck HTTP/1.1\r\nHost: mp.example.com\r\n\r\n",
    b"GET /track HTTP/1.1\r\nHost: mp.example.com\r\nBad Header\r\n\r\n",
], ids=["content-length", "request-line", "header-line"])
async def test_malformed_requests_get_json_refusals(
        front: tuple[DebianNginx, RecordingBackend], bad: bytes) -> None:
    nginx, backend = front
    seen = len(backend.heads)
    status, headers, body = answer(await exchange(nginx.https_port, bad))
    assert (status, headers["content-type"]) == (400, "application/json")
    assert json.loads(body) == {"status": 0, "error": "malformed request"}
    assert len(backend.heads) == seen


async def test_scrapes_are_refused_by_the_front(
        front: tuple[DebianNginx, RecordingBackend]) -> None:
    nginx, backend = front
    seen = len(backend.heads)
    for path in ("/metrics", "/status", "//metrics", "/%6Detrics", "/./status", "/metrics/"):
        status, headers, body = answer(await exchange(nginx.https_port, request(path)))
        assert (status, headers["content-type"]) == (403, "application/json"), path
        assert "scrape the relay directly" in json.loads(body)["error"]
    assert len(backend.heads) == seen


async def test_readyz_through_the_front_shows_outsiders_only_the_verdict(
        tmp_path: Path) -> None:
    """With the real relay behind it: the relay decides on the client nginx names."""
    spool = tmp_path / "spool"
    spool.mkdir()
    relay = RelayProcess(tmp_path, {"spool": {"enabled": True, "path": str(spool / "s.db")},
                                    "health": {"probe_interval": 0}})
    await relay.start()
    nginx = DebianNginx(relay.port)
    try:
        await nginx.start()
        outside = request("/readyz", "X-Forwarded-For: 203.0.113.9")   # via a trusted balancer
        status, _, body = answer(await exchange(nginx.https_port, outside))
        assert status == 200
        assert json.loads(body) == {"ready": True, "failed": [], "unreachable": ["us"]}
        assert str(tmp_path).encode() not in body
        inside = await exchange(nginx.https_port, request("/readyz"))   # curl on the host
        assert json.loads(answer(inside)[2])["checks"]["spool"]["detail"].startswith(str(spool))
    finally:
        nginx.stop()
        await relay.stop()


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl with HTTP/2")
async def test_http2_heads_up_to_64_kib_reach_the_relay(
        front: tuple[DebianNginx, RecordingBackend]) -> None:
    """Browsers reach the front over HTTP/2: the same 64 KiB per field holds there. (Past it,
    nginx refuses the stream with REFUSED_STREAM: HTTP/2 gives it no answer to write.)"""
    nginx, backend = front
    cookie = "c=" + "k" * (60 * KIB)
    done = await asyncio.to_thread(subprocess.run, [
        "curl", "-sk", "--http2", "-o", "/dev/null", "-w", "%{http_code} %{http_version}",
        "-H", f"Cookie: {cookie}", "--resolve", f"{HOST}:{nginx.https_port}:127.0.0.1",
        f"https://{HOST}:{nginx.https_port}/track"], capture_output=True, text=True)
    assert done.stdout == "200 2", done.stderr[-500:]
    assert cookie.encode() in backend.heads[-1]
