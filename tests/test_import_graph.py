"""The package's layers, read from the source: imports only point down, and there is no cycle.

Every ``import`` of a ``bridge`` module counts, at module level or inside a function: a
function-level import is a lazy import of a heavy dependency (torch, mpi4py), never a way to
dodge a cycle. Pure (no import of the package), so it runs in milliseconds.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bridge"

# bottom to top; a module may import from its own layer's package and from any layer below
LAYERS: tuple[tuple[str, ...], ...] = (
    ("bridge", "bridge.wire", "bridge.paths"),
    ("bridge.domain",),
    ("bridge.config",),
    ("bridge.closures",),
    ("bridge.registry",),
    ("bridge.protocol",),
    ("bridge.transport",),
    ("bridge.server",),
    ("bridge.launch",),
    ("bridge.bench", "bridge.plots", "bridge.cli"),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The ``bridge`` modules ``path`` imports (``from bridge.x import y`` counts ``bridge.x.y``
    when that is a module, else ``bridge.x``)."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            names = [n if n in known else node.module for n in names]
        else:
            continue
        found.update(n for n in names if n == "bridge" or n.startswith("bridge."))
    return found


def import_graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(f) for f in files}
    return {module_name(f): imported_modules(f, known) - {module_name(f)} for f in files}


def layer_of(module: str) -> int:
    best, level = -1, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, level = len(prefix), index
    return level


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if state.get(nxt) is None and (cycle := visit(nxt)) is not None:
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if state.get(node) is None and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_the_graph_is_read() -> None:
    graph = import_graph()
    assert "bridge.server.engine" in graph and "bridge.launch.launcher" in graph
    assert "bridge.domain.plan" in graph["bridge.server.engine"]


def test_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_cycle_finder_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_every_module_has_a_layer() -> None:
    missing = [m for m in import_graph() if layer_of(m) < 0]
    assert not missing, f"modules outside LAYERS: {missing}"


def test_imports_point_down() -> None:
    upward = [
        f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
        for module, targets in import_graph().items()
        for target in sorted(targets)
        if target != "bridge" and layer_of(target) > layer_of(module)
    ]
    assert not upward, "\n".join(upward)


@pytest.mark.parametrize("science", ["mlbridge_models", "models"])
def test_the_bridge_imports_no_science(science: str) -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == science or n.startswith(science + ".") for n in names):
                offenders.append(f"{module_name(path)}:{node.lineno}")
    assert not offenders, f"bridge imports {science}: {offenders}"


def science_graph() -> dict[str, set[str]]:
    """The import graph of ``mlbridge_models`` (the ``models/`` folder), function level included."""
    root = PACKAGE.parent / "models"
    graph: dict[str, set[str]] = {}
    files = sorted(root.rglob("*.py"))
    names = {}
    for f in files:
        parts = ("mlbridge_models", *f.relative_to(root).with_suffix("").parts)
        names[f] = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    known = set(names.values())
    for f, name in names.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    found.add(full if full in known else node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = {m for m in found if m in known and m != name}
    return graph


def test_no_import_cycle_in_the_science() -> None:
    graph = science_graph()
    assert "mlbridge_models.bias.twin" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
