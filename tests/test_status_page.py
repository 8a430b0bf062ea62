"""/status in a real headless Chromium: the DOM it builds, and a screenshot that is not blank."""

from __future__ import annotations

import asyncio
import struct
import zlib
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from proxy.ops.routes import STATUS_BOARD_KEY
from tests.conftest import EU_TOKEN, US_TOKEN, RelayFactory
from tests.support.fake_cdn import FakeCdn
from tests.support.fakes import FakeUpstream
from tests.support.helpers import FORM, browser_form, event

CHROMIUM = "/usr/bin/chromium"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync",
         "--disable-default-apps", "--hide-scrollbars")


async def chromium(url: str, profile: Path, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args, url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), timeout=90)
    assert process.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()


class Rows(HTMLParser):
    """Collects each table row's data-* attributes and cell texts, and the section states."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[dict[str, str], list[str]]] = []
        self.sections: dict[str, dict[str, str]] = {}
        self.title = ""
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {key: value or "" for key, value in attrs}
        if tag == "tr":
            self.rows.append((values, []))
        elif tag in ("td", "th") and self.rows:
            self.rows[-1][1].append("")
        elif tag == "section":
            self.sections[values.get("id", "")] = values
        self._in = tag

    def handle_data(self, data: str) -> None:
        if self._in == "title":
            self.title += data
        elif self._in in ("td", "th") and self.rows and self.rows[-1][1]:
            self.rows[-1][1][-1] += data

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def row(self, **attrs: str) -> list[str]:
        [cells] = [cells for found, cells in self.rows
                   if all(found.get(f"data-{k}") == v for k, v in attrs.items())]
        return cells


async def traffic(client: Any, upstreams: dict[str, FakeUpstream]) -> None:
    for _ in range(3):
        response = await client.post("/track", data=browser_form([event(US_TOKEN)]),
                                     headers=FORM)
        assert response.status == 200
    assert upstreams["eu"].server is not None
    await upstreams["eu"].server.close()
    response = await client.post("/track", data=browser_form([event(EU_TOKEN)]), headers=FORM)
    assert response.status == 503
    assert (await client.get("/nope")).status == 404


@pytest.mark.browser
async def test_status_page_renders_regions_requests_and_components(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream], tmp_path: Path) -> None:
    client = await make_relay({"health": {"probe_interval": 0, "max_age": 0,
                                          "require_regions": True}}, projects=True)
    board = client.app[STATUS_BOARD_KEY]
    board.sample()
    await traffic(client, upstreams)
    await asyncio.sleep(0.05)    # paces the two samples apart: a rate needs time between them
    board.sample()
    url = str(client.make_url("/status"))
    dom = await chromium(url, tmp_path / "profile", "--dump-dom")
    page = Rows()
    page.feed(dom)

    assert page.title == "mixpanel-proxy status: NOT READY"
    assert page.sections["summary"]["data-state"] == "not-ready"
    us, eu, india = page.row(region="us"), page.row(region="eu"), page.row(region="in")
    assert us[2] == "up" and us[7] == "3"                  # health, successful exchanges
    assert us[5].endswith(" ms") and us[6].startswith("≤ ")  # mean latency, p95 bound
    assert eu[2] == "down" and "cannot connect" in eu[3]
    assert (india[2], india[3]) == ("down", "not probed yet")
    track = page.row(endpoint="track")
    assert track[1:5] == ["4", "3", "0", "1"]               # answered, 2xx, 4xx, 5xx
    assert float(track[5]) > 0                               # requests per second
    rejections = {cells[0]: cells[1] for found, cells in page.rows
                  if len(cells) == 2 and cells[0] == "not_found"}
    assert rejections == {"not_found": "1"}
    assert page.sections["spool"]["data-enabled"] == "false"
    assert page.sections["asset-cache"]["data-enabled"] == "true"
    for reference in ("<script", "<link", "src=", "href=", "url("):   # nothing to fetch
        assert reference not in dom


@pytest.mark.browser
async def test_status_page_screenshot_is_a_drawn_page(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream], tmp_path: Path) -> None:
    client = await make_relay({"health": {"probe_interval": 0, "max_age": 0}}, projects=True)
    await traffic(client, upstreams)
    response = await client.get("/status")
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
    shot = tmp_path / "status.png"
    await chromium(str(client.make_url("/status")), tmp_path / "profile",
                   f"--screenshot={shot}", "--window-size=1100,700")
    width, height, colours = png_summary(shot.read_bytes())
    assert (width, height) == (1100, 700)
    # Text, table rules and the red/green health cells: far more than a blank page's one colour.
    assert colours > 50


def png_summary(data: bytes) -> tuple[int, int, int]:
    """Width, height and the number of distinct RGB(A) pixels of an 8-bit PNG screenshot."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks: dict[bytes, bytes] = {}
    at = 8
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        chunks[kind] = chunks.get(kind, b"") + data[at + 8:at + 8 + length]
        at += 12 + length
    width, height, depth, colour_type = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert depth == 8 and colour_type in (2, 6)
    channels = 3 if colour_type == 2 else 4
    raw = zlib.decompress(chunks[b"IDAT"])
    stride = width * channels
    previous = bytearray(stride)
    pixels: set[bytes] = set()
    for row in range(height):
        start = row * (stride + 1)
        line = unfilter(raw[start], bytearray(raw[start + 1:start + 1 + stride]), previous,
                        channels)
        pixels.update(bytes(line[i:i + channels]) for i in range(0, stride, channels * 7))
        previous = line
    return width, height, len(pixels)


