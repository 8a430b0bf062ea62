"""The per-request decisions, in-process: µs per call for the bench's /track request, pure
Python against the compiled build (mypyc, `proxy/compiled.py`).

Each step is what the relay runs once per plain SDK request: the edge's head framing, the path
match, CORS, the client IP, the routing plan (with and without token routing), the header policy
both ways, the answer's bytes and the upstream connection's share of one exchange. A step's
figure is the fastest of several rounds, over turns that alternate the builds (the figure least
disturbed by other work on the machine).

    python bench/decide.py                     # the build this checkout imports
    .ci/compiled-tree /tmp/compiled            # a compiled copy of the checkout, then:
    python bench/decide.py --compiled /tmp/compiled
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.workloads import track_body  # noqa: E402
from proxy.compiled import compiled_modules  # noqa: E402
from proxy.config import parse_config  # noqa: E402
from proxy.decide.clientip import ClientIPResolver  # noqa: E402
from proxy.decide.headers import (  # noqa: E402
    CorsPolicy,
    client_response_headers,
    upstream_request_headers,
)
from proxy.decide.paths import PathMatch, PathMatcher  # noqa: E402
from proxy.decide.routing import RoutedRequest, Router  # noqa: E402
from proxy.relay.answers import Answer  # noqa: E402
from proxy.server.edge.head import Head, HeadReader  # noqa: E402
from proxy.server.edge.wire import answer_bytes  # noqa: E402
from proxy.upstream.http1 import _Connection  # noqa: E402

TARGET = "/track/?verbose=1&ip=1&_=1764330000123"
ORIGIN = "https://shop.example"
Build = dict[str, Any]      # {"compiled": "15/15", "us_per_call": {step: µs}}
UPSTREAM_ANSWER = {"Content-Type": "application/json", "Content-Length": "25",
                   "Access-Control-Allow-Origin": "*", "Date": "Mon, 30 Nov 2026 17:00:00 GMT",
                   "Strict-Transport-Security": "max-age=31536000"}


def steps() -> dict[str, Callable[[], object]]:
    body = track_body()
    head = (f"POST {TARGET} HTTP/1.1\r\nHost: relay.example\r\nOrigin: {ORIGIN}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\nAccept: */*\r\n"
            "User-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/142.0\r\n"
            "X-Forwarded-For: 203.0.113.9\r\nX-Real-IP: 203.0.113.9\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    plain = parse_config({})
    routed = parse_config({"projects": [{"token": "bench_token", "region": "eu"}]})
    matcher, reader = PathMatcher(), HeadReader()

    def match(target: str) -> PathMatch | None:     # the relay's, less its cache of matches
        return matcher.match(target.partition("?")[0])

    parsed = reader.read(head, match, plain.limits.body)
    assert isinstance(parsed, Head), parsed
    cors = CorsPolicy(plain.cors)
    resolver = ClientIPResolver(parse_config(
        {"server": {"trusted_proxies": ["127.0.0.1/32"]}}).server.trusted_proxies)
    request = RoutedRequest(endpoint="track", pinned_region=None, method="POST",
                            query=TARGET.partition("?")[2].encode(), body=body,
                            content_type="application/x-www-form-urlencoded",
                            inflate_limit=plain.limits.body["track"])
    plain_router, token_router = Router(plain), Router(routed)
    answer = Answer(200, {**cors.headers(ORIGIN), "Content-Type": "application/json"},
                    b'{"status": 1, "error": null}')
    return {
        "edge head framing": lambda: reader.read(head, match, plain.limits.body),
        "path match (uncached)": lambda: match(TARGET),
        "CORS (allows + headers)": lambda: cors.allows(ORIGIN) and cors.headers(ORIGIN),
        "client IP (trusted hop)": lambda: resolver.resolve(
            "127.0.0.1", "203.0.113.9", "203.0.113.9", None),
        "routing plan, no projects": lambda: plain_router.plan(request),
        "routing plan, token routing": lambda: token_router.plan(request),
        "upstream request headers": lambda: upstream_request_headers(
            parsed.headers, "203.0.113.9"),
        "client response headers": lambda: client_response_headers(UPSTREAM_ANSWER),
        "answer bytes": lambda: answer_bytes(answer, True, False),
        "upstream exchange (http1)": upstream_exchange(),
    }


ANSWER = (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Mon, 30 Nov 2026 17:00:00 GMT\r\n"
          b"Content-Type: application/json\r\nContent-Length: 25\r\nConnection: keep-alive\r\n"
          b"Access-Control-Allow-Origin: *\r\nStrict-Transport-Security: max-age=31536000\r\n"
          b"\r\n" + b'{"error":null,"status":1}')


class _Transport:
    """Takes the request's bytes; the answer is fed straight to the protocol."""

    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return False


