import os

import pytest
import torch
from hypothesis import settings

settings.register_profile("ci", derandomize=True, max_examples=25, deadline=None)
settings.register_profile("dev", max_examples=25, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
if os.environ.get("RELAX_SLOW"):
    import pyro_relax.testing.fuzz  # noqa: F401  (registers the "slow" profile)

    settings.load_profile("slow")


def pytest_configure(config):
    """``RELAX_SLOW=1`` runs the slow tests too (pyproject deselects them by default)."""
    if os.environ.get("RELAX_SLOW") and config.option.markexpr == "not slow":
        config.option.markexpr = ""

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Report how many layers the registry holds and how many generic checks ran on them."""
    from pyro_relax.testing import REGISTRY

    passed = terminalreporter.stats.get("passed", [])
    generic = [r for r in passed if r.nodeid.startswith("tests/test_layers_generic.py")]
    terminalreporter.write_line(
        f"layer registry: {len(REGISTRY)} layer cases, {len(generic)} generic checks passed"
    )


_TEMP_ROOT = os.path.realpath(__import__("tempfile").gettempdir())


@pytest.fixture(autouse=True)
def _no_deletion_outside_temp(monkeypatch):
    """Safety net: no test may remove or rename anything outside the temp folder.

    The CLI tests hand ``--force`` dangerous targets (``/``, ``~``, the current
    folder) to check that it refuses them; an earlier version of the CLI, run
    by such a test, deleted ``/etc`` of a development machine. If a guard ever
    regresses, this fixture turns the deletion into a test failure.
    """
    import shutil

    real_rmtree, real_rename, real_rmdir = shutil.rmtree, os.rename, os.rmdir

    def inside(path) -> bool:
        full = os.path.realpath(os.fspath(path))
        return full == _TEMP_ROOT or full.startswith(_TEMP_ROOT + os.sep)

    def rmtree(path, *args, **kwargs):
        if not inside(path):
            raise AssertionError(f"test safety: refusing to remove {path!r} (outside {_TEMP_ROOT})")
        return real_rmtree(path, *args, **kwargs)

    def rename(src, dst, *args, **kwargs):
        relative = kwargs.get("src_dir_fd") is not None or kwargs.get("dst_dir_fd") is not None
        if not relative and not (inside(src) and inside(dst)):
            raise AssertionError(f"test safety: refusing to rename {src!r} -> {dst!r}")
        return real_rename(src, dst, *args, **kwargs)

    def rmdir(path, *args, **kwargs):
        # rmtree removes entries relative to an open folder (dir_fd): vetted by rmtree above
        if kwargs.get("dir_fd") is None and not inside(path):
            raise AssertionError(f"test safety: refusing to remove {path!r} (outside {_TEMP_ROOT})")
        return real_rmdir(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", rmtree)
    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(os, "rmdir", rmdir)
    yield
