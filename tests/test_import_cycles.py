"""No import cycles among archiveflow's own modules, lazy imports inside functions included.

Every module of the installed packages is parsed (not imported); each `import` and
`from … import` naming an archiveflow module is an edge, wherever it stands in the file.
A strongly connected component of more than one module (or a module importing itself) is a
cycle. Also: nothing under archiveflow.flows imports archiveflow.deployments (deployments
build on flows, not the other way round).
"""

from __future__ import annotations

import ast
import importlib.util
import pkgutil
from pathlib import Path

import archiveflow

PACKAGES = ("archiveflow", "archiveflow.cli", "archiveflow.flows", "archiveflow.tasks",
            "archiveflow.store", "archiveflow.deployments")


def _modules() -> dict[str, Path]:
    """Every archiveflow module and its source file, found without importing it."""
    out: dict[str, Path] = {}
    for pkg in PACKAGES:
        spec = importlib.util.find_spec(pkg)
        assert spec is not None and spec.origin is not None, pkg
        out[pkg] = Path(spec.origin)
        for info in pkgutil.iter_modules(spec.submodule_search_locations or []):
            name = f"{pkg}.{info.name}"
            if info.ispkg or name in out:
                continue  # subpackages are listed in PACKAGES (plugins is data, not code)
            sub = importlib.util.find_spec(name)
            if sub is not None and sub.origin and sub.origin.endswith(".py"):
                out[name] = Path(sub.origin)
    return out


def _resolve(module: str, package: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return module
    base = package.split(".")
    base = base[: len(base) - node.level + 1]
    return ".".join([*base, module] if module else base)


def _edges(name: str, path: Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(node.module or "", package, node)
            subs = {f"{target}.{a.name}" for a in node.names} & known
            out.update(subs)
            if target in known and len(subs) < len(node.names):
                out.add(target)  # names from the module itself, not only its submodules
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {name: _edges(name, path, known) for name, path in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one node, or with a self-edge."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
            if len(comp) > 1 or v in graph[v]:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_covers_the_packages() -> None:
    graph = _graph()
    assert {"archiveflow.flows.crawl", "archiveflow.tasks.snapshots", "archiveflow.store.db",
            "archiveflow.cli.app", "archiveflow.deployments.crawls"} <= set(graph)
    # a lazy import inside a function is an edge too
    assert "archiveflow.flows.crawl" in graph["archiveflow.cli.crawl"]


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"a"}}) == [["a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


# Cycles in modules outside the pipeline's, both through a lazy import; each goes when its
# module's owner breaks it (a new cycle fails the test at once).
KNOWN: tuple[list[str], ...] = (
)


def test_no_import_cycles() -> None:
    cycles = [c for c in _cycles(_graph()) if c not in KNOWN]
    assert not cycles, "import cycles among archiveflow modules: " + "; ".join(
        " <-> ".join(c) for c in cycles)


def test_flows_do_not_import_deployments() -> None:
    graph = _graph()
    bad = {(m, t) for m, targets in graph.items() if m.startswith("archiveflow.flows")
           for t in targets if t.startswith("archiveflow.deployments")}
    assert not bad, f"flows import deployments: {sorted(bad)}"


def test_archiveflow_is_the_package_parsed() -> None:
    assert Path(archiveflow.__file__).name == "__init__.py"
