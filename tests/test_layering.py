"""Imports go one way (``shared/ARCHITECTURE.md``): kernels import nothing of mtvision; models
know nothing of data files, training or tools; metrics know nothing of models; balancing sees
tensors (the collectives through the leaf module ``mtvision.collectives``), never ``engine``;
and no two modules import each other, directly or around a loop, not even inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "kernels":
        parts = ["mtvision", *parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    files = [*(ROOT / "mtvision").rglob("*.py"), *(ROOT / "kernels").rglob("*.py")]
    modules = {_module(f): f for f in files}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, *([base] if base else [])])
                targets = [base, *(f"{base}.{a.name}" for a in node.names)]
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t != name and not name.startswith(t + "."):
                    graph[name].add(t)
    return graph


def _imports(graph: dict[str, set[str]], prefix: str) -> set[tuple[str, str]]:
    return {(m, t) for m, ts in graph.items() if m.startswith(prefix) for t in ts}


def test_kernels_import_nothing_of_mtvision():
    graph = import_graph()
    assert "mtvision.kernels.cross_entropy" in graph
    bad = {(m, t) for m, t in _imports(graph, "mtvision.kernels")
           if not t.startswith("mtvision.kernels")}
    assert not bad, bad


def test_lower_layers_do_not_reach_up():
    graph = import_graph()
    rules = {"mtvision.balancing": ("mtvision.engine", "mtvision.models", "mtvision.data"),
             "mtvision.models": ("mtvision.engine", "mtvision.data", "mtvision.commands",
                                 "mtvision.inference"),
             "mtvision.metrics": ("mtvision.models", "mtvision.engine")}
    bad = sorted((m, t) for prefix, banned in rules.items() for m, t in _imports(graph, prefix)
                 if t.startswith(banned))
    assert not bad, bad


def test_no_import_cycles():
    graph = import_graph()
    # Tarjan's strongly connected components: any with two modules or more is a cycle.
    index, low, stack, on, cycles = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, cycles
