"""Code versions: the hash of the code a suite run depends on, recorded in every result
so that one computed by other code is known as such (``runner``: stale results).

A section's hash covers ``recbole_diffrec`` (sources and default yaml), the workers'
shared helpers (``SHARED_WORKER_CODE``) and the section's module down to its report
marker; a section hashed by model covers only the package files that model runs
(:func:`model_scoped_files`), so editing one model leaves the others' results current.
``benchmarks.oldcode`` computes the same hashes at any commit from :func:`parts_hash`.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import os
import re
import sys
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Set, Tuple

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "recbole_diffrec"
# Helpers every worker uses: part of every section's code hash.
SHARED_WORKER_CODE = (ROOT / "benchmarks" / "training.py",)
# In a section module, the line that starts its report code (not part of the code hash).
REPORT_MARKER = re.compile(r"(?m)^# -+ report\b.*$")


def package_files() -> List[Path]:
    """The plugin's sources and its default yaml (both change what a run computes)."""
    return sorted(
        p
        for p in PACKAGE.rglob("*")
        if p.suffix in (".py", ".yaml") and "__pycache__" not in p.parts
    )


# The files of one model: its module in models/ and what it imports there, and its yaml.
MODELS_DIR = "recbole_diffrec/models/"
MODEL_YAML_DIR = "recbole_diffrec/properties/model/"
MODEL_REGISTRY = "recbole_diffrec/registry.py"
# Mixed into a model-scoped hash, so that it never equals a whole-package one.
MODEL_SCOPED = "code hash scoped by model"


def package_imports(path: str, source: bytes, names: Set[str]) -> Set[str]:
    """The files of ``names`` (root-relative paths) that the module at ``path`` imports,
    anywhere in its body (relative and absolute imports)."""

    def file_of(dotted: str) -> Optional[str]:
        base = dotted.replace(".", "/")
        return next(
            (f for f in (f"{base}.py", f"{base}/__init__.py") if f in names), None
        )

    package = path.rsplit("/", 1)[0].split("/")
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            parts = package[: len(package) - node.level + 1] if node.level else []
            base = ".".join(parts + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(f for f in map(file_of, targets) if f is not None)
    return found


def model_scoped_files(sources: Mapping[str, bytes], model: Optional[str]) -> List[str]:
    """Of the package files ``sources`` (root-relative path -> content), those a run of
    ``model`` depends on: everything outside ``models/`` and the model yaml, the files of
    ``models/`` that the rest of the package imports (checks, say), and the model's own:
    its module (found through the registry's imports), what that imports within
    ``models/``, and the yaml of the classes defined there or named in them. A RecBole
    model (or None) gets no plugin model's files. So editing one model's module leaves
    the other models' results current, while a change to shared code (the diffusion
    core, the trainer, the registry) still reaches all of them."""
    names = set(sources)
    imports = {
        p: package_imports(p, sources[p], names) for p in names if p.endswith(".py")
    }

    def in_models(path: str) -> bool:
        return path.startswith(MODELS_DIR) and not path.endswith("/__init__.py")

    def within_models(starts: Iterable[str]) -> Set[str]:
        seen, todo = set(), [p for p in starts if in_models(p)]
        while todo:
            path = todo.pop()
            if path not in seen:
                seen.add(path)
                todo.extend(p for p in imports.get(path, ()) if in_models(p))
        return seen

    outside = [
        p for p in names if not in_models(p) and not p.startswith(MODEL_YAML_DIR)
    ]
    shared = within_models(
        q
        for p in outside
        if p.endswith(".py") and p != MODEL_REGISTRY
        for q in imports[p]
    )
    own: Set[str] = set()
    if model and MODEL_REGISTRY in names:
        for node in ast.walk(ast.parse(sources[MODEL_REGISTRY])):
            if isinstance(node, ast.ImportFrom) and model in (
                a.asname or a.name for a in node.names
            ):
                line = ast.unparse(node).encode()  # "from .models.x import Model"
                own = within_models(package_imports(MODEL_REGISTRY, line, names))
    yaml_names = set()
    for path in own:
        tree = ast.parse(sources[path])
        yaml_names.update(
            f"{n.name}.yaml" for n in ast.walk(tree) if isinstance(n, ast.ClassDef)
        )
        yaml_names.update(
            n.value
            for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str)
        )
    yaml = {p for p in names if p.startswith(MODEL_YAML_DIR)} & {
        MODEL_YAML_DIR + y for y in yaml_names
    }
    return sorted(set(outside) | shared | own | yaml, key=Path)


def digest(named: Iterable[Tuple[str, bytes]], texts: Iterable[str] = ()) -> str:
    """The hash of files given as (path relative to the root, content), then texts."""
    sha = hashlib.sha1()
    for name, content in named:
        sha.update(name.encode() + b"\0")
        sha.update(content + b"\0")
    for text in texts:
        sha.update(text.encode() + b"\0")
    return sha.hexdigest()[:12]


def parts_hash(
    package: Mapping[str, bytes],
    shared: Iterable[Tuple[str, bytes]],
    worker_text: str,
    model: Optional[str] = None,
    by_model: bool = False,
) -> str:
    """A code hash from its parts (root-relative path -> content for the package, the
    workers' shared helpers, the worker's module above its report marker): over the
    whole package, or with ``by_model`` over what :func:`model_scoped_files` gives for
    ``model``. The suite hashes the checkout with it, ``benchmarks.oldcode`` a commit.
    """
    if by_model:
        kept, texts = model_scoped_files(package, model), [worker_text, MODEL_SCOPED]
    else:
        kept, texts = sorted(package, key=Path), [worker_text]
    return digest([*((p, package[p]) for p in kept), *shared], texts)


def checkout_parts() -> Tuple[Dict[str, bytes], List[Tuple[str, bytes]]]:
    """This checkout's package sources and shared worker helpers, as ``parts_hash``
    takes them."""
    package = {os.path.relpath(p, ROOT): p.read_bytes() for p in package_files()}
    shared = [(os.path.relpath(p, ROOT), p.read_bytes()) for p in SHARED_WORKER_CODE]
    return package, shared


def worker_source(worker: Callable) -> str:
    """The worker's module down to its report marker (a line ``# ---- report``)."""
    source = inspect.getsource(sys.modules[worker.__module__])
    return REPORT_MARKER.split(source, maxsplit=1)[0]


def worker_code_hash(worker: Callable) -> str:
    """The code a section's runs depend on: ``recbole_diffrec`` (sources and yaml), the
    workers' shared helpers, and the worker's module down to its report marker: editing
    how a section is reported must not mark its results stale, and everything above the
    marker may feed the runs, so it counts."""
    return parts_hash(*checkout_parts(), worker_source(worker))


def model_code_hash(worker: Callable, model: Optional[str]) -> str:
    """As :func:`worker_code_hash`, with only the part of the package that
    :func:`model_scoped_files` gives for ``model`` (for sections whose every job names
    the one model it runs)."""
    return parts_hash(*checkout_parts(), worker_source(worker), model, by_model=True)
