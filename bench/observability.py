"""Per-request cost of the observability work: access-log line, region health, the middleware.

In-process micro-benchmark (no sockets): each figure is microseconds per request on this machine,
best of 5 runs. For scale, the relay's whole per-request budget at 3,000 req/s per core is ~330 us.

    python bench/observability.py [--number 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import timeit

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from prometheus_client import CollectorRegistry

from proxy.ops.accesslog import (
    AccessRecorder,
    RequestFacts,
    access_line,
    access_middleware,
    ip_policy,
)
from proxy.ops.health import RegionHealth
from proxy.ops.metrics import Metrics


def best(function: object, number: int) -> float:
    runs = timeit.repeat(function, number=number, repeat=5)  # type: ignore[arg-type]
    return min(runs) / number * 1e6


async def middleware_cost(metrics: Metrics, log_on: bool, number: int) -> float:
    recorder = AccessRecorder(metrics, log_on, ip_policy("truncated"))
    middleware = access_middleware(recorder, frozenset())
    request = make_mocked_request("POST", "/track", headers={"Content-Length": "120"})
    answer = web.Response(body=b"1")

    async def handler(request: web.Request) -> web.StreamResponse:
        return answer

    async def bare() -> None:
        for _ in range(number):
            await handler(request)

    async def wrapped() -> None:
        for _ in range(number):
            await middleware(request, handler)

    loop = asyncio.get_running_loop()
    timings = []
    for body in (bare, wrapped):
        best_run = float("inf")
        for _ in range(5):
            started = loop.time()
            await body()
            best_run = min(best_run, loop.time() - started)
        timings.append(best_run / number * 1e6)
    return timings[1] - timings[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--number", type=int, default=20000)
    number = parser.parse_args().number
    logging.getLogger("mixpanel_proxy.access").addHandler(logging.NullHandler())
    logging.getLogger("mixpanel_proxy.access").propagate = False
    logging.getLogger("mixpanel_proxy.access").setLevel(logging.INFO)
    metrics = Metrics(CollectorRegistry())
    health = RegionHealth(["us"], metrics, 60)
    request = make_mocked_request("POST", "/track", headers={"Content-Length": "120"})
    facts = RequestFacts()
    facts.endpoint, facts.region, facts.client_ip = "track", "us", "203.0.113.9"
    shown_ip = json.dumps(ip_policy("truncated")(facts.client_ip))    # as the recorder keeps it
    costs = {
        "access_line": best(lambda: access_line(request, facts, 200, 1, 0.004, shown_ip), number),
        "region health, one success": best(lambda: health.succeeded("us", 0.01), number),
        "middleware, access log on": asyncio.run(middleware_cost(metrics, True, number)),
        "middleware, access log off": asyncio.run(middleware_cost(metrics, False, number)),
    }
    for label, micros in costs.items():
        print(f"{label + ':':<35} {micros:6.2f} us")


if __name__ == "__main__":
    main()
