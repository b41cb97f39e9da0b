"""``guide="auto"``: the escalating fit, at home in :mod:`pyro_relax.infer.runner.auto`.

This module keeps the import path ``pyro_relax.infer.auto`` working.
"""

from pyro_relax.infer.runner.auto import DrawsGuide, fit_auto

__all__ = ["DrawsGuide", "fit_auto"]
