"""The layers of docs/architecture.md, enforced: imports flow one way and never in a circle.

Reads every module's import statements (module level and inside functions; ``if TYPE_CHECKING:``
blocks are annotations, not imports, and are skipped). Importing ``a.b.c`` also runs ``a/__init__``
and ``a/b/__init__``, so those count as edges too (the root package's own lazy ``__init__`` aside).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fedmist"

# Low to high. A module may import its own layer or lower ones; same-layer packages must not form
# a cycle (checked below with every other cycle).
LAYERS: list[tuple[str, ...]] = [
    ("fedmist.errors",),
    ("fedmist.config",),
    ("fedmist.data", "fedmist.models"),
    ("fedmist.training",),
    ("fedmist.defenses",),
    ("fedmist.engine",),
    ("fedmist.runs",),
    ("fedmist.attacks",),
    ("fedmist.audit", "fedmist.flower", "fedmist.deploy"),
    ("fedmist.studies",),
    ("fedmist.report",),
    ("fedmist.cli",),
    ("fedmist", "fedmist.__main__"),
]


def layer_of(module: str) -> int:
    best, level = -1, -1
    for i, names in enumerate(LAYERS):
        for name in names:
            inside = module == name or (name != "fedmist" and module.startswith(name + "."))
            if inside and len(name) > best:
                best, level = len(name), i
    if level < 0:
        raise AssertionError(f"{module} belongs to no layer: add its package to LAYERS and docs/architecture.md")
    return level


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_ids(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    return skip


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """fedmist modules (and their parent packages) that importing ``path`` runs."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    skip = _type_checking_ids(tree)
    targets: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = package.split(".")
                base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
            targets.add(base)
            targets.update(f"{base}.{a.name}" for a in node.names)
    out: set[str] = set()
    for t in targets:
        if not t.startswith("fedmist"):
            continue
        while t and t not in modules:  # "from pkg import name": name is an attribute, not a module
            t = t.rsplit(".", 1)[0] if "." in t else ""
        parts = t.split(".")
        # its parent packages run first, except the root and this module's own ancestors (which are
        # already running: a package's __init__ re-exporting its children is not a cycle)
        out.update(p for p in (".".join(parts[:i]) for i in range(2, len(parts) + 1))
                   if not name.startswith(p + "."))
    out.discard(name)
    return out


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imported_modules(p, modules) for p in paths}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_cycle() -> None:
    assert cycles(import_graph()) == []


def test_no_module_imports_a_higher_layer() -> None:
    upward = sorted(f"{m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)})"
                    for m, targets in import_graph().items() for t in targets if layer_of(t) > layer_of(m))
    assert upward == []


def test_the_engine_imports_no_defense() -> None:
    """The defense is looked up where a run starts and in the ClientApp, then handed to the engine."""
    graph = import_graph()
    engine = {m: t for m, t in graph.items() if m.startswith("fedmist.engine")}
    assert engine and all(not x.startswith("fedmist.defenses") for t in engine.values() for x in t)


def test_the_top_level_holds_at_most_four_modules() -> None:
    assert len([p for p in PACKAGE.glob("*.py")]) <= 4


def test_the_checker_sees_an_upward_import_and_a_cycle(tmp_path: Path) -> None:
    """The two rules are not vacuous: a config importing the engine breaks both."""
    graph = import_graph()
    graph["fedmist.config"] = graph["fedmist.config"] | {"fedmist.engine.loop"}
    assert any("fedmist.config" in c for c in cycles(graph))
    assert layer_of("fedmist.engine.loop") > layer_of("fedmist.config")
    with pytest.raises(AssertionError, match="belongs to no layer"):
        layer_of("fedmist.unplaced.module")
