"""The package's build: pure Python unless MIXPANEL_PROXY_COMPILE=1 asks for the compiled one.

Everything else about the package is in pyproject.toml; this file only adds the C extensions
that mypyc makes of the modules `proxy/compiled.py` lists. The switch is read for real builds
only (a wheel, `build_ext`), never for an editable install: a compiled module in the source tree
would be imported instead of the `.py` a developer edits.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

from setuptools import setup

SWITCH = "MIXPANEL_PROXY_COMPILE"
BUILD_COMMANDS = {"bdist_wheel", "build", "build_ext"}
HERE = Path(__file__).resolve().parent


def compile_requested() -> bool:
    value = os.environ.get(SWITCH, "")
    if value not in ("", "0", "1"):
        raise SystemExit(f"{SWITCH} must be 1 (compile with mypyc) or 0/unset (pure Python)")
    return value == "1"


def compiled_extensions() -> list[object]:
    # Only the commands that build: pip also runs this file to read metadata, where compiling
    # would only cost time, and for `pip install -e`, where it must not happen at all.
    if not compile_requested() or not BUILD_COMMANDS & set(sys.argv[1:]):
        return []
    from mypyc.build import mypycify

    modules: tuple[str, ...] = runpy.run_path(str(HERE / "proxy" / "compiled.py"))["MODULES"]
    os.chdir(HERE)   # mypyc takes paths relative to the project and reads its [tool.mypy]
    return list(mypycify(list(modules), opt_level="3", group_name="proxy"))


setup(ext_modules=compiled_extensions())
