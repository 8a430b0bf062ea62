"""What the browser tests are made of: Chromium started off the network, the site that serves the
test page (with Mixpanel's official snippet), a tab that records what the browser saw, and waits.

The site and the relay listen on different loopback origins (`localhost` vs `127.0.0.1`), so every
API call the SDK makes is a real cross-origin request that Chromium checks against the relay's CORS
answers.
"""

from __future__ import annotations

import base64
import gzip
import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Request,
    Response,
)

from tests.support.fake_cdn import DIST
from tests.support.fakes import FakeUpstream, Received
from tests.support.waits import eventually, eventually_blocking

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"   # Debian's package
# Keep Chromium off the network: no background fetches or component updates, and every host name
# but loopback resolves to nothing, so a request that escapes the relay fails instead of leaving.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
    "--disable-domain-reliability", "--no-default-browser-check", "--disable-breakpad",
    "--disable-client-side-phishing-detection", "--mute-audio",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
)
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1"})


def launch_chromium(profile: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start headless Chromium with a fresh profile; answer the DevTools HTTP endpoint."""
    with log.open("wb") as stderr:
        process = subprocess.Popen([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                    "about:blank"], stdout=subprocess.DEVNULL, stderr=stderr)
    port_file = profile / "DevToolsActivePort"

    def endpoint() -> str | None:
        lines = port_file.read_text().splitlines() if port_file.exists() else []
        if len(lines) >= 2 and lines[0].isdigit():
            return f"http://127.0.0.1:{lines[0]}"
        if process.poll() is not None:
            raise RuntimeError(f"Chromium exited; its log:\n{log.read_text()[-2000:]}")
        return None

    try:
        return process, eventually_blocking(endpoint, "Chromium's DevTools port", timeout=30)
    except AssertionError:
        process.kill()
        raise RuntimeError(f"Chromium did not start; its log:\n{log.read_text()[-2000:]}") from None


def official_snippet() -> str:
    """Mixpanel's loader snippet exactly as the npm package ships it."""
    return (DIST / "mixpanel-jslib-snippet.min.js").read_text()


def snippet_page(relay: str, token: str, options: dict[str, Any], script: str = "") -> str:
    """A page set up the way Mixpanel's proxy docs say: custom lib URL, api_host, lib_base_path."""
    libs = f"{relay}/libs/"
    init = {"api_host": relay, "lib_base_path": libs, **options}
    lib_url = f"{libs}mixpanel-2-latest.min.js"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>relay end-to-end</title>
<script>const MIXPANEL_CUSTOM_LIB_URL = {json.dumps(lib_url)};</script>
<script type="text/javascript">{official_snippet()}</script>
<script>
mixpanel.init({json.dumps(token)}, Object.assign({json.dumps(init)}, {{
  loaded: function () {{ window.__mpLoaded = true; }}
}}));
{script}
</script></head>
<body><h1>Checkout</h1><p>Text the recorder snapshots.</p>
<label>Email <input id="email" value="someone@example.com"></label>
<button id="buy" onclick="this.textContent = 'Bought'">Buy</button></body></html>
"""


class Site:
    """The first-party site: serves registered pages from `http://localhost:<port>`."""

    def __init__(self) -> None:
        self._pages: dict[str, str] = {}
        self.server = TestServer(self._app(), host="127.0.0.1")

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{name}", self._page)
        return app

    async def _page(self, request: web.Request) -> web.Response:
        html = self._pages.get(request.match_info["name"])
        if html is None:
            raise web.HTTPNotFound()
        return web.Response(text=html, content_type="text/html")

    def add(self, html: str) -> str:
        name = f"page{len(self._pages)}.html"
        self._pages[name] = html
        return f"http://localhost:{self.server.port}/{name}"


@dataclass
class Tab:
    """One page in its own browser context, with everything the browser reported about it."""

    context: BrowserContext
    page: Page
    console: list[str] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    responses: list[Response] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def cors_errors(self) -> list[str]:
        return [line for line in self.console
                if "CORS" in line or "Access-Control" in line or "blocked" in line]

    def offsite_requests(self) -> list[str]:
        return [r.url for r in self.requests
                if urlsplit(r.url).scheme in ("http", "https")
                and urlsplit(r.url).hostname not in LOOPBACK_HOSTS]

    def requests_to(self, path_part: str) -> list[Request]:
        return [r for r in self.requests if path_part in urlsplit(r.url).path]

    def statuses(self, path_part: str) -> list[int]:
        return [r.status for r in self.responses if path_part in urlsplit(r.url).path]

    async def goto_and_wait_loaded(self, url: str) -> None:
        await self.page.goto(url)
        await self.page.wait_for_function("window.__mpLoaded === true", timeout=10_000)

    async def evaluate(self, script: str, arg: Any = None) -> Any:
        return await self.page.evaluate(script, arg)


async def open_tab(browser: Browser) -> Tab:
    context = await browser.new_context()
    page = await context.new_page()
    tab = Tab(context, page)

    def on_console(message: ConsoleMessage) -> None:
        tab.console.append(f"{message.type}: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: tab.console.append(f"pageerror: {error}"))
    # Playwright needs plain functions as handlers (a bound list.append is refused).
    page.on("request", lambda request: tab.requests.append(request))
    page.on("response", lambda response: tab.responses.append(response))
    page.on("requestfailed",
            lambda request: tab.failed.append(f"{request.url}: {request.failure}"))
    return tab


async def replay_id_once_recording(tab: Tab) -> str:
    handle = await tab.page.wait_for_function(
        "() => mixpanel.get_session_recording_properties()['$mp_replay_id']", timeout=10_000)
    replay_id: str = await handle.json_value()
    return replay_id


async def flush_replay_batch(tab: Tab, region: FakeUpstream) -> None:
    """Give rrweb something to record, then pause: pausing flushes the batch at once (the SDK's
    own interval is 10 s); resuming continues the same replay with a new full snapshot."""
    received, answered = len(calls(region, "record")), len(tab.statuses("/record"))
    await tab.page.click("#buy")
    await tab.page.wait_for_timeout(400)   # past the recorder's 250 ms enqueue throttle
    await tab.evaluate("() => mixpanel.pause_session_recording()")
    await eventually(lambda: len(calls(region, "record")) > received
                     and len(tab.statuses("/record")) > answered,
                     f"a /record batch at the {region.name} fake, and its answer")
    await tab.evaluate("() => mixpanel.resume_session_recording()")


def calls(fake: FakeUpstream, endpoint: str) -> list[Received]:
    """What reached a fake region on one endpoint (`track`, `engage`, `record`...)."""
    return [r for r in fake.received if r.path.strip("/").split("/")[0] == endpoint]


def records(fake: FakeUpstream, endpoint: str) -> list[Any]:
    return [record for received in calls(fake, endpoint) for record in received.records()]


def query(received: Received) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(received.query).items()}


def basic(token: str) -> str:
    return "Basic " + base64.b64encode(f"{token}:".encode()).decode()


def rrweb_events(received: Received) -> list[dict[str, Any]]:
    """A `/record` batch's body: gzip bytes of a JSON array of rrweb events."""
    events: list[dict[str, Any]] = json.loads(gzip.decompress(received.body))
    return events
