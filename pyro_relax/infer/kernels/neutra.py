"""NeuTra: NUTS on a model whose geometry a trained guide's bijection has flattened."""

from __future__ import annotations

__all__ = ["NeuTraNUTS", "neutra"]

from collections.abc import Callable, Mapping
from typing import Any

import torch
from pyro.infer.autoguide import AutoContinuous
from pyro.infer.mcmc import NUTS
from pyro.infer.reparam import NeuTraReparam
from torch import Tensor

_SUFFIX = "_shared_latent"


class NeuTraNUTS:
    r"""Pyro's NUTS on the model reparametrized by a trained guide's transform.

    With a guide ``q = T_# N(0, I)`` (``T`` a bijection onto the model's
    unconstrained space, from ``guide.get_transform()``), Pyro's
    :class:`~pyro.infer.reparam.NeuTraReparam` rewrites the model in terms of
    ``u = T^{-1}(z)``; when ``q`` is close to the posterior, ``u`` is nearly
    standard normal, which NUTS samples easily. The chain runs on the single
    site ``"<first latent>_shared_latent"``; :meth:`transform_samples` maps its
    draws back to the model's (constrained) sites.

    Arguments:
        guide: a trained Pyro ``AutoContinuous`` guide whose ``get_transform()``
            is a bijection needing no model arguments (``AutoIAFNormal``,
            ``AutoMultivariateNormal``, pyro-relax's flow guide, ...).
        model: the Pyro model the guide was trained on.
        **nuts_kwargs: passed to :class:`~pyro.infer.mcmc.NUTS`.

    Attributes:
        model: the reparametrized model (what the kernel samples).
        kernel: the NUTS kernel, to hand to :class:`pyro.infer.MCMC`.
        reparam: the shared ``NeuTraReparam`` instance.

    References:
        Hoffman, Sountsov, Dillon, Langmore, Tran and Vasudevan. NeuTra-lizing
        bad geometry in Hamiltonian Monte Carlo using neural transport. 2019
        (arXiv 1903.03704).

    Example:
        >>> import pyro, pyro.distributions as dist, torch
        >>> from pyro.infer.autoguide import AutoMultivariateNormal
        >>> pyro.clear_param_store()
        >>> def model():
        ...     pyro.sample("x", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        >>> guide = AutoMultivariateNormal(model)
        >>> _ = guide()
        >>> nt = NeuTraNUTS(guide, model)
        >>> mcmc = pyro.infer.MCMC(nt.kernel, num_samples=5, warmup_steps=5,
        ...                        disable_progbar=True)
        >>> mcmc.run()
        >>> nt.transform_samples(mcmc.get_samples())["x"].shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        guide: AutoContinuous,
        model: Callable[..., Any],
        **nuts_kwargs: Any,  # noqa: ANN401 (Pyro's NUTS options)
    ) -> None:
        if not isinstance(guide, AutoContinuous):
            raise TypeError(
                f"NeuTraNUTS: expected an AutoContinuous guide, got {type(guide).__name__}"
            )
        if not callable(model):
            raise TypeError(f"NeuTraNUTS: expected a callable model, got {type(model).__name__}")
        if guide.prototype_trace is None:
            raise ValueError(
                "NeuTraNUTS: expected a trained guide, got one that has never been run; "
                "train it with SVI (or call guide(*model_args)) first"
            )
        if "model" in nuts_kwargs or "potential_fn" in nuts_kwargs:
            raise ValueError("NeuTraNUTS: expected no model/potential_fn in nuts_kwargs")
        try:
            guide.get_transform()
        except (NotImplementedError, TypeError) as e:
            raise ValueError(
                "NeuTraNUTS: expected a guide whose get_transform() needs no model arguments, "
                f"got {type(guide).__name__} ({e})"
            ) from e
        self.guide = guide
        self.reparam = NeuTraReparam(guide)
        self.model = self.reparam.reparam(model)
        self.kernel = NUTS(self.model, **nuts_kwargs)

    def transform_samples(self, samples: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Map MCMC draws of the shared latent back to the model's constrained sites.

        Arguments:
            samples: ``mcmc.get_samples()`` (or ``group_by_chain=True``), holding one
                ``"*_shared_latent"`` entry of shape ``batch_shape + (latent_dim,)``.

        Returns:
            Dict of constrained samples keyed by the model's latent site names.
        """
        keys = [k for k in samples if k.endswith(_SUFFIX)]
        if len(keys) != 1:
            raise ValueError(
                f"NeuTraNUTS.transform_samples: expected one '*{_SUFFIX}' entry, got keys "
                f"{sorted(samples)}"
            )
        latent = samples[keys[0]]
        dim = int(self.guide.latent_dim)
        if latent.dim() < 1 or latent.shape[-1] != dim:
            raise ValueError(
                f"NeuTraNUTS.transform_samples: expected a last dimension of size {dim}, "
                f"got shape {tuple(latent.shape)}"
            )
        with torch.no_grad():
            if self.reparam.transform is None:
                self.reparam.transform = self.guide.get_transform()
            return self.reparam.transform_sample(latent)


def neutra(
    guide: AutoContinuous,
    model: Callable[..., Any],
    **nuts_kwargs: Any,  # noqa: ANN401 (Pyro's NUTS options)
) -> tuple[Callable[..., Any], NUTS, Callable[[Mapping[str, Tensor]], dict[str, Tensor]]]:
    """Reparametrize ``model`` by ``guide``'s transform and build NUTS on it.

    A functional front to :class:`NeuTraNUTS`.

    Arguments:
        guide: a trained ``AutoContinuous`` guide with a bijective ``get_transform()``.
        model: the Pyro model.
        **nuts_kwargs: passed to :class:`~pyro.infer.mcmc.NUTS`.

    Returns:
        ``(reparametrized_model, kernel, to_model_samples)``, the last mapping
        ``mcmc.get_samples()`` to constrained samples of the model's sites.

    Example:
        >>> import pyro, pyro.distributions as dist, torch
        >>> from pyro.infer.autoguide import AutoMultivariateNormal
        >>> pyro.clear_param_store()
        >>> def model():
        ...     pyro.sample("x", dist.Normal(0.0, 1.0))
        >>> guide = AutoMultivariateNormal(model)
        >>> _ = guide()
        >>> warped, kernel, to_model = neutra(guide, model, max_tree_depth=3)
        >>> type(kernel).__name__
        'NUTS'
    """
    helper = NeuTraNUTS(guide, model, **nuts_kwargs)
    return helper.model, helper.kernel, helper.transform_samples
