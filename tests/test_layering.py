"""The package's layering: no import cycle, and the diffusion core imports without RecBole."""

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

import recbole_diffrec

PACKAGE = Path(recbole_diffrec.__file__).parent
NAME = "recbole_diffrec"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: Set[str]) -> Set[str]:
    """Package modules ``path`` imports, at any depth (function-level imports count too:
    hiding an import inside a function does not remove the dependency)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in modules)
    found.discard(name)
    return found


def import_graph() -> Dict[str, Set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imported_modules(p, modules) for p in paths}


def find_cycle(graph: Dict[str, Set[str]]) -> List[str]:
    """One cycle as a list of modules (first == last), or [] if the graph has none."""
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    path: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return []


def package_edges(graph: Dict[str, Set[str]]) -> Dict[str, Set[str]]:
    """The graph without edges to a package ``__init__`` from inside that package (a
    submodule's ``from . import x`` names the package, not a dependency on its init)."""
    packages = {m for m in graph if (PACKAGE.parent / m.replace(".", "/")).is_dir()}
    return {
        m: {t for t in deps if not (t in packages and m.startswith(t + "."))}
        for m, deps in graph.items()
    }


def test_cycle_finder_finds_a_cycle_and_accepts_a_dag():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_relative_imports_resolve_to_package_modules():
    graph = import_graph()
    assert f"{NAME}.registry" in graph[f"{NAME}.config"]
    assert f"{NAME}.diffusion" in graph[f"{NAME}.models.diffrec"]


def test_no_import_cycle_among_package_modules():
    cycle = find_cycle(package_edges(import_graph()))
    assert cycle == [], "import cycle: " + " -> ".join(cycle)


def test_models_and_diffusion_do_not_import_the_glue():
    graph = package_edges(import_graph())
    glue = {
        f"{NAME}.{m}"
        for m in (
            "config",
            "registry",
            "trainer",
            "clustering",
            "pipeline",
            "quick_start",
        )
    }
    for module, deps in graph.items():
        if module.startswith((f"{NAME}.models", f"{NAME}.diffusion")):
            assert not deps & glue, f"{module} imports {sorted(deps & glue)}"
        if module.startswith(f"{NAME}.diffusion"):
            outside = {d for d in deps if not d.startswith(f"{NAME}.diffusion")}
            assert not outside, f"{module} imports {sorted(outside)}"


def test_diffusion_core_imports_without_recbole():
    code = (
        "import recbole_diffrec.diffusion, sys; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'recbole'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
