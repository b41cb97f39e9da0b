"""Checkpoint files of the resumable trainers (SNF, FAB): written atomically, read safely.

* :func:`save_checkpoint` writes a state dict to a temporary file beside the
  target and renames it into place, so a crash never leaves half a file;
* :func:`read_checkpoint` loads it with ``torch.load(weights_only=True)`` (no
  pickled code runs) and names the file in every error;
* :func:`trainer_state` gathers the parts every trainer saves (configuration,
  model, optimizer, scheduler, RNG state, step, history, plus its own);
* :func:`config_differences` lists the options that differ from the saved
  ones, and :func:`check_state_parts` the parts a state lacks.
"""

from __future__ import annotations

__all__ = [
    "check_state_parts",
    "config_differences",
    "read_checkpoint",
    "save_checkpoint",
    "trainer_state",
]

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


def trainer_state(
    config: Mapping[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: object,
    step: int,
    history: Mapping[str, Any],
    **extra: object,
) -> dict[str, Any]:
    """The resumable state of a trainer as one dict of tensors, numbers, lists and dicts.

    Arguments:
        config: the options that shape the run (compared on resume).
        model: the trained module (its ``state_dict``).
        optimizer: its optimizer (its ``state_dict``).
        scheduler: its learning-rate scheduler (anything with ``state_dict()``).
        step: the number of steps done.
        history: the logged values so far.
        extra: the trainer's own parts (e.g. a replay buffer's state).

    Returns:
        The parts above and torch's global RNG state under ``"rng"``.

    Example:
        >>> net = torch.nn.Linear(2, 1)
        >>> opt = torch.optim.Adam(net.parameters())
        >>> sched = torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0)
        >>> sorted(trainer_state({"lr": 1e-3}, net, opt, sched, 0, {}, buffer={}))
        ['buffer', 'config', 'history', 'model', 'optimizer', 'rng', 'scheduler', 'step']
    """
    state_dict = getattr(scheduler, "state_dict", None)
    if not callable(state_dict):
        raise TypeError(
            f"trainer_state: expected a scheduler with state_dict(), got {type(scheduler).__name__}"
        )
    return {
        "config": dict(config),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": state_dict(),
        **extra,
        "rng": torch.get_rng_state(),
        "step": step,
        "history": history,
    }
