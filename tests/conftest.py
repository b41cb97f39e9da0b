import os

import pytest
import torch
from hypothesis import settings

settings.register_profile("ci", derandomize=True, max_examples=25, deadline=None)
settings.register_profile("dev", max_examples=25, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

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
