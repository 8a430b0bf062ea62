"""What the benchmark sends: SDK-shaped request bodies and the bundle nginx serves statically."""

from __future__ import annotations

import base64
import gzip
import json
import random
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "tests/js/node_modules/mixpanel-browser/dist"
BUNDLE = "mixpanel-recorder-CZqK2y7C.min.js"      # the 340 KB recorder, content-hashed


@dataclass(frozen=True)
class Workload:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes | None
    connections: int
    nginx_path: str | None = None       # where the nginx baselines serve the same thing
    size: int = 0                       # payload bytes per request, for MB/s


def track_body() -> bytes:
    """A ~2 KB base64 batch, as mixpanel-browser's XHR sends it."""
    rng = random.Random(7)
    events = [{"event": f"event {n}", "properties": {
        "token": "bench_token", "distinct_id": f"user-{rng.randrange(10**6)}",
        "time": 1764330000.0 + n, "$insert_id": f"{rng.getrandbits(64):016x}",
        "$current_url": "https://shop.example/products/item", "mp_lib": "web",
        "$lib_version": "2.83.0"}} for n in range(9)]
    encoded = base64.b64encode(json.dumps(events).encode()).decode()
    return ("data=" + urllib.parse.quote(encoded, safe="")).encode()


def record_body() -> bytes:
    """~200 KB of gzip, as the recorder's CompressionStream produces (incompressible-ish)."""
    rng = random.Random(11)
    raw = json.dumps([{"type": 3, "data": {"source": 1, "positions": [
        {"x": rng.randrange(2000), "y": rng.randrange(2000), "id": rng.randrange(10**6),
         "timeOffset": -rng.randrange(500)} for _ in range(40)]}, "timestamp": 1764330000000 + n}
        for n in range(900)]).encode()
    return gzip.compress(raw)


def bundle_files(static: Path) -> int:
    """The recorder pre-compressed with brotli for nginx's static baseline; returns its size."""
    import brotli

    compressed = brotli.compress((DIST / "async-modules" / BUNDLE).read_bytes(), quality=11)
    (static / BUNDLE).write_bytes(compressed)
    return len(compressed)


def workloads(static: Path) -> dict[str, Workload]:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    track = "/track/?verbose=1&ip=1&_=1764330000123"
    track_batch, replay = track_body(), record_body()
    return {
        "track": Workload("POST", track, form, track_batch, 50, size=len(track_batch)),
        "track_c10": Workload("POST", track, form, track_batch, 10, size=len(track_batch)),
        "record": Workload("POST", "/record/?format=gzip&seq=0&replay_id=r&mp_lib=web",
                           {"Content-Type": "application/octet-stream"}, replay, 50,
                           size=len(replay)),
        "bundle": Workload("GET", f"/libs/{BUNDLE}", {"Accept-Encoding": "br"}, None, 50,
                           nginx_path=f"/static/{BUNDLE}", size=bundle_files(static)),
    }
