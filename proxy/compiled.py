"""The compiled build: which modules mypyc compiles, and whether this process runs them.

`MIXPANEL_PROXY_COMPILE=1 pip install .` (and the Docker image) builds a wheel holding these
modules as C extensions beside their `.py` source; Python imports an extension before a `.py` of
the same name. Every other build is pure Python: the default `pip install .` and the editable
dev install (`setup.py` never compiles for `pip install -e`: an extension in the source tree
would shadow the `.py` being edited). Both builds pass the same suite (`.ci/compiled-suite`).

What is here: every module a plain SDK request runs through, from the edge's framing to the
answer's bytes: the edge connection, head framing and answer writer; the plain path and the
relay handler; path matching, routing, header policy, client IP, sizing, the codec; the upstream
client, pool, outbox and connection protocol; metric series and tallies, region health and the
access line. Measured side by side (`bench/run.py --compiled`, /track, 2 workers): the compiled
relay takes about a fifth less CPU per request than the pure one. Not here: what runs off the
request path (config, spool, assets, ops pages).

A compiled class is a C struct: compiled code reads its fields at C speed; interpreted code
reads them more slowly than a Python object's. Now that the code reading the per-request
results (`PathMatch`, `Head`, `LeanRequest`, `RoutedRequest`, `Plan`, `Part`, `RawAnswer`,
`Answer`) is compiled too, they are compiled classes, each with an `__init__` of its own: the
one `dataclasses` generates runs in the interpreter, at about five times the cost. Two more
things are slower compiled, and avoided on the request path: a class deriving from a Python
class keeps its fields in a dict (so the edge and upstream connections are asyncio protocols by
their methods, not by deriving from `asyncio.Protocol`), and an f-string's format specs
(`{x:.2f}`) cost about twice what the interpreter pays (the access line's durations are
`%`-formatted).

This module is never compiled: `setup.py` reads `MODULES` from it before anything is built, so
it imports nothing from the package.
"""

from __future__ import annotations

import importlib
import sys
from importlib.machinery import EXTENSION_SUFFIXES

MODULES: tuple[str, ...] = (
    "proxy/endpoints.py",
    "proxy/decide/paths.py",
    "proxy/decide/routing.py",
    "proxy/decide/headers.py",
    "proxy/decide/clientip.py",
    "proxy/decide/sizing.py",
    "proxy/decide/credentials.py",
    "proxy/codec/errors.py",
    "proxy/codec/inflate.py",
    "proxy/codec/payload.py",
    "proxy/codec/request.py",
    "proxy/codec/encode.py",
    "proxy/codec/policy.py",
    "proxy/server/edge/head.py",
    "proxy/server/edge/wire.py",
    "proxy/upstream/http1.py",
    "proxy/upstream/outbox.py",
    "proxy/upstream/pool.py",
    "proxy/upstream/client.py",
    "proxy/relay/answers.py",
    "proxy/relay/outcomes.py",
    "proxy/relay/handler.py",
    "proxy/relay/plain.py",
    "proxy/server/edge/connection.py",
    "proxy/ops/tally.py",
    "proxy/ops/latency.py",
    "proxy/ops/metrics.py",
    "proxy/ops/health.py",
    "proxy/ops/accesslog.py",
    "proxy/ops/logs.py",
)


def module_name(path: str) -> str:
    """`proxy/decide/paths.py` -> `proxy.decide.paths`."""
    return path.removesuffix(".py").replace("/", ".")


def is_extension(file: str | None) -> bool:
    return file is not None and file.endswith(tuple(EXTENSION_SUFFIXES))


def compiled_modules() -> dict[str, bool]:
    """Each listed module -> whether this interpreter imported it as a compiled extension."""
    return {module_name(path): is_extension(importlib.import_module(module_name(path)).__file__)
            for path in MODULES}


def main(argv: list[str]) -> int:
    """`python -m proxy.compiled [--require]`: print which build runs; `--require` fails (exit 1)
    unless every listed module is compiled (the Docker image checks itself with it)."""
    modules = compiled_modules()
    for name, compiled in modules.items():
        print(f"{'compiled' if compiled else 'python  '}  {name}")
    count = sum(modules.values())
    print(f"{count} of {len(modules)} modules compiled")
    return 1 if "--require" in argv and count < len(modules) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
