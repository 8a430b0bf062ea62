"""The package's shape: no import cycle between modules, no module past the size a reader takes in
at once, and the folders the README's layout names. Read from the source (ast), nothing run."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "proxy"
MAX_LINES = 400


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node but those under `if TYPE_CHECKING:`, which only the type checker imports."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            kept: list[ast.AST] = list(node.orelse)
        else:
            kept = [node]
        for each in kept:
            yield each
            yield from runtime_nodes(each)


def imported(name: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """Modules of the package that `name` imports when it runs, at its top level or inside
    functions."""
    is_package = path.name == "__init__.py"
    for node in runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [target, *(f"{target}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        yield from (each for each in candidates if each in known and each != name)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the chain of modules that closes it, or None."""
    state: dict[str, int] = {}      # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def test_no_module_imports_itself_back() -> None:
    known = modules()
    graph = {name: set(imported(name, path, known)) for name, path in known.items()}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_type_only_imports_are_not_runtime_imports() -> None:
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import a\n"
                     "else:\n    import b\nimport c\n")
    names = {alias.name for node in runtime_nodes(tree) if isinstance(node, ast.Import)
             for alias in node.names}
    assert names == {"b", "c"}


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_is_longer_than_a_reader_takes_in() -> None:
    long = {name: lines for name, path in modules().items()
            if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_the_top_level_reads_as_the_data_path() -> None:
    # compiled extensions (.ci/compiled-suite runs the suite over the compiled wheel) are builds
    # of the modules listed here, not modules of their own
    top = {path.name for path in PACKAGE.iterdir() if not path.name.startswith("__pycache__")
           and not path.name.endswith(tuple(EXTENSION_SUFFIXES))}
    assert top == {"__init__.py", "__main__.py", "cli.py", "app.py", "endpoints.py", "compiled.py",
                   "server", "relay", "decide", "codec", "upstream", "spool", "assets", "ops",
                   "config"}
