"""The architecture as a test: which package may import which (read from the source, nothing is imported)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"edgenas": ROOT / "edgenas", "edgenas.search": ROOT / "search", "edgenas.compile": ROOT / "compile",
            "edgenas.runtime": ROOT / "runtime"}


def modules() -> dict[str, Path]:
    """Every module of the four packages by its dotted name."""
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            found[".".join((package, *parts))] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, (ast.Name, ast.Attribute)) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(path: Path, top_level_only: bool = False) -> set[str]:
    """The modules one file imports: all of them, or only those run at import time (no function bodies,
    no `if TYPE_CHECKING:`)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if top_level_only and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if top_level_only and isinstance(child, ast.If) and _is_type_checking(child):
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.add(child.module)
                found.update(f"{child.module}.{alias.name}" for alias in child.names)
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


MODULES = modules()


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _within(m, "edgenas.runtime")))
def test_runtime_imports_neither_search_nor_compile(module: str) -> None:
    bad = sorted(n for n in imports(MODULES[module]) if _within(n, "edgenas.search") or _within(n, "edgenas.compile"))
    assert not bad, f"{module} imports {bad}: runtime/ ships to the device alone"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _within(m, "edgenas.compile")))
def test_compile_never_imports_optuna(module: str) -> None:
    assert not [n for n in imports(MODULES[module]) if _within(n, "optuna")], f"{module} imports optuna"


@pytest.mark.parametrize("module", ["edgenas.config", "edgenas.types", "edgenas.errors", "edgenas.recipe"])
def test_the_shared_types_never_import_search(module: str) -> None:
    assert not [n for n in imports(MODULES[module]) if _within(n, "edgenas.search")], f"{module} imports search/"


def test_no_import_cycles() -> None:
    """Among the imports run at import time: a cycle makes a module's import order matter."""
    graph = {m: {n for n in imports(p, top_level_only=True) if n in MODULES and n != m} for m, p in MODULES.items()}
    done: set[str] = set()

    def walk(module: str, stack: list[str]) -> None:
        if module in stack:
            pytest.fail("import cycle: " + " -> ".join(stack[stack.index(module):] + [module]))
        if module in done:
            return
        for name in sorted(graph[module]):
            walk(name, stack + [module])
        done.add(module)

    for module in sorted(graph):
        walk(module, [])


def test_the_reader_finds_every_package() -> None:
    assert {"edgenas.search.training.loop", "edgenas.compile.api", "edgenas.runtime.measure", "edgenas.cli"} <= set(MODULES)
