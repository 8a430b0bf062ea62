"""Codec throughput: decode + policy + re-encode MB/s, in-process, for the relay's own code path.

Each scenario runs `Router.plan` (what the relay runs per request before the upstream call) on a
fixed request, repeatedly, for a bounded time, and reports MB/s of request body handled:

- a 2,000-event browser batch (base64 `data=`, ~1.9 MB): untouched fast path, routing decode,
  a privacy policy re-encoded with gzip 6 / gzip 1 / no gzip, and a split across two regions;
- 1 MB session-replay bodies (/record, gzip or raw JSON): the relay's path (never decoded), and,
  for scale only, what decoding and re-encoding one would cost if it were done.

    python bench/codec.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import random
import string
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.codec import inflate  # noqa: E402
from proxy.config import parse_config  # noqa: E402
from proxy.decide.routing import Plan, RoutedRequest, Router  # noqa: E402

US, EU = "tok_us_1234", "tok_eu_5678"
PROJECTS = [{"token": US, "region": "us"}, {"token": EU, "region": "eu"}]
POLICY = {"drop_properties": ["$email"], "redact_patterns": [r"[\w.+-]+@[\w-]+\.[\w.]+"],
          "ip": "truncated"}
LIMIT = 10 * 1024 * 1024


def browser_event(rng: random.Random, index: int, token: str) -> dict[str, Any]:
    """An event as mixpanel-browser 2.83 sends it, with the super properties it adds."""
    word = "".join(rng.choices(string.ascii_lowercase, k=8))
    return {"event": rng.choice(["$mp_web_page_view", "Clicked", "Signed up"]), "properties": {
        "$os": "Linux", "$browser": "Chrome", "$current_url": f"https://shop.example/p/{word}",
        "$browser_version": 156, "$screen_height": 1080, "$screen_width": 1920,
        "mp_lib": "web", "$lib_version": "2.83.0", "$insert_id": f"{index:016x}",
        "time": 1764330000.123 + index, "distinct_id": f"$device:{word}", "$device_id": word,
        "$initial_referrer": "$direct", "$initial_referring_domain": "$direct",
        "token": token, "mp_sent_by_lib_version": "2.83.0", "$email": f"{word}@example.com",
        "plan": rng.choice(["free", "pro"]), "cart": [word, index], "note": f"mail {word}@x.io",
    }}


def track_request(events: list[dict[str, Any]]) -> RoutedRequest:
    payload = base64.b64encode(json.dumps(events).encode()).decode()
    body = f"data={quote(payload, safe='')}".encode()
    return RoutedRequest(endpoint="track", pinned_region=None, method="POST",
                         query=b"verbose=1&ip=1&_=1764330000123", body=body,
                         content_type="application/x-www-form-urlencoded", inflate_limit=LIMIT)


def replay_request(body: bytes) -> RoutedRequest:
    return RoutedRequest(endpoint="record", pinned_region=None, method="POST",
                         query=b"replay_id=r&seq=1&format=gzip", body=body,
                         content_type="application/octet-stream", inflate_limit=LIMIT)


def router(privacy: dict[str, Any] | None = None, gzip_level: int = 6,
           projects: bool = False) -> Router:
    return Router(parse_config({"privacy": privacy or {}, "projects": PROJECTS if projects else [],
                                "payload": {"upstream_gzip_level": gzip_level}}))


def rrweb_body(rng: random.Random, size: int) -> bytes:
    """A JSON array of rrweb-like events, at least `size` bytes long."""
    nodes: list[dict[str, Any]] = []
    length = 0
    while length < size:
        node = {"type": 3, "timestamp": 1764330000123 + len(nodes), "data": {
            "source": 0, "texts": [], "attributes": [{"id": len(nodes), "attributes": {
                "class": "".join(rng.choices(string.ascii_letters, k=24))}}]}}
        nodes.append(node)
        length += len(json.dumps(node)) + 2
    return json.dumps(nodes).encode()


def measure(name: str, size: int, work: Callable[[], object], seconds: float) -> dict[str, Any]:
    result = work()                               # warm caches (regexes, lru caches)
    runs, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        work()
        runs += 1
    per_run = elapsed / runs
    return {"scenario": name, "body_bytes": size, "sent_bytes": _sent(result, size),
            "ms_per_request": round(per_run * 1000, 3), "mb_per_s": round(size / per_run / 1e6, 1)}


def _sent(result: object, size: int) -> int:
    """Bytes that go upstream: every part's rewritten body, or the original one."""
    if isinstance(result, Plan):
        return sum(size if part.body is None else len(part.body) for part in result.parts)
    return len(result) if isinstance(result, bytes) else size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per scenario")
    seconds = parser.parse_args().seconds
    rng = random.Random(5)
    batch = track_request([browser_event(rng, i, US) for i in range(2000)])
    mixed = track_request([browser_event(rng, i, US if i % 2 else EU) for i in range(2000)])
    raw_replay = rrweb_body(rng, 1_000_000)
    ratio = len(gzip.compress(raw_replay)) / len(raw_replay)
    gz_replay = gzip.compress(rrweb_body(rng, int(1_000_000 / ratio)), mtime=0)   # ~1 MB
    plans: list[tuple[str, RoutedRequest, Router]] = [
        ("track 2000 events: no projects, no policy (bytes kept)", batch, router()),
        ("track 2000 events: routing decode, one region (bytes kept)", batch,
         router(projects=True)),
        ("track 2000 events: policy, re-encode + gzip 6", batch, router(POLICY)),
        ("track 2000 events: policy, re-encode + gzip 1", batch, router(POLICY, gzip_level=1)),
        ("track 2000 events: policy, re-encode, no gzip", batch, router(POLICY, gzip_level=0)),
        ("track 2000 events: split in 2 regions + gzip 6", mixed, router(projects=True)),
        ("record 1 MB gzip body, policy on (never decoded)", replay_request(gz_replay),
         router(POLICY, projects=True)),
        ("record 1 MB raw JSON body, policy on (never decoded)", replay_request(raw_replay),
         router(POLICY, projects=True)),
    ]
    results = [measure(name, len(request.body), partial(planner.plan, request), seconds)
               for name, request, planner in plans]
    results.append(measure("record 1 MB raw JSON if decoded + re-encoded (not done)",
                           len(raw_replay), lambda: _reencode(raw_replay, ""), seconds))
    results.append(measure("record 1 MB gzip body if decoded + re-encoded (not done)",
                           len(gz_replay), lambda: _reencode(gz_replay, "gzip"), seconds))
    print(f"{'scenario':58} {'body':>8} {'sent':>8} {'ms/req':>8} {'MB/s':>9}")
    for row in results:
        print(f"{row['scenario']:58} {row['body_bytes']:>8} {row['sent_bytes']:>8} "
              f"{row['ms_per_request']:>8} {row['mb_per_s']:>9}")
    print(json.dumps(results))


def _reencode(body: bytes, coding: str) -> bytes:
    records = json.loads(inflate(body, coding, LIMIT))
    return gzip.compress(json.dumps(records, separators=(",", ":")).encode(), mtime=0)


if __name__ == "__main__":
    main()
