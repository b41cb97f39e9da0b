"""The curated top level: every name resolves to its home's object, lazily, without torch."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

import pyro_relax as pr

INIT = Path(pr.__file__)


def _isort_key(name: str) -> tuple[int, str]:
    """Ruff's RUF022 order: SCREAMING_CASE, then CamelCase, then anything else."""
    if len(name) > 1 and name.isupper():
        group = 0
    elif name[:1].isupper():
        group = 1
    else:
        group = 2
    return group, name


def test_all_is_a_sorted_literal_without_duplicates() -> None:
    tree = ast.parse(INIT.read_text())
    (value,) = [
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(getattr(t, "id", "") == "__all__" for t in node.targets)
    ]
    names = ast.literal_eval(value)  # a literal list, readable without importing
    assert names == pr.__all__
    assert len(names) == len(set(names))
    assert names == sorted(names, key=_isort_key)


@pytest.mark.parametrize("name", [n for n in pr.__all__ if n not in ("__version__", "targets")])
def test_every_name_is_its_home_object(name: str) -> None:
    obj = getattr(pr, name)
    homes = pr._HOMES[name]
    found = [
        getattr(importlib.import_module(h), name)
        for h in homes
        if hasattr(importlib.import_module(h), name)
    ]
    assert found and found[0] is obj
    # and the module that defines it exports it too
    defining = importlib.import_module(obj.__module__)
    assert getattr(defining, name) is obj


def test_main_entry_points_are_there() -> None:
    from pyro_relax import diffusion, distributions, infer, stochastic, surjections, transforms

    assert pr.Flow is distributions.Flow and pr.as_transform is distributions.as_transform
    assert pr.AbsSurjection is surjections.AbsSurjection
    assert pr.LULinear is transforms.LULinear and pr.coupling_stack is transforms.coupling_stack
    assert pr.MALABlock is stochastic.MALABlock and pr.VAELayer is stochastic.VAELayer
    assert pr.AutoSNFGuide is infer.AutoSNFGuide and pr.MALA is infer.MALA
    assert pr.VPSDE is diffusion.VPSDE and pr.DiffFlow is diffusion.DiffFlow
    assert isinstance(pr.targets, types.ModuleType) and pr.targets.__name__ == "pyro_relax.targets"
    assert pr.validation_enabled() is True
    assert re.fullmatch(r"\d+\.\d+\.\d+", pr.__version__)


def test_type_checking_block_imports_every_name() -> None:
    """The static imports (for type checkers and griffe) cover ``__all__``."""
    tree = ast.parse(INIT.read_text())
    (block,) = [
        node
        for node in tree.body
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
    ]
    imported = {alias.asname or alias.name for stmt in block.body for alias in stmt.names}
    assert imported == set(pr.__all__) - {"__version__"}
    assert set(pr._HOMES) == imported - {"targets"}


def test_unknown_attribute_names_itself() -> None:
    with pytest.raises(AttributeError, match="module 'pyro_relax' has no attribute 'NoSuchThing'"):
        pr.NoSuchThing  # noqa: B018
    assert not hasattr(pr, "_private_thing")


def test_dir_lists_the_public_names() -> None:
    listed = dir(pr)
    assert set(pr.__all__) <= set(listed)
    assert "infer" in listed and listed == sorted(listed)


def test_import_stays_lazy_and_torch_free() -> None:
    code = (
        "import sys, pyro_relax as pr\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert 'pyro_relax.surjections' not in sys.modules\n"
        "assert pr.__version__ and pr.validation_enabled()\n"
        "assert 'torch' not in sys.modules, 'torch imported by validation'\n"
        "pr.AbsSurjection\n"
        "assert 'torch' in sys.modules\n"
        "assert 'pyro_relax.diffusion' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_star_import_gives_all() -> None:
    namespace: dict[str, object] = {}
    exec("from pyro_relax import *", namespace)  # noqa: S102
    assert set(pr.__all__) <= set(namespace)
    assert inspect.isclass(namespace["Flow"])
