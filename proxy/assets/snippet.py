"""`mixpanel-proxy snippet`: the HTML a site pastes to load the SDK through this relay.

It sets `MIXPANEL_CUSTOM_LIB_URL` (the loader's only runtime override), then the loader snippet,
then `mixpanel.init` with every URL pointing at this deployment. The loader is Mixpanel's own
minified snippet, read at run time from an installed mixpanel-browser package when one is
found; otherwise our own equivalent stub below (same contract: `window.mixpanel` as a queue with
`_i` and `__SV`, which the library's `init_from_snippet` replays).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..config import Config
from ..endpoints import LATEST_LOADER

__all__ = ["add_snippet_command", "render_snippet", "run_snippet"]

SNIPPET_FILE = Path("node_modules", "mixpanel-browser", "dist", "mixpanel-jslib-snippet.min.js")
_CHECKOUT_JS = Path(__file__).resolve().parents[2] / "tests" / "js"

# Our own loader stub, written for this project. The library only needs `window.mixpanel` to be
# an array with `__SV` >= 1.1 and `_i` = [[token, config, name], ...], each instance an array of
# queued [method, ...args] calls plus a `people` array of its own.
OWN_LOADER_STUB = """\
(function (doc, mp) {
  if (mp.__SV) { return; }
  window.mixpanel = mp;
  mp._i = [];
  var methods = ("track track_pageview track_links track_forms track_with_groups time_event " +
    "register register_once unregister identify alias name_tag reset set_config disable " +
    "opt_in_tracking opt_out_tracking has_opted_in_tracking has_opted_out_tracking " +
    "clear_opt_in_out_tracking start_batch_senders start_session_recording " +
    "stop_session_recording add_group set_group remove_group people.set people.set_once " +
    "people.unset people.increment people.append people.union people.remove " +
    "people.track_charge people.clear_charges people.delete_user").split(" ");
  function enqueue(instance, path) {
    var parts = path.split("."), owner = parts.length === 2 ? instance[parts[0]] : instance;
    var method = parts[parts.length - 1];
    owner[method] = function () {
      owner.push([method].concat(Array.prototype.slice.call(arguments, 0)));
    };
  }
  mp.init = function (token, config, name) {
    var instance = mp;
    if (typeof name !== "undefined") { instance = mp[name] = []; } else { name = "mixpanel"; }
    instance.people = instance.people || [];
    for (var i = 0; i < methods.length; i++) { enqueue(instance, methods[i]); }
    mp._i.push([token, config, name]);
  };
  mp.__SV = 1.2;
  var script = doc.createElement("script");
  script.type = "text/javascript";
  script.async = true;
  script.src = MIXPANEL_CUSTOM_LIB_URL;
  var first = doc.getElementsByTagName("script")[0];
  first.parentNode.insertBefore(script, first);
})(document, window.mixpanel || []);"""


def add_snippet_command(commands: argparse._SubParsersAction[argparse.ArgumentParser],
                        config_help: str) -> None:
    snippet = commands.add_parser("snippet", help="print the HTML that loads the SDK through "
                                                  "this relay ([assets] public_url must be set)")
    snippet.add_argument("--config", help=config_help)
    snippet.add_argument("--token", required=True, help="the Mixpanel project token")
    snippet.add_argument("--record-sessions-percent", type=float, default=0.0,
                         help="share of sessions Session Replay records, 0-100 (default 0)")
    snippet.add_argument("--loader-snippet", help="Mixpanel's mixpanel-jslib-snippet.min.js "
                                                  "(default: an installed mixpanel-browser, "
                                                  "else our own equivalent stub)")


def run_snippet(config: Config, args: argparse.Namespace) -> int:
    problem = _problem(config, args)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    loader, origin = find_loader(args.loader_snippet, _search_paths())
    print(render_snippet(config, args.token, args.record_sessions_percent, loader, origin))
    return 0


def find_loader(explicit: str | None, search: tuple[Path, ...]) -> tuple[str, str]:
    """The loader snippet text and where it came from: `explicit`, else the first of `search`
    that exists, else our own stub."""
    for path in (Path(explicit),) if explicit else search:
        if path.is_file():
            return path.read_text(encoding="utf-8").strip(), f"Mixpanel's snippet from {path}"
    return OWN_LOADER_STUB, "mixpanel-proxy's own loader stub"


def _search_paths() -> tuple[Path, ...]:
    return (Path.cwd() / SNIPPET_FILE, _CHECKOUT_JS / SNIPPET_FILE)


def render_snippet(config: Config, token: str, record_sessions_percent: float, loader: str,
                   origin: str) -> str:
    lib_base = config.assets.lib_base_url
    assert lib_base is not None, "render_snippet needs [assets] public_url"
    init = {"api_host": public_api_host(config), "lib_base_path": lib_base,
            "api_payload_format": "json",
            "record_sessions_percent": _number(record_sessions_percent)}
    options = ",\n".join(f"  {key}: {_js(value)}" for key, value in init.items())
    return (f"<!-- Mixpanel through mixpanel-proxy; loader: {origin} -->\n"
            f'<script type="text/javascript">\n'
            f"var MIXPANEL_CUSTOM_LIB_URL = {_js(lib_base + LATEST_LOADER)};\n"
            f"{loader}\n"
            f"mixpanel.init({_js(token)}, {{\n{options}\n}});\n"
            f"</script>")


def _problem(config: Config, args: argparse.Namespace) -> str | None:
    if not config.assets.enabled or config.assets.public_url is None:
        return ("assets.public_url: required by `snippet` (the URL browsers reach this relay "
                "at, e.g. https://www.example.com), with assets.enabled = true")
    if args.loader_snippet and not Path(args.loader_snippet).is_file():
        return f"--loader-snippet: no such file {args.loader_snippet}"
    if not 0 <= args.record_sessions_percent <= 100:
        return "--record-sessions-percent: must be between 0 and 100"
    token: str = args.token
    if not token or not all(char.isalnum() or char in "_-" for char in token):
        return "--token: expected a Mixpanel project token (letters, digits, _ or -)"
    return None


def _number(value: float) -> int | float:
    return int(value) if value.is_integer() else value


def _js(value: object) -> str:
    # JSON is valid JavaScript; "</" is escaped so no value can close the <script> element.
    return json.dumps(value).replace("</", "<\\/")


def public_api_host(config: Config) -> str | None:
    """The SDK's `api_host` for this deployment, when `[assets] public_url` is set."""
    if config.assets.public_url is None:
        return None
    return str(config.assets.public_url).rstrip("/") + config.routing.base_path
