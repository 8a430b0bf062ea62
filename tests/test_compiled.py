"""The compiled build's switch and checks (proxy/compiled.py, setup.py, buildsys/): the package
knows which build runs; the Docker image's self-check fails on a pure build; the default and the
editable builds never compile, only MIXPANEL_PROXY_COMPILE=1 does. That the compiled build passes
the suite is .ci/compiled-suite's job (this file runs in both builds)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from proxy.compiled import MODULES, compiled_modules, main, module_name
from tests.support.processes import REPO

COMPILED_RUN = os.environ.get("MIXPANEL_PROXY_EXPECT_COMPILED") == "1"


def test_the_self_check_fails_unless_every_module_is_compiled(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--require"]) == (0 if COMPILED_RUN else 1)
    out = capsys.readouterr().out
    assert f"{len(MODULES) if COMPILED_RUN else 0} of {len(MODULES)} modules compiled" in out
    assert all(module_name(path) in out for path in MODULES)
    assert main([]) == 0            # without --require it only reports


def test_listed_modules_exist_and_the_list_is_never_compiled() -> None:
    assert all((REPO / path).is_file() for path in MODULES)
    # setup.py reads the list from proxy/compiled.py before anything is built
    assert "proxy/compiled.py" not in MODULES
    assert set(compiled_modules()) == {module_name(path) for path in MODULES}


def _project_copy(tmp_path: Path) -> Path:
    """What a build sees: the files the Docker image's build stage copies."""
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md", "setup.py"):
        shutil.copy(REPO / name, tree / name)
    for folder in ("buildsys", "proxy"):
        shutil.copytree(REPO / folder, tree / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    return tree


def _backend(tree: Path, call: str, compile_switch: str | None) -> str:
    """One hook of the in-tree build backend, run the way pip runs it (in the project dir)."""
    env = {key: value for key, value in os.environ.items() if key != "MIXPANEL_PROXY_COMPILE"}
    if compile_switch is not None:
        env["MIXPANEL_PROXY_COMPILE"] = compile_switch
    script = f"import json, sys; sys.path.insert(0, 'buildsys'); import mixpanel_build as b; " \
             f"print(json.dumps(b.{call}))"
    result = subprocess.run([sys.executable, "-c", script], cwd=tree, env=env, text=True,
                            capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.splitlines()[-1]


@pytest.mark.slow
def test_only_the_switch_asks_the_build_for_mypy(tmp_path: Path) -> None:
    tree = _project_copy(tmp_path)
    plain = json.loads(_backend(tree, "get_requires_for_build_wheel()", None))
    assert not any(requirement.startswith("mypy") for requirement in plain)
    compiled = json.loads(_backend(tree, "get_requires_for_build_wheel()", "1"))
    assert "mypy>=1.10" in compiled
    assert any(requirement.startswith("aiohttp") for requirement in compiled)   # types seen


@pytest.mark.slow
def test_an_editable_install_never_compiles(tmp_path: Path) -> None:
    """pip install -e with the switch on: no extension in the wheel nor in the source tree,
    where it would be imported instead of the .py being edited."""
    tree, out = _project_copy(tmp_path), tmp_path / "out"
    out.mkdir()
    wheel = json.loads(_backend(tree, f"build_editable({str(out)!r})", "1"))
    names = zipfile.ZipFile(out / wheel).namelist()
    assert not [name for name in names if name.endswith(".so")], names
    assert not list(tree.rglob("*.so"))


@pytest.mark.slow
def test_a_bad_switch_value_is_refused(tmp_path: Path) -> None:
    tree = _project_copy(tmp_path)
    env = {**os.environ, "MIXPANEL_PROXY_COMPILE": "yes"}
    result = subprocess.run([sys.executable, "setup.py", "build_ext"], cwd=tree, env=env,
                            text=True, capture_output=True, timeout=120)
    assert result.returncode != 0
    assert "MIXPANEL_PROXY_COMPILE must be 1" in result.stderr
