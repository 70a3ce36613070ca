"""The layout's rules, checked from the source: no import circle, arrows only downward, short files.

Imports are read with `ast` from every module of `nbagent`, `nbagent_train` and the environments, at any
depth (a lazy import inside a function is still an arrow). ``from a.b import c`` is an arrow to ``a.b.c``
when that is a module, else to ``a.b``; packages' ``__init__`` files count as modules of their own.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "nbagent": ROOT / "nbagent",
    "nbagent_train": ROOT / "nbagent_train",
    "nbagent_environments": ROOT / "environments",
}
MAX_LINES = 400
# Data generators and recorded task templates: long by nature, not by design.
LONG_BY_NATURE = {"environments/qa/data/make_demo.py"}

# The layers of docs/architecture.md: what each part of nbagent may import of the others (the root
# package, nbagent/__init__.py, is the public face and resolves names lazily).
_BASE = ("nbagent.errors", "nbagent.trajectory")
ALLOWED: dict[str, tuple[str, ...]] = {
    "nbagent.errors": (),
    "nbagent.output_files": ("nbagent.errors",),
    "nbagent.trajectory": ("nbagent.errors",),
    "nbagent.kernel": _BASE,
    "nbagent.tools": (*_BASE, "nbagent.kernel"),
    "nbagent.models": _BASE,
    "nbagent.agent": (*_BASE, "nbagent.output_files", "nbagent.kernel", "nbagent.tools", "nbagent.models"),
    "nbagent.environments": (*_BASE, "nbagent.kernel", "nbagent.tools"),
    "nbagent.rollout": (
        *_BASE,
        "nbagent.output_files",
        "nbagent.kernel",
        "nbagent.tools",
        "nbagent.models",
        "nbagent.agent",
        "nbagent.environments",
    ),
    "nbagent.view": _BASE,
    "nbagent.cli": (
        *_BASE,
        "nbagent.view",
        "nbagent.output_files",
        "nbagent.kernel",
        "nbagent.tools",
        "nbagent.models",
        "nbagent.agent",
        "nbagent.environments",
        "nbagent.rollout",
    ),
}
NEVER = {"nbagent": ("nbagent_train", "nbagent_environments"), "nbagent_environments": ("nbagent_train",)}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[str]:
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                yield f"{target}.{alias.name}" if f"{target}.{alias.name}" in MODULES else target


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        graph[name] = {target for target in _imports(name, path) if target in MODULES and target != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_the_scan_sees_the_packages() -> None:
    graph = _graph()
    assert len(graph) > 50
    assert "nbagent.trajectory" in graph["nbagent.agent.agent"] or any(
        _under(t, "nbagent.trajectory") for t in graph["nbagent.agent.agent"]
    )


def test_no_import_circle() -> None:
    assert _cycles(_graph()) == []


def test_cycle_finder_finds_a_circle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _layer(module: str) -> str | None:
    return next((layer for layer in ALLOWED if _under(module, layer)), None)


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_arrows_point_down(layer: str) -> None:
    wrong = [
        f"{module} -> {target}"
        for module, targets in _graph().items()
        if _layer(module) == layer
        for target in targets
        if (other := _layer(target)) not in (None, layer) and other not in ALLOWED[layer]
    ]
    assert wrong == []


@pytest.mark.parametrize("package", sorted(NEVER))
def test_the_sdk_and_the_task_sets_never_import_the_trainer(package: str) -> None:
    wrong = [
        f"{module} -> {target}"
        for module, targets in _graph().items()
        if _under(module, package)
        for target in targets
        if any(_under(target, banned) for banned in NEVER[package])
    ]
    assert wrong == []


def test_every_nbagent_module_has_a_layer() -> None:
    unplaced = [m for m in MODULES if _under(m, "nbagent") and m != "nbagent" and _layer(m) is None]
    assert unplaced == []


def test_no_long_source_file() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in MODULES.values()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
        and str(path.relative_to(ROOT)) not in LONG_BY_NATURE
    }
    assert long == {}


def test_the_trainer_uses_only_public_names_of_nbagent() -> None:
    private = [
        f"{name}: {node.module}.{alias.name}"
        for name, path in MODULES.items()
        if name.startswith(("nbagent_train", "nbagent_environments"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "nbagent"
        for alias in node.names
        if alias.name.startswith("_") or any(part.startswith("_") for part in (node.module or "").split("."))
    ]
    assert private == []
