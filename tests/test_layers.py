"""The package's import graph: no circle between modules, and no import from a lower layer to a higher one.

Every ``import`` / ``from ... import`` of the package's own modules is read with ``ast``: at module
level AND inside functions, methods and ``if`` blocks (an import hidden in a function is still a
dependency; it only runs later). ``from multifeat.x import y`` counts as an import of the module
``multifeat.x.y`` when that is a module, else of ``multifeat.x`` (the package's ``__init__``).
Importing ``multifeat.x.y`` is not counted as importing ``multifeat.x`` (Python runs the parent's
``__init__`` first, but a parent that re-exports its children would otherwise always be a circle).

The layers, lowest first; a module may import its own layer and the ones below it, never above
(:data:`LAYERS` holds the same list):

0. ``multifeat/__init__.py`` (the version), ``errors``
1. ``nets``, ``losses``
2. ``io``, ``data``, ``callbacks``, ``utils``, ``loggers``, ``restore``
3. ``phases``, ``eval``, ``mixing``
4. ``pipeline`` (Method A's orchestrator: build, run, resume a phase; the end-to-end run)
5. ``bench`` (runs Method A through ``pipeline``)
6. ``commands`` (argument parsing and printing; ``multifeat pipeline`` is ``commands/pipeline.py``), ``cli``
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "multifeat"

#: top-level part of the package -> layer (higher imports lower). The root ``multifeat/__init__.py``
#: only holds the version; ``errors`` is imported by everything.
LAYERS: dict[str, int] = {
    "": 0, "errors": 0,
    "nets": 1, "losses": 1,
    # building blocks under the training code: data sets, files and checkpoints, callbacks, helpers;
    # loggers (W&B/CSV set-up) sits beside the callbacks; restore (face restoration with GPEN) is a
    # network wrapper used by the commands, beside io's network loading
    "io": 2, "data": 2, "callbacks": 2, "utils": 2, "loggers": 2, "restore": 2,
    "phases": 3, "eval": 3, "mixing": 3,
    "pipeline": 4,
    "bench": 5,
    "commands": 6, "cli": 6,
}

#: (importer, imported) module pairs allowed to go upward, each with its reason. Keep it small.
ALLOWED_UPWARD: dict[tuple[str, str], str] = {}

#: module circles allowed (as sorted tuples of the modules in the circle), each with its reason.
ALLOWED_CYCLES: dict[tuple[str, ...], str] = {}


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules(root: Path = PACKAGE) -> dict[str, Path]:
    return {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def _resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str:
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([name] if name else []))


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the package modules it imports (anywhere in its code)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for mod, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = _resolve_relative(mod, path.name == "__init__.py", node.level, node.module)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for t in targets:
                if t == "multifeat" or t.startswith("multifeat."):
                    # the longest package module that the dotted name starts with
                    while t not in modules and "." in t:
                        t = t.rsplit(".", 1)[0]
                    if t != mod:
                        graph[mod].add(t)
    return graph


def layer_of(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    if top not in LAYERS:
        raise AssertionError(f"module {module}: its part '{top}' has no layer in tests/test_layers.py LAYERS; add it")
    return LAYERS[top]


def cycles(graph: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[tuple[str, ...]] = []
    counter = [0]
    nodes = set(graph) | {t for ts in graph.values() for t in ts}

    def visit(v: str) -> None:  # recursion depth is bounded by the number of modules (~150)
        index[v] = low[v] = counter[0]
        counter[0] += 1
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
                out.append(tuple(sorted(comp)))

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(_modules())


def test_graph_sees_function_level_and_relative_imports(tmp_path):
    """The reader itself, on a hand-made package: a function-local import makes a circle."""
    pkg = tmp_path / "multifeat"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("from multifeat.data.a import A\n")
    (pkg / "data" / "a.py").write_text("def f():\n    from multifeat.data.b import g\n    return g\nA = 1\n")
    (pkg / "data" / "b.py").write_text("from .a import A\ng = A\n")
    (pkg / "phases.py").write_text("import multifeat.data.b\n")
    g = import_graph(_modules(pkg))
    assert g["multifeat.data.a"] == {"multifeat.data.b"}
    assert g["multifeat.data.b"] == {"multifeat.data.a"}
    assert g["multifeat.phases"] == {"multifeat.data.b"}
    assert g["multifeat.data"] == {"multifeat.data.a"}
    assert cycles(g) == [("multifeat.data.a", "multifeat.data.b")]


def test_no_import_cycles(graph):
    found = [c for c in cycles(graph) if c not in ALLOWED_CYCLES]
    assert not found, "import circles between modules:\n" + "\n".join(
        " <-> ".join(c) + "  (" + "; ".join(f"{a} -> {b}" for a in c for b in sorted(graph[a]) if b in c) + ")"
        for c in found)


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_cycles_between_subpackages(graph):
    """Within a layer too, the parts import each other one way only (e.g. mixing uses phases, so
    phases may not re-export mixing)."""
    parts: dict[str, set[str]] = defaultdict(set)
    for a, ts in graph.items():
        for b in ts:
            if _top(a) != _top(b):
                parts["multifeat." + _top(a)].add("multifeat." + _top(b))
    assert not cycles(parts), f"sub-packages importing each other: {cycles(parts)}"


def test_no_upward_imports(graph):
    bad = sorted((a, b) for a, ts in graph.items() for b in ts
                 if layer_of(a) < layer_of(b) and (a, b) not in ALLOWED_UPWARD)
    assert not bad, "imports from a lower layer to a higher one:\n" + "\n".join(
        f"{a} (layer {layer_of(a)}) -> {b} (layer {layer_of(b)})" for a, b in bad)


def test_allow_lists_hold_only_live_entries(graph):
    """An allowed exception that no longer happens is removed from the list."""
    stale = [pair for pair in ALLOWED_UPWARD if pair[1] not in graph.get(pair[0], set())]
    assert not stale, f"ALLOWED_UPWARD entries that no longer occur: {stale}"
    live = set(cycles(graph))
    assert not [c for c in ALLOWED_CYCLES if c not in live], "ALLOWED_CYCLES entries that no longer occur"


#: modules whose imports all sit at module level (the import graph is readable from their first lines);
#: only optional third-party packages may be imported inside a function there
MODULE_LEVEL_IMPORTS = ("multifeat.pipeline", "multifeat.bench.methods", "multifeat.bench.protocol", "multifeat.bench.report",
                        "multifeat.bench.runner", "multifeat.bench.schema", "multifeat.bench.training",
                        "multifeat.commands.pipeline", "multifeat.commands.bench", "multifeat.utils.config")
#: optional third-party packages: imported where they are used, so that the package works without them
OPTIONAL_PACKAGES = ("wandb", "torch_fidelity", "lpips")
#: cli.py loads each command (and LightningCLI's machinery) only when it is run (documented in cli.py)
LAZY_IN_CLI = ("multifeat.callbacks.interrupt", "multifeat.io.checkpoints", "jsonargparse", "lightning.pytorch",
               "lightning.pytorch.cli")


def function_level_imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) of every import inside a function of ``path``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for sub in ast.walk(node):
                if isinstance(sub, ast.Import):
                    out += [(sub.lineno, a.name) for a in sub.names]
                elif isinstance(sub, ast.ImportFrom):
                    out.append((sub.lineno, "." * sub.level + (sub.module or "")))
    return out


def test_function_level_imports_only_for_optional_packages():
    bad = []
    for mod, path in _modules().items():
        if mod == "multifeat.cli":
            allowed = LAZY_IN_CLI
        elif any(mod == m or mod.startswith(m + ".") for m in MODULE_LEVEL_IMPORTS):
            allowed = ()
        else:
            continue
        bad += [f"{mod}:{line} imports {name} inside a function" for line, name in function_level_imports(path)
                if name.split(".")[0] not in OPTIONAL_PACKAGES and name not in allowed]
    assert not bad, "\n".join(bad)


def test_function_level_import_reader(tmp_path):
    p = tmp_path / "m.py"
    p.write_text("import os\n\ndef f():\n    import wandb\n    from . import x\n    return 1\n\nclass C:\n"
                 "    def g(self):\n        from multifeat.data import guard\n")
    assert function_level_imports(p) == [(4, "wandb"), (5, "."), (10, "multifeat.data")]
