"""Hypothesis strategies for layer property tests and fuzz tests."""

from __future__ import annotations

__all__ = [
    "BAD_KINDS",
    "bad_inputs",
    "bad_tensors",
    "batch_shapes",
    "layer_cases",
    "seeds",
]

from collections.abc import Callable, Sequence

import torch
from hypothesis import note
from hypothesis import strategies as st

from pyro_relax.testing.registry import REGISTRY, LayerCase

#: The kinds of bad tensors :func:`bad_inputs` draws.
BAD_KINDS: tuple[str, ...] = (
    "wrong_event_shape",
    "wrong_rank",
    "int",
    "bool",
    "other_float",
    "nan",
    "inf",
    "neg_inf",
    "empty_batch",
    "negative",
    "huge",
    "zeros",
)


def batch_shapes(max_dims: int = 2, max_side: int = 3) -> st.SearchStrategy[tuple[int, ...]]:
    """Batch shapes with 0 to ``max_dims`` dimensions of size 1 to ``max_side``."""
    return st.lists(st.integers(1, max_side), min_size=0, max_size=max_dims).map(tuple)


def seeds() -> st.SearchStrategy[int]:
    """Seeds for ``torch.manual_seed``."""
    return st.integers(0, 2**31 - 1)


def layer_cases(
    where: Callable[[LayerCase], bool] = lambda c: True,
) -> st.SearchStrategy[LayerCase]:
    """Registered cases satisfying ``where``."""
    chosen = [c for c in REGISTRY if where(c)]
    if not chosen:
        raise ValueError("layer_cases: no registered case satisfies the filter")
    return st.sampled_from(chosen)


def _make(
    kind: str,
    event_shape: tuple[int, ...],
    dtype: torch.dtype,
    batch: tuple[int, ...],
    seed: int,
    where: int,
    device: torch.device | str,
) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    shape = batch + event_shape
    if kind == "wrong_event_shape":
        if event_shape:
            last = event_shape[-1] + (1 if where % 2 or event_shape[-1] == 1 else -1)
            shape = batch + event_shape[:-1] + (last,)
        else:
            shape = batch + (2,)
    elif kind == "wrong_rank":
        shape = () if where % 2 or not event_shape else event_shape[1:]
    elif kind == "empty_batch":
        shape = (0,) + event_shape
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    flat = x.view(-1)
    if kind in ("nan", "inf", "neg_inf") and flat.numel():
        flat[where % flat.numel()] = {"nan": float("nan"), "inf": float("inf")}.get(
            kind, float("-inf")
        )
    elif kind == "negative":
        x = -x.abs() - 0.5
    elif kind == "huge":
        x = x * 1e30
    elif kind == "zeros":
        x = torch.zeros_like(x)
    if kind == "int":
        return (3 * x).round().to(device=device, dtype=torch.int64)
    if kind == "bool":
        return (x > 0).to(device=device)
    if kind == "other_float":
        other = torch.float64 if dtype != torch.float64 else torch.float32
        return x.to(device=device, dtype=other)
    return x.to(device=device, dtype=dtype)


def bad_inputs(
    event_shape: Sequence[int],
    dtype: torch.dtype = torch.float32,
    *,
    kinds: Sequence[str] = BAD_KINDS,
    max_batch_dims: int = 2,
    device: torch.device | str = "cpu",
) -> st.SearchStrategy[tuple[str, torch.Tensor]]:
    """Pairs ``(kind, tensor)``: inputs an entry point for ``event_shape`` must refuse or survive.

    Arguments:
        event_shape: the event shape the entry point expects.
        dtype: the floating dtype it expects (``other_float`` draws the other one).
        kinds: which of :data:`BAD_KINDS` to draw.
        max_batch_dims: the most batch dimensions drawn.
        device: where the tensors are made.

    Returns:
        A strategy of ``(kind, tensor)``; ``kind`` says how the tensor is bad.

    Raises:
        ValueError: on an unknown kind or an empty list of kinds.
    """
    unknown = sorted(set(kinds) - set(BAD_KINDS))
    if unknown or not kinds:
        raise ValueError(f"bad_inputs: expected kinds among {BAD_KINDS}, got {list(kinds)}")
    event = tuple(int(n) for n in event_shape)

    @st.composite
    def draw(data: st.DrawFn) -> tuple[str, torch.Tensor]:
        kind = data(st.sampled_from(tuple(kinds)))
        batch = data(batch_shapes(max_dims=max_batch_dims))
        seed = data(st.integers(0, 2**16))
        where = data(st.integers(0, 2**16))
        x = _make(kind, event, dtype, batch, seed, where, device)
        note(f"bad input: {kind}, shape {tuple(x.shape)}, dtype {x.dtype}")
        return kind, x

    return draw()


def bad_tensors(
    event_shape: Sequence[int], dtype: torch.dtype = torch.float32, **options: object
) -> st.SearchStrategy[torch.Tensor]:
    """Bad tensors for an entry point that expects ``event_shape`` and ``dtype``.

    The same as :func:`bad_inputs` without the kind label (the kind is shown
    by ``hypothesis.note`` when a test fails).

    Arguments:
        event_shape: the event shape the entry point expects.
        dtype: the floating dtype it expects.
        **options: the keyword options of :func:`bad_inputs` (``kinds``,
            ``max_batch_dims``, ``device``).

    Example:
        >>> from hypothesis import given
        >>> strategy = bad_tensors((2,), kinds=("nan", "int"))
    """
    return bad_inputs(event_shape, dtype, **options).map(lambda kt: kt[1])
