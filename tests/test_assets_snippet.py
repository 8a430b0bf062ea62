"""`mixpanel-proxy snippet`: the printed HTML, and (run in node against a minimal DOM) proof that
our own loader stub queues exactly what Mixpanel's official snippet queues."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from proxy.assets.snippet import OWN_LOADER_STUB, SNIPPET_FILE, find_loader
from proxy.cli import main
from tests.support.fake_cdn import DIST

OFFICIAL = DIST / "mixpanel-jslib-snippet.min.js"


def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "relay.toml"
    path.write_text(text)
    return str(path)


def test_snippet_points_everything_at_the_relay(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, '[assets]\npublic_url = "https://www.example.com"\n'
                                    'path = "/_mp/libs/"\n[routing]\nbase_path = "/_mp/api"\n')
    assert main(["snippet", "--config", config, "--token", "tok_123",
                 "--record-sessions-percent", "25", "--loader-snippet", str(OFFICIAL)]) == 0
    html = capsys.readouterr().out
    assert html.startswith("<!-- Mixpanel through mixpanel-proxy")
    assert ('var MIXPANEL_CUSTOM_LIB_URL = '
            '"https://www.example.com/_mp/libs/mixpanel-2-latest.min.js";') in html
    assert OFFICIAL.read_text().strip() in html
    init = re.search(r"mixpanel\.init\((.*)\);", html, re.S)
    assert init is not None
    assert init.group(1) == ('"tok_123", {\n'
                             '  api_host: "https://www.example.com/_mp/api",\n'
                             '  lib_base_path: "https://www.example.com/_mp/libs/",\n'
                             '  api_payload_format: "json",\n'
                             '  record_sessions_percent: 25\n}')
    assert html.rstrip().endswith("</script>")


@pytest.mark.parametrize("config_text, args, problem", [
    ("", ["--token", "tok"], "assets.public_url: required"),
    ('[assets]\npublic_url = "https://a.example"\n', ["--token", "x</script>"], "--token"),
    ('[assets]\npublic_url = "https://a.example"\n',
     ["--token", "tok", "--record-sessions-percent", "101"], "--record-sessions-percent"),
    ('[assets]\npublic_url = "https://a.example"\n',
     ["--token", "tok", "--loader-snippet", "/nonexistent.js"], "--loader-snippet"),
])
def test_snippet_refuses_what_would_not_work(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], config_text: str,
        args: list[str], problem: str) -> None:
    config = write_config(tmp_path, config_text)
    assert main(["snippet", "--config", config, *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and problem in captured.err


def test_the_installed_snippet_is_found_else_our_stub(tmp_path: Path) -> None:
    text, origin = find_loader(None, (tmp_path / SNIPPET_FILE, OFFICIAL))
    assert text == OFFICIAL.read_text().strip() and str(OFFICIAL) in origin
    assert find_loader(None, (tmp_path / SNIPPET_FILE,)) == (
        OWN_LOADER_STUB, "mixpanel-proxy's own loader stub")


# Runs a loader in node with just enough DOM, makes the calls a page makes before the library
# arrives, and prints what the library's init_from_snippet would find.
_HARNESS = """
const vm = require("vm");
const inserted = [];
const first = {parentNode: {insertBefore: (el) => inserted.push(el)}};
const document = {
  createElement: (tag) => ({tag}), getElementsByTagName: () => [first],
  location: {protocol: "https:"},
};
const sandbox = {document, MIXPANEL_CUSTOM_LIB_URL: "https://relay.example/libs/x.js"};
sandbox.window = sandbox;   // as in a browser, the global object is `window`
vm.createContext(sandbox);
vm.runInContext(process.argv[1], sandbox);
vm.runInContext(`
  mixpanel.init("tok", {api_host: "https://relay.example"});
  mixpanel.init("tok2", {}, "second");
  mixpanel.track("Signed up", {plan: "pro"});
  mixpanel.identify("u1");
  mixpanel.people.set({name: "A"});
  mixpanel.second.register({a: 1});
`, sandbox);
const mp = sandbox.mixpanel;
const plain = (a) => Array.from(a, (item) => Array.isArray(item) ? Array.from(item) : item);
console.log(JSON.stringify({
  sv: mp.__SV, instances: plain(mp._i), calls: plain(mp), people: plain(mp.people),
  second: plain(mp.second), scripts: inserted.map((el) => [el.tag, el.src, el.async]),
}));
"""


def _queued(loader: str) -> object:
    node = shutil.which("node")
    assert node is not None, "node is installed by tests/install.sh"
    result = subprocess.run([node, "-e", _HARNESS, loader], capture_output=True, text=True,
                            timeout=30, check=True)
    return json.loads(result.stdout)


def test_our_stub_queues_what_the_official_snippet_queues() -> None:
    ours, official = _queued(OWN_LOADER_STUB), _queued(OFFICIAL.read_text())
    assert ours == official
    assert ours == {
        "sv": 1.2,
        "instances": [["tok", {"api_host": "https://relay.example"}, "mixpanel"],
                      ["tok2", {}, "second"]],
        "calls": [["track", "Signed up", {"plan": "pro"}], ["identify", "u1"]],
        "people": [["set", {"name": "A"}]],
        "second": [["register", {"a": 1}]],
        "scripts": [["script", "https://relay.example/libs/x.js", True]],
    }
