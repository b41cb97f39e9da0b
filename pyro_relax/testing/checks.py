"""Reusable checks for relaxed layers; each raises ``AssertionError`` with a reason.

Users can run them on their own layers::

    from pyro_relax.testing import checks
    checks.check_all(my_layer, x)
"""

from __future__ import annotations

__all__ = [
    "check_all",
    "check_batch_consistency",
    "check_decode_contribution",
    "check_dtype_follows_input",
    "check_gradients",
    "check_integer_input",
    "check_log_det_autograd",
    "check_meta_device",
    "check_repr",
    "check_round_trip",
    "check_save_load",
    "check_shapes",
    "kind_of",
]

import copy
import io
from collections.abc import Iterable

import torch
from torch import Tensor

from pyro_relax.core import RelaxedLayer
from pyro_relax.core.switch import validation


def kind_of(layer: RelaxedLayer) -> str:
    """One of ``bijection``, ``inference_surjection``, ``generative_surjection``, ``stochastic``."""
    if layer.bijective:
        return "bijection"
    if not layer.stochastic_forward:
        return "inference_surjection"
    if not layer.stochastic_inverse:
        return "generative_surjection"
    return "stochastic"


def _batch(layer: RelaxedLayer, x: Tensor) -> torch.Size:
    return x.shape[: x.dim() - layer.event_dim]


