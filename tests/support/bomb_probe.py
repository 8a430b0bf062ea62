"""Run in a fresh interpreter: feed one bomb file to the codec, report peak RSS growth as JSON.

    python -m tests.support.bomb_probe <gzip|deflate|br> <bomb file> <inflate limit bytes>

The bomb is built by the caller and only read here, so nothing before decoding raised the peak
above the current RSS; where Linux allows, the peak is also reset (/proc/self/clear_refs) just
before decoding. Growth = peak after decoding - RSS just before it.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from pathlib import Path

from proxy.codec import DecodeLimits, PayloadTooLarge, decode_payload


def status_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        pass     # older kernels: the peak so far is only interpreter start-up and the bomb read


def main() -> None:
    coding, path, limit = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    bomb = path.read_bytes()
    gc.collect()
    reset_peak()
    before = status_bytes("VmRSS")
    started = time.perf_counter()
    outcome, message = "accepted", ""
    try:
        decode_payload(bomb, b"", "application/x-www-form-urlencoded", coding,
                       DecodeLimits(compressed=len(bomb), inflated=limit))
    except PayloadTooLarge as exc:
        outcome, message = "refused", exc.message
    print(json.dumps({"outcome": outcome, "message": message, "bomb_bytes": len(bomb),
                      "growth": status_bytes("VmHWM") - before,
                      "seconds": time.perf_counter() - started}))


if __name__ == "__main__":
    main()