def upstream_exchange() -> Callable[[], object]:
    """One keep-alive exchange on the upstream connection protocol, without a socket: the
    request written, the answer's bytes parsed, the waiting coroutine resumed with them."""
    connection = _Connection()
    connection.connection_made(_Transport())  # type: ignore[arg-type]
    deadline = asyncio.get_running_loop().time() + 3600

    def exchange() -> object:
        waiting = connection.exchange(b"POST /track HTTP/1.1\r\n\r\n", deadline, "bench")
        waiting.send(None)                  # written; now awaits the answer
        connection.data_received(ANSWER)
        try:
            waiting.send(None)
        except StopIteration as done:
            return done.value
        raise AssertionError("the exchange did not finish on its answer")

    return exchange


def fastest(work: Callable[[], object], rounds: int, calls: int) -> float:
    """µs per call: the fastest of `rounds` rounds of `calls` calls."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            work()
        best = min(best, time.perf_counter() - started)
    return best / calls * 1e6


async def measure(rounds: int, calls: int) -> Build:
    """In a running loop: the upstream connection protocol takes it when made."""
    modules = compiled_modules()
    timings = {name: round(fastest(work, rounds, calls), 3) for name, work in steps().items()}
    return {"compiled": f"{sum(modules.values())}/{len(modules)}", "us_per_call": timings}


def run_in(tree: Path, rounds: int, calls: int) -> Build:
    """The same measurement in a process importing `tree`'s package."""
    result = subprocess.run(
        [sys.executable, "bench/decide.py", "--json", "--rounds", str(rounds),
         "--calls", str(calls)], cwd=tree, check=True, capture_output=True, text=True)
    measured: Build = json.loads(result.stdout)
    return measured


def fastest_turn(turns: list[Build]) -> Build:
    steps = turns[0]["us_per_call"]
    return {"compiled": turns[0]["compiled"],
            "us_per_call": {step: min(turn["us_per_call"][step] for turn in turns)
                            for step in steps}}


def table(builds: dict[str, Build]) -> None:
    timings = [build["us_per_call"] for build in builds.values()]
    ratio = len(timings) == 2
    print(f"{'µs per call':30}" + "".join(f"{name:>26}" for name in builds)
          + ("  compiled/pure" if ratio else ""))
    rows = [(step, [each[step] for each in timings]) for step in timings[0]]
    rows.append(("sum", [sum(each.values()) for each in timings]))
    for step, row in rows:
        print(f"{step:30}" + "".join(f"{value:>26.2f}" for value in row)
              + (f"{row[1] / row[0]:>14.2f}x" if ratio else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compiled", type=Path, help="a compiled copy of the checkout")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--turns", type=int, default=3, help="alternating turns per build")
    parser.add_argument("--json", action="store_true", help="print this build's figures only")
    args = parser.parse_args()
    if args.json:
        print(json.dumps(asyncio.run(measure(args.rounds, args.calls))))
        return
    # The builds take turns, and each step keeps its fastest turn: a burst of other work on the
    # machine then slows one turn, not one build.
    here: list[Build] = []
    there: list[Build] = []
    for _ in range(args.turns):
        here.append(run_in(Path(__file__).resolve().parent.parent, args.rounds, args.calls))
        if args.compiled:
            there.append(run_in(args.compiled, args.rounds, args.calls))
    builds = {f"this ({here[0]['compiled']} compiled)": fastest_turn(here)}
    if there:
        builds[f"--compiled ({there[0]['compiled']} compiled)"] = fastest_turn(there)
    table(builds)


if __name__ == "__main__":
    main()