def unfilter(kind: int, line: bytearray, previous: bytearray, bpp: int) -> bytearray:
    """PNG scanline filters (RFC 2083 §6)."""
    for i in range(len(line)):
        left = line[i - bpp] if i >= bpp else 0
        up = previous[i]
        corner = previous[i - bpp] if i >= bpp else 0
        if kind == 1:
            line[i] = (line[i] + left) & 0xFF
        elif kind == 2:
            line[i] = (line[i] + up) & 0xFF
        elif kind == 3:
            line[i] = (line[i] + (left + up) // 2) & 0xFF
        elif kind == 4:
            estimate = left + up - corner
            pa, pb, pc = abs(estimate - left), abs(estimate - up), abs(estimate - corner)
            predictor = left if pa <= pb and pa <= pc else up if pb <= pc else corner
            line[i] = (line[i] + predictor) & 0xFF
    return line


async def test_component_panels_render_escaped(make_relay: RelayFactory) -> None:
    client = await make_relay({"health": {"probe_interval": 0}})
    rows = [{"name": "mixpanel-2-latest.min.js", "version": '"abc"', "age": "12 s",
             "variants": "br, gzip, identity"},
            {"name": "<img src=x onerror=alert(1)>.js", "version": "-", "age": "1 s",
             "variants": "identity"}]
    client.app[STATUS_BOARD_KEY].add_panel("Asset cache", lambda: rows)
    client.app[STATUS_BOARD_KEY].add_panel("Replicas", list)      # an empty one
    page = await (await client.get("/status")).text()
    section = page[page.index('<section id="asset-cache"'):page.index('<section id="spool"')]
    assert '<table class="contents"><tr><th>name</th><th>version</th><th>age</th>' in section
    assert "<td>br, gzip, identity</td>" in section and "<td>&quot;abc&quot;</td>" in section
    assert "&lt;img src=x onerror=alert(1)&gt;.js" in section and "<img" not in section
    assert '<section id="replicas" data-enabled="true"><h2>Replicas</h2>' \
           '<p class="empty">empty</p></section>' in page


async def test_asset_rows_describe_cached_bundles(make_relay: RelayFactory) -> None:
    cdn = FakeCdn()
    await cdn.start()
    try:
        client = await make_relay({"health": {"probe_interval": 0},
                                   "assets": {"cdn_url": cdn.url}})
        for name in ("mixpanel-2-latest.min.js", "mixpanel-recorder.min.js"):
            assert (await client.get(f"/libs/{name}")).status == 200
        assert cdn.count() == 2
    finally:
        await cdn.close()
    # The panel add_assets wired itself reads the live cache (without reordering its LRU).
    page = Rows()
    page.feed(await (await client.get("/status")).text())
    contents = [cells for found, cells in page.rows if cells and cells[0].endswith(".js")]
    assert [cells[0] for cells in contents] == ["mixpanel-2-latest.min.js",
                                                "mixpanel-recorder.min.js"]
    loader = contents[0]
    assert loader[1] == cdn.etag("mixpanel-2-latest.min.js")
    assert loader[2] == "mutable" and loader[3] in ("0 s", "1 s", "2 s")
    identity = len(cdn.files["mixpanel-2-latest.min.js"]) / 1024
    assert f"identity {identity:.1f} KiB" in loader[4] and "gzip" in loader[4]
