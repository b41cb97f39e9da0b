"""The package's layout rules (issue 11), checked on the source text and the import graph.

* no module reads another module's underscore attribute (``self.``/``cls.``/``super()``
  are a class's own business; ``from pyro_relax.x import _name`` counts as a read);
* no import cycle between the package's modules (module- and function-level imports;
  importing ``a.b.c`` runs the ``__init__`` of ``a`` and ``a.b`` first, so those count too,
  except a module's own parent packages, which are already running);
* the MCMC math has one home: one ``def leapfrog``, one Metropolis accept;
* no two public classes share a name, and none shadows a Pyro inference class;
* no source file is longer than 400 lines.
"""

from __future__ import annotations

import ast
import collections
import importlib
import inspect
import pkgutil
from pathlib import Path

import pyro.infer
import pytest

import pyro_relax

PACKAGE = Path(pyro_relax.__file__).resolve().parent
ROOT = PACKAGE.parent
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    nodes: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            nodes |= {id(sub) for sub in ast.walk(node)}
    return nodes


def underscore_reads(source: str, where: str) -> list[str]:
    """``path:line: what`` for every read of another object's or module's private name."""
    hits = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            if node.attr.startswith("__") and node.attr.endswith("__"):
                continue
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            if (isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name)
                    and owner.func.id == "super"):
                continue
            hits.append(f"{where}:{node.lineno}: .{node.attr} of {ast.unparse(owner)[:60]}")
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pyro_relax"):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    hits.append(f"{where}:{node.lineno}: imports {alias.name} from {node.module}")
    return hits


def import_edges(name: str, source: str) -> set[str]:
    """The package modules that importing ``name`` runs (its imports and their packages)."""
    tree = ast.parse(source)
    skip = _type_checking_nodes(tree)
    targets: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pyro_relax"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                targets.add(full if full in MODULES else node.module)
        elif isinstance(node, ast.Import):
            targets |= {a.name for a in node.names if a.name.startswith("pyro_relax")}
    edges = set()
    for target in targets:
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if i < len(parts) and (name + ".").startswith(prefix + "."):
                continue  # our own parent package: already being imported
            if prefix in MODULES and prefix != name:
                edges.add(prefix)
    return edges


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every back edge of a depth-first search, as the cycle it closes."""
    cycles, state, stack = [], {}, []

    def visit(u: str) -> None:
        state[u] = "open"
        stack.append(u)
        for v in sorted(edges.get(u, ())):
            if state.get(v) == "open":
                cycles.append(stack[stack.index(v):] + [v])
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = "done"

    for u in sorted(edges):
        if u not in state:
            visit(u)
    return cycles


def test_no_module_reads_another_modules_private_names() -> None:
    hits = []
    for path in MODULES.values():
        hits += underscore_reads(path.read_text(), str(path.relative_to(ROOT)))
    assert hits == []


def test_underscore_check_can_fail() -> None:
    src = "from pyro_relax.x import _y\nz = obj._hidden\nself._ok\nsuper()._fine()\n"
    assert len(underscore_reads(src, "f.py")) == 2


def test_no_import_cycles() -> None:
    edges = {name: import_edges(name, path.read_text()) for name, path in MODULES.items()}
    assert find_cycles(edges) == []


def test_cycle_finder_can_fail() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def _count(pattern: str) -> list[str]:
    return [f"{p.relative_to(ROOT)}:{i}" for p in MODULES.values()
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern in line]


def test_one_leapfrog() -> None:
    assert len(_count("def leapfrog")) == 1, _count("def leapfrog")


def test_one_metropolis_accept() -> None:
    assert len(_count("def metropolis_accept")) == 1, _count("def metropolis_accept")


def _public_classes() -> dict[str, set[str]]:
    names: dict[str, dict[int, str]] = collections.defaultdict(dict)
    for info in pkgutil.walk_packages(pyro_relax.__path__, "pyro_relax."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        module = importlib.import_module(info.name)
        for attr in getattr(module, "__all__", ()):
            obj = getattr(module, attr)
            if inspect.isclass(obj) and obj.__module__.startswith("pyro_relax"):
                names[obj.__name__][id(obj)] = f"{obj.__module__}.{obj.__qualname__}"
    return {name: set(homes.values()) for name, homes in names.items()}


def test_no_two_public_classes_share_a_name() -> None:
    clashes = {n: homes for n, homes in _public_classes().items() if len(homes) > 1}
    assert clashes == {}


def test_no_public_class_shadows_pyro_inference() -> None:
    pyro_names = {n for n in dir(pyro.infer) if inspect.isclass(getattr(pyro.infer, n))}
    pyro_names -= {"MCMC"}  # never defined here; listed for clarity
    shadows = sorted(set(_public_classes()) & pyro_names)
    assert shadows == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_is_short(name: str) -> None:
    n = len(MODULES[name].read_text().splitlines())
    assert n <= MAX_LINES, f"{MODULES[name].relative_to(ROOT)} has {n} lines (at most {MAX_LINES})"


def direct_imports(source: str) -> set[str]:
    """The modules a source file names in its import statements (absolute imports)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


@pytest.mark.parametrize("folder", ["infer.pathfinder", "infer.kernels"])
def test_algorithms_take_a_potential_not_a_guide(folder: str) -> None:
    """Pathfinder and the kernels import no guide module (issue 22): they take a Potential."""
    hits = [f"{name} imports {mod}" for name, path in MODULES.items()
            if name.startswith(f"pyro_relax.{folder}")
            for mod in direct_imports(path.read_text())
            if mod.startswith("pyro_relax.infer.guides")]
    assert hits == []


def test_guide_import_check_can_fail() -> None:
    assert direct_imports("from pyro_relax.infer.guides.base import x\nimport a.b") == {
        "pyro_relax.infer.guides.base", "a.b"}
