"""The import graph of bpnet/, components/ and pipelines/, read from the source with ``ast`` (every
import statement, function-level ones included, since a lazy import still is a dependency):
acyclic between modules and between subpackages, and the library never reaches up into the
KFP layers. A lazy import can hide a cycle from Python; it cannot hide it from this test."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOP_PACKAGES = ("bpnet", "components", "pipelines")
Graph = dict[str, set[str]]


def module_files(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under the packages (``__init__`` is the package)."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imported_modules(tree: ast.AST, module: str, is_package: bool, known: Iterable[str]) -> set[str]:
    """The modules of ``known`` that an import statement anywhere in ``tree`` loads: ``import a.b``
    -> ``a.b``; ``from a import b`` -> ``a.b`` if that is a module, else ``a``; relative imports
    resolved against ``module``."""
    known = set(known)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                anchor = parts[: len(parts) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, *([base] if base else [])])
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names)
    return (found & known) - {module}


def import_graph(root: Path, packages: Iterable[str] = TOP_PACKAGES) -> Graph:
    """Module -> the project modules it imports."""
    files = module_files(root, packages)
    return {module: imported_modules(ast.parse(path.read_text(), str(path)), module, path.name == "__init__.py",
                                     files)
            for module, path in files.items()}


def group_of(module: str, packages: set[str]) -> str:
    """The innermost subpackage holding ``module`` below a top package (``bpnet.infer.predict`` ->
    ``bpnet.infer``); a module directly in a top package is a group of its own (``bpnet.storage``)."""
    parts = module.split(".")
    if len(parts) > 2 and ".".join(parts[:2]) in packages:
        return ".".join(parts[:2])
    return module


def group_graph(graph: Mapping[str, set[str]]) -> Graph:
    packages = {m for m in graph if any(o.startswith(f"{m}.") for o in graph)}
    groups: Graph = {}
    for module, targets in graph.items():
        source = group_of(module, packages)
        groups.setdefault(source, set()).update(group_of(t, packages) for t in targets)
    return {g: t - {g} for g, t in groups.items()}


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One cycle as a path ``[a, b, ..., a]``, or None if the graph is acyclic (iterative DFS)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph.get(start, ())))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


@pytest.fixture(scope="module")
def graph() -> Graph:
    return import_graph(REPO)


def test_the_graph_sees_function_level_imports(graph):
    # bpnet.release imports bpnet.deploy.triton inside functions only (_write_triton, _write_deepstream)
    assert "bpnet.deploy.triton" in graph["bpnet.release"]
    assert "bpnet.model.exported" in graph["bpnet.infer.predict"]
    assert len(graph) > 60


def test_modules_import_each_other_without_cycles(graph):
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_subpackages_import_each_other_without_cycles(graph):
    groups = group_graph(graph)
    assert {"bpnet.infer", "bpnet.deploy", "bpnet.model", "bpnet.storage", "components.runtime"} <= set(groups)
    assert find_cycle(groups) is None, " -> ".join(find_cycle(groups))


@pytest.mark.parametrize("layer, above", [("bpnet", ("components", "pipelines")), ("components", ("pipelines",))])
def test_no_layer_imports_the_layers_above_it(graph, layer, above):
    """pipelines -> components -> bpnet: the library never imports the KFP layers."""
    upward = sorted(f"{m} -> {t}" for m, targets in graph.items() if m.split(".")[0] == layer
                    for t in targets if t.split(".")[0] in above)
    assert upward == []


def test_the_kfp_layers_call_the_steps_never_the_cli(graph):
    """Components and pipelines call ``bpnet.steps`` (typed), not the command line."""
    assert sorted(m for m, targets in graph.items() if m.split(".")[0] in ("components", "pipelines")
                  and "bpnet.cli" in targets) == []


def test_the_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c", "d"}, "c": set(), "d": {"b"}}) == ["b", "d", "b"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a", "c"}}) is None
    assert find_cycle({"x": {"x"}}) == ["x", "x"]


def test_a_cycle_hidden_in_a_lazy_import_is_found(tmp_path):
    """A planted package: ``a`` imports ``b`` at the top, ``b`` imports ``a`` inside a function."""
    pkg = tmp_path / "fake" / "sub"
    pkg.mkdir(parents=True)
    (tmp_path / "fake" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from fake.sub import b\n")
    (pkg / "b.py").write_text("def late():\n    from . import a\n    return a\n")
    (tmp_path / "fake" / "c.py").write_text("import fake.sub.a\n")
    planted = import_graph(tmp_path, ["fake"])
    assert planted["fake.sub.a"] == {"fake.sub.b"} and planted["fake.sub.b"] == {"fake.sub.a"}
    assert find_cycle(planted) == ["fake.sub.a", "fake.sub.b", "fake.sub.a"]
    assert group_graph(planted) == {"fake": set(), "fake.sub": set(), "fake.c": {"fake.sub"}}
