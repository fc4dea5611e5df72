"""The demo's modules form no import circle, and only the scenario knows the steps and their order."""

from __future__ import annotations

import ast
from pathlib import Path

DEMO = Path(__file__).resolve().parents[2] / "services" / "privmesh" / "demo"


def _imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in DEMO.glob("*.py"):
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("privmesh.demo"):
                parts = node.module.split(".")
                deps |= {parts[2]} if len(parts) > 2 else {alias.name for alias in node.names}
        graph[path.stem] = deps
    return graph


def test_no_demo_module_imports_the_scenario() -> None:
    assert [name for name, deps in _imports().items() if "scenario" in deps] == []


def test_the_demo_modules_have_no_import_circle() -> None:
    graph = _imports()
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import circle: {' -> '.join((*path, name))}"
        if name in done:
            return
        for dep in graph.get(name, ()):
            visit(dep, (*path, name))
        done.add(name)

    for name in graph:
        visit(name, ())
