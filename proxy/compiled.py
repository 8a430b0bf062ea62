"""The compiled build: which modules mypyc compiles, and whether this process runs them.

`MIXPANEL_PROXY_COMPILE=1 pip install .` (and the Docker image) builds a wheel holding these
modules as C extensions beside their `.py` source; Python imports an extension before a `.py` of
the same name. Every other build is pure Python: the default `pip install .` and the editable
dev install (`setup.py` never compiles for `pip install -e`: an extension in the source tree
would shadow the `.py` being edited). Both builds pass the same fast tier (`.ci/compiled-suite`).

What is here: pure, typed code run per request (path matching, routing, header policy, client
IP, sizing, the codec), the edge's head framing and answer writer, and the upstream connection
protocol (`upstream/http1.py`: deriving from `asyncio.Protocol`, its class stays a Python class
under mypyc, but its methods, llhttp's callbacks included, run compiled: one exchange's protocol
work takes 10-40 % less time, `bench/decide.py`). Not here: the modules the hot-path rewrite
is changing (the edge connection, the relay handler, the upstream pool and client).

A compiled class is a C struct: compiled code reads its fields at C speed, but interpreted code
reads them about 2.7 times slower than a Python object's (CPython's attribute caches do not
apply) and builds one with keywords about 30 % slower. The results the interpreted relay reads
field by field (`PathMatch`, `Head`, `Refusal`, `LeanRequest`, `RoutedRequest`, `Plan`, `Part`,
`RawAnswer`) stay Python classes under mypyc: `@mypyc_attr(native_class=False)`. This module
is never compiled: `setup.py` reads `MODULES` from it before anything is built, so it imports
nothing from the package.
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
