"""Checkpoint files of the resumable trainers (SNF, FAB): written atomically, read safely.

* :func:`save_checkpoint` writes a state dict to a temporary file beside the
  target and renames it into place, so a crash never leaves half a file;
* :func:`read_checkpoint` loads it with ``torch.load(weights_only=True)`` (no
  pickled code runs) and names the file in every error;
* :func:`config_differences` lists the options that differ from the saved
  ones, and :func:`check_state_parts` the parts a state lacks.
"""

from __future__ import annotations

__all__ = ["check_state_parts", "config_differences", "read_checkpoint", "save_checkpoint"]

import os
import tempfile
from collections.abc import Iterable, Mapping
from typing import Any

import torch


def save_checkpoint(path: str, state: Mapping[str, Any], owner: str) -> None:
    """Write ``state`` to ``path`` atomically (a temporary file beside it, then a rename).

    Raises:
        OSError: naming ``owner`` and ``path`` when the folder cannot be written.

    Example:
        >>> import os, tempfile
        >>> folder = tempfile.mkdtemp()
        >>> save_checkpoint(os.path.join(folder, "run.pt"), {"step": 3}, "Trainer")
        >>> read_checkpoint(os.path.join(folder, "run.pt"), "Trainer")
        {'step': 3}
    """
    folder = os.path.dirname(os.path.abspath(path))
    prefix = f".{owner.lower().removesuffix('trainer') or 'trainer'}-checkpoint-"
    try:
        fd, tmp = tempfile.mkstemp(prefix=prefix, dir=folder)
    except OSError as err:
        raise OSError(f"{owner}: cannot write the checkpoint {path!r}: {err}") from err
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(dict(state), f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_checkpoint(path: str, owner: str) -> dict[str, Any]:
    """Load a checkpoint file safely (``weights_only=True``), naming the file on failure.

    Raises:
        ValueError: if the file cannot be read (truncated, corrupted, foreign or
            unsafe pickles) or does not hold a dict.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, corrupted, foreign or unsafe pickles
        first = str(err).splitlines()[0] if str(err) else "no details"
        raise ValueError(
            f"{owner}: cannot read the checkpoint {path!r} ({type(err).__name__}: {first}); "
            f"expected a file written by {owner}.save (move it away to start afresh)"
        ) from err
    if not isinstance(state, dict):
        raise ValueError(
            f"{owner}: the checkpoint {path!r} is not a trainer checkpoint "
            f"(expected a dict, got {type(state).__name__})"
        )
    return state


def config_differences(saved: Mapping[str, Any], given: Mapping[str, Any]) -> list[str]:
    """``"key: saved ..., given ..."`` for every option whose saved and given values differ.

    Example:
        >>> config_differences({"lr": 0.1, "steps": 5}, {"lr": 0.2, "steps": 5})
        ['lr: saved 0.1, given 0.2']
    """
    return [
        f"{key}: saved {saved.get(key, '(none)')!r}, given {given.get(key, '(none)')!r}"
        for key in sorted(set(given) | set(saved))
        if saved.get(key, "(none)") != given.get(key, "(none)")
    ]


def check_state_parts(state: object, parts: Iterable[str], where: str, owner: str) -> None:
    """Raise a ``ValueError`` naming the parts of ``parts`` that ``state`` lacks.

    Example:
        >>> check_state_parts({"step": 1}, ["step", "model"], "checkpoint 'a.pt'", "Trainer")
        Traceback (most recent call last):
        ...
        ValueError: checkpoint 'a.pt' lacks ['model'] (expected a file written by Trainer.save)
    """
    needed = set(parts)
    missing = sorted(needed - set(state)) if isinstance(state, dict) else sorted(needed)
    if missing:
        raise ValueError(f"{where} lacks {missing} (expected a file written by {owner}.save)")
