"""The build backend: setuptools' own, plus what the compiled build needs to build.

With MIXPANEL_PROXY_COMPILE=1 (see setup.py) a wheel build needs mypy and, so that mypy sees the
real types the compiled code is built against, the project's dependencies. Without the switch,
and for editable installs, the requirements are setuptools' alone: `pip install .` works with no
C compiler.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403  (every hook not changed here)

SWITCH = "MIXPANEL_PROXY_COMPILE"
# types-cachetools: the compiled modules' imports are type-checked the way `mypy --strict` is.
COMPILE_REQUIRES = ["mypy>=1.10", "types-cachetools"]


def _project_dependencies() -> list[str]:
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    dependencies: list[str] = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    return dependencies


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    requires: list[str] = _setuptools.get_requires_for_build_wheel(config_settings)
    if os.environ.get(SWITCH) == "1":
        requires += COMPILE_REQUIRES + _project_dependencies()
    return requires