def _close(a: Tensor, b: Tensor, what: str, atol: float, rtol: float = 1e-5) -> None:
    if a.shape != b.shape:
        raise AssertionError(f"{what}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    if not torch.allclose(a, b, atol=atol, rtol=rtol):
        err = (a - b).detach().abs().max()
        raise AssertionError(f"{what}: max abs difference {float(err):.3g} exceeds atol {atol:g}")


def check_shapes(layer: RelaxedLayer, x: Tensor, context: Tensor | None = None) -> None:
    """``encode``/``decode`` keep the batch shape and give the declared event shapes."""
    batch = _batch(layer, x)
    event = x.shape[len(batch) :]
    z, v = layer.encode(x, context)
    want_z = batch + layer.latent_shape(event)
    if z.shape != want_z:
        raise AssertionError(f"encode: expected z of shape {tuple(want_z)}, got {tuple(z.shape)}")
    if v.shape != batch:
        raise AssertionError(f"encode: expected V of shape {tuple(batch)}, got {tuple(v.shape)}")
    x2, s = layer.decode(z, context)
    if x2.shape != x.shape:
        raise AssertionError(f"decode: expected x of shape {tuple(x.shape)}, got {tuple(x2.shape)}")
    if s.shape != batch:
        raise AssertionError(f"decode: expected S of shape {tuple(batch)}, got {tuple(s.shape)}")
    if layer.data_shape(layer.latent_shape(event)) != event:
        raise AssertionError("data_shape(latent_shape(event)) is not the event shape")


def check_batch_consistency(
    layer: RelaxedLayer, x: Tensor, context: Tensor | None = None, atol: float = 1e-5
) -> None:
    """A batch of shape ``(2, m)`` gives the same results as the flat ``(2 m,)`` batch."""
    batch = _batch(layer, x)
    if len(batch) != 1 or batch[0] % 2:
        raise ValueError(
            f"check_batch_consistency: expected an even flat batch, got {tuple(batch)}"
        )
    x2 = x.reshape((2, batch[0] // 2) + x.shape[1:])
    c2 = None if context is None else context.reshape((2, batch[0] // 2) + context.shape[1:])
    torch.manual_seed(0)
    z, v = layer.encode(x, context)
    torch.manual_seed(0)
    z2, v2 = layer.encode(x2, c2)
    if not layer.stochastic_forward:
        _close(z2.reshape(z.shape), z, "encode with batch (2, m)", atol)
        _close(v2.reshape(v.shape), v, "contribution with batch (2, m)", atol)
    elif v2.shape != (2, batch[0] // 2):
        raise AssertionError(f"contribution with batch (2, m): got shape {tuple(v2.shape)}")


def check_round_trip(
    layer: RelaxedLayer, x: Tensor, context: Tensor | None = None, atol: float = 1e-4
) -> None:
    """Inverse consistency in whichever direction the layer is deterministic.

    Bijections: ``decode(encode(x)) == x``; inference surjections:
    ``encode(decode(z)) == z``; generative surjections: ``decode(encode(x)) == x``.
    Stochastic layers have no round trip and are rejected.
    """
    kind = kind_of(layer)
    if kind == "stochastic":
        raise ValueError("check_round_trip: a stochastic layer has no round trip")
    z, _ = layer.encode(x, context)
    if kind in ("bijection", "generative_surjection"):
        _close(layer.decode(z, context)[0], x, "decode(encode(x)) vs x", atol)
    if kind in ("bijection", "inference_surjection"):
        _close(
            layer.encode(layer.decode(z, context)[0], context)[0], z, "encode(decode(z)) vs z", atol
        )


def check_log_det_autograd(
    layer: RelaxedLayer, x: Tensor, context: Tensor | None = None, atol: float = 1e-6
) -> None:
    """A bijection's contribution equals ``log|det dz/dx|`` of the autograd Jacobian (float64)."""
    if not layer.bijective:
        raise ValueError("check_log_det_autograd: expected a bijective layer")
    layer = copy.deepcopy(layer).double()
    x = x.double().reshape((-1,) + x.shape[x.dim() - layer.event_dim :])
    ctx = None if context is None else context.double().reshape(x.shape[0], -1)
    _, v = layer.encode(x, ctx)
    for i in range(x.shape[0]):
        ci = None if ctx is None else ctx[i : i + 1]

        def f(xi: Tensor, ci: Tensor | None = ci) -> Tensor:
            return layer.encode(xi.unsqueeze(0), ci)[0].reshape(-1)

        jac = torch.autograd.functional.jacobian(f, x[i]).reshape(f(x[i]).numel(), x[i].numel())
        sign, logdet = torch.linalg.slogdet(jac)
        if sign == 0:
            raise AssertionError("autograd Jacobian is singular")
        _close(v[i], logdet, f"log|det J| of sample {i}", atol, rtol=1e-6)


def check_decode_contribution(
    layer: RelaxedLayer, z: Tensor, context: Tensor | None = None, atol: float = 1e-5
) -> None:
    """For a deterministic ``encode``: ``decode``'s ``S`` equals ``-V`` of the same pair."""
    if layer.stochastic_forward:
        raise ValueError("check_decode_contribution: needs a deterministic encode")
    x, s = layer.decode(z, context)
    z2, v = layer.encode(x, context)
    _close(z2, z, "encode(decode(z)) vs z", atol=1e-4)
    _close(s, -v, "S vs -V of the pair", atol)


def check_dtype_follows_input(
    layer: RelaxedLayer, x: Tensor, context: Tensor | None = None
) -> None:
    """Run in float64 under a float32 default dtype: every output must be float64."""
    layer = copy.deepcopy(layer).double()
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        ctx = None if context is None else context.double()
        z, v = layer.encode(x.double(), ctx)
        x2, s = layer.decode(z, ctx)
    finally:
        torch.set_default_dtype(old)
    for name, t in (("z", z), ("V", v), ("x", x2), ("S", s)):
        if t.dtype != torch.float64:
            raise AssertionError(f"{name} came out as {t.dtype} for float64 input")


def check_integer_input(
    layer: RelaxedLayer, x: Tensor, context: Tensor | None = None, seed: int = 0
) -> None:
    """Integer data gives what its float copy gives (the dtype rule of ``RelaxedLayer``).

    ``x`` is rounded to ``int64``; ``encode`` of it and of the same values as floats,
    under the same seed, must agree (both succeed with equal outputs, or both raise
    the same error type, e.g. for values the rounding moved out of the domain).
    """
    xi = x.detach().round().to(torch.int64)
    xf = xi.to(x.dtype)
    results = []
    for data in (xi, xf):
        torch.manual_seed(seed)
        try:
            results.append(layer.encode(data, context))
        except (ValueError, TypeError) as exc:
            results.append(type(exc))
    a, b = results
    if isinstance(a, type) or isinstance(b, type):
        if a is not b:
            raise AssertionError(f"integer input gave {a!r}, its float copy {b!r}")
        return
    for name, u, w in (("z", a[0], b[0]), ("V", a[1], b[1])):
        if u.dtype != w.dtype:
            raise AssertionError(f"{name}: integer input gave {u.dtype}, float input {w.dtype}")
        _close(u, w, f"{name} for integer input", atol=1e-5)


def check_meta_device(layer: RelaxedLayer, x: Tensor, context: Tensor | None = None) -> None:
    """On ``meta`` inputs every output is ``meta`` (a CPU tensor made inside raises)."""
    layer = copy.deepcopy(layer).to("meta")
    xm = x.to("meta")
    ctx = None if context is None else context.to("meta")
    with validation(False):
        z, v = layer.encode(xm, ctx)
        x2, s = layer.decode(z, ctx)
    for name, t in (("z", z), ("V", v), ("x", x2), ("S", s)):
        if t.device.type != "meta":
            raise AssertionError(f"{name} came out on {t.device} for meta input")


def _params_without_grad(layer: RelaxedLayer, exempt: Iterable[str]) -> list[str]:
    exempt = set(exempt)
    return [
        n
        for n, p in layer.named_parameters()
        if n not in exempt and (p.grad is None or not bool(torch.isfinite(p.grad).all()))
    ]


def check_gradients(
    layer: RelaxedLayer,
    x: Tensor,
    context: Tensor | None = None,
    exempt_decode: Iterable[str] = (),
) -> None:
    """Finite gradients reach every parameter from ``encode`` and, via ``decode``, from samples."""
    layer.zero_grad(set_to_none=True)
    if x.is_floating_point():
        x = x.detach().requires_grad_(True)
    z, v = layer.encode(x, context)
    if not (z.requires_grad or v.requires_grad):
        if any(True for _ in layer.parameters()):
            raise AssertionError("encode: outputs are detached from the parameters")
        z = z.detach().requires_grad_(True)
        x2, s = layer.decode(z, context)
        if not x2.requires_grad:
            raise AssertionError("decode: output is detached from the latent input (rsample)")
        return
    (v.sum() + z.sum()).backward()
    missing = _params_without_grad(layer, ())
    if missing:
        raise AssertionError(f"encode: no finite gradient for {missing}")
    layer.zero_grad(set_to_none=True)
    z = z.detach().requires_grad_(True)
    x2, s = layer.decode(z, context)
    (x2.square().sum() + s.sum()).backward()
    missing = _params_without_grad(layer, exempt_decode)
    if missing:
        raise AssertionError(f"decode: no finite gradient for {missing}")
    if z.grad is None or not bool(torch.isfinite(z.grad).all()):
        raise AssertionError("decode: no finite gradient reaches the latent input (rsample)")


def check_save_load(layer: RelaxedLayer, x: Tensor, context: Tensor | None = None) -> None:
    """``torch.save``/``torch.load`` round trip: same outputs under the same seed."""
    buf = io.BytesIO()
    torch.save(layer, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    for a, b in ((layer, loaded),):
        torch.manual_seed(1)
        za, va = a.encode(x, context)
        torch.manual_seed(1)
        zb, vb = b.encode(x, context)
        _close(zb, za, "z after save/load", 1e-6)
        _close(vb, va, "V after save/load", 1e-6)
    sd = layer.state_dict()
    if set(sd) != set(loaded.state_dict()):
        raise AssertionError("state_dict keys changed after save/load")


def check_repr(layer: RelaxedLayer) -> None:
    """``repr`` names the class."""
    text = repr(layer)
    if not isinstance(text, str) or type(layer).__name__ not in text:
        raise AssertionError(f"repr does not name the class: {text!r}")


def check_all(
    layer: RelaxedLayer,
    x: Tensor,
    context: Tensor | None = None,
    exempt_decode: Iterable[str] = (),
) -> list[str]:
    """Run every check that applies to the layer's kind; return the names run."""
    ran = []
    check_shapes(layer, x, context)
    ran.append("shapes")
    if kind_of(layer) != "stochastic":
        check_round_trip(layer, x, context)
        ran.append("round_trip")
    if layer.bijective:
        few = x.reshape((-1,) + x.shape[x.dim() - layer.event_dim :])[:3]
        ctx = None if context is None else context.reshape(-1, context.shape[-1])[:3]
        check_log_det_autograd(layer, few, ctx)
        ran.append("log_det_autograd")
    check_dtype_follows_input(layer, x, context)
    check_gradients(layer, x, context, exempt_decode)
    check_save_load(layer, x, context)
    check_repr(layer)
    ran += ["dtype", "gradients", "save_load", "repr"]
    return ran
