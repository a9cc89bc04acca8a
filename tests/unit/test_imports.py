"""The server's import graph: every server module imports on its own, in a fresh interpreter, and
no module of the server side (server, protocol, scaling, observability) reaches itself again through
its imports. Type-checking-only imports count: a cycle there is still two modules that cannot be
understood, or changed, apart."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import clarion

PACKAGE = Path(clarion.__file__).resolve().parent
SERVER_MODULES = sorted(f"clarion.server.{path.stem}" for path in (PACKAGE / "server").glob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}
SERVER_SIDE = ("clarion.server", "clarion.protocol", "clarion.scaling", "clarion.observability")


def top_level_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Imports run (or type-checked) when the module is: at module level, in ``if`` (such as
    ``if TYPE_CHECKING:``) and ``try`` blocks, but not inside functions, which import when called."""
    stack: list[ast.stmt] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If | ast.Try):
            stack.extend(node.body + node.orelse)
            if isinstance(node, ast.Try):
                stack.extend(node.finalbody)
                for handler in node.handlers:
                    stack.extend(handler.body)


def imported_modules(name: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in top_level_imports(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, *([base] if base else [])])
        # ``from package import module`` is an import of that module (its package's __init__ runs
        # first, as for any submodule, which is no dependency on it); anything else, of ``base``.
        submodules = {f"{base}.{alias.name}" for alias in node.names} & MODULES.keys()
        found.update(submodules or {base})
    return {module for module in found if module in MODULES and module != name}


def graph() -> dict[str, set[str]]:
    """Each server-side module and the server-side modules it imports."""
    side = {name: path for name, path in MODULES.items() if name.startswith(SERVER_SIDE)}
    return {name: imported_modules(name, path) & side.keys() for name, path in side.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_import_walk_sees_type_checking_imports_and_finds_a_planted_cycle() -> None:
    edges = graph()
    assert "clarion.server.hub" in edges["clarion.server.node"]
    assert "clarion.server.fanout" in edges["clarion.server.hub"]
    planted = {**edges, "clarion.server.fanout": edges["clarion.server.fanout"] | {"clarion.server.node"}}
    assert any("clarion.server.node" in cycle and "clarion.server.hub" in cycle for cycle in cycles(planted))


def test_no_server_side_module_imports_itself_through_others() -> None:
    assert cycles(graph()) == []


@pytest.mark.parametrize("module", SERVER_MODULES)
def test_each_server_module_imports_on_its_own(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
