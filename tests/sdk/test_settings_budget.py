"""/settings gets the upstream budget of the SDK asking: 0.45 s for the browser, 4.5 s for mobile.

mixpanel-js aborts /settings after 500 ms (`src/mixpanel-core.js`, `remote_settings_mode`);
the mobile replay SDKs wait 5 s: mixpanel-android `session-replay/src/main/java/com/mixpanel/
android/sessionreplay/services/RemoteSettingsService.kt` (`SETTINGS_TIMEOUT_MS = 5000L`, query
`recording=1&sdk_config=1&$os=Android&mp_lib=android-sr&$lib_version=…`, Basic token).
"""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from tests.conftest import US_TOKEN, RelayFactory
from tests.sdk import shapes
from tests.sdk.shapes import Shape
from tests.support.fakes import FakeUpstream

SLOW_UPSTREAM = 1.0       # longer than the browser budget, far shorter than the mobile one


def settings(query: dict[str, str]) -> Shape:
    return Shape("settings", "GET", "/settings?" + urlencode(query),
                 {"Authorization": shapes.basic(US_TOKEN)})


ANDROID_SR = {"recording": "1", "sdk_config": "1", "$os": "Android", "mp_lib": "android-sr",
              "$lib_version": "1.2.0"}
SWIFT_SR = {"recording": "1", "sdk_config": "1", "mp_lib": "swift-sr", "$lib_version": "1.5.2",
            "$os": "iOS"}
BROWSER = {"$lib_version": "2.83.0", "mp_lib": "web", "sdk_config": "1"}


@pytest.mark.slow   # waits out a real timeout
async def test_mobile_settings_wait_past_the_browser_budget(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    upstreams["us"].delay = SLOW_UPSTREAM
    client = await make_relay({"upstream": {"settings_timeout": 0.2}})
    for query in (ANDROID_SR, SWIFT_SR):
        reply = await shapes.send(client, settings(query))
        assert reply.status == 200, reply.body
        assert "sdk_config" in reply.json()
    browser = await shapes.send(client, settings(BROWSER))
    assert browser.status == 503            # cut at the browser's budget, which has aborted
    assert len(upstreams["us"].received) == 3
