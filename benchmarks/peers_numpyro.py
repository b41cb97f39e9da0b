"""NumPyro NUTS as a peer on posteriordb posteriors (optional; needs ``numpyro`` and ``jax``).

One chain of NumPyro's NUTS (500 warmup + 500 draws, dense mass matrix) on
CPU in float64, on NumPyro ports of the Pyro models in
``examples/posteriordb``. For each posterior it reports the wall time
*including* JAX compilation, the bulk ESS (ArviZ ``az.ess`` on the draws,
minimum over the reference parameters), ESS per second, and the worst mean
error (in reference sd) and worst relative sd error against the reference
moments of :func:`pyro_relax.testing.posteriordb.reference_moments`.

Nothing in the package or the default test suite imports this file; run it
by hand, one posterior at a time if you like::

    OMP_NUM_THREADS=1 python benchmarks/peers_numpyro.py --models kidiq \\
        --json benchmarks/results/peers_numpyro.json

The ports keep the Pyro models' priors (``HalfCauchy``/``HalfNormal`` for the
Stan half-priors, improper flat priors as ``ImproperUniform``); only the
log density's constant differs from Stan's, which NUTS does not see.
"""

from __future__ import annotations

__all__ = ["MODELS", "main", "run_one"]

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_platform_name", "cpu")

import jax.numpy as jnp  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.distributions import constraints  # noqa: E402

from pyro_relax.testing.posteriordb import load_data, reference_moments  # noqa: E402

NUM_WARMUP = 500
NUM_SAMPLES = 500


def _flat(k: int | None = None, positive: bool = False) -> dist.Distribution:
    support = constraints.positive if positive else constraints.real
    return dist.ImproperUniform(support, (), event_shape=() if k is None else (k,))


def _vec(values: np.ndarray, base: str) -> dict[str, np.ndarray]:
    return {f"{base}[{i + 1}]": values[:, i] for i in range(values.shape[1])}


def _regression_names(s: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {**_vec(s["beta"], "beta"), "sigma": s["sigma"]}


def _kidiq(d: Mapping[str, Any]) -> None:
    beta = numpyro.sample("beta", _flat(2))
    sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5))
    loc = beta[0] + beta[1] * d["mom_iq"]
    numpyro.sample("kid_score", dist.Normal(loc, sigma), obs=d["kid_score"])


def _kilpisjarvi(d: Mapping[str, Any]) -> None:
    alpha = numpyro.sample("alpha", dist.Normal(d["pmualpha"], d["psalpha"]))
    beta = numpyro.sample("beta", dist.Normal(d["pmubeta"], d["psbeta"]))
    sigma = numpyro.sample("sigma", _flat(positive=True))
    numpyro.sample("y", dist.Normal(alpha + beta * d["x"], sigma), obs=d["y"])


def _earnings(d: Mapping[str, Any]) -> None:
    beta = numpyro.sample("beta", _flat(2))
    sigma = numpyro.sample("sigma", _flat(positive=True))
    numpyro.sample("earn", dist.Normal(beta[0] + beta[1] * d["height"], sigma), obs=d["earn"])


def _sblri(d: Mapping[str, Any]) -> None:
    x = d["X"]
    beta = numpyro.sample("beta", dist.Normal(jnp.zeros(x.shape[1]), 10.0).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(10.0))
    numpyro.sample("y", dist.Normal(x @ beta, sigma), obs=d["y"])


def _eight_schools_nc(d: Mapping[str, Any]) -> None:
    j = int(d["J"])
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    theta_trans = numpyro.sample("theta_trans", dist.Normal(jnp.zeros(j), 1.0).to_event(1))
    numpyro.sample("y", dist.Normal(mu + tau * theta_trans, d["sigma"]), obs=d["y"])


def _eight_schools_names(s: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    theta = s["mu"][:, None] + s["tau"][:, None] * s["theta_trans"]
    return {**_vec(theta, "theta"), "mu": s["mu"], "tau": s["tau"]}


def _ark(d: Mapping[str, Any]) -> None:
    y, k = d["y"], int(d["K"])
    # lags[t - K, k] = y[t - k - 1] (0-based), for t = K..T-1
    lags = jnp.stack([y[k - i - 1 : len(y) - i - 1] for i in range(k)], axis=-1)
    alpha = numpyro.sample("alpha", dist.Normal(0.0, 10.0))
    beta = numpyro.sample("beta", dist.Normal(jnp.zeros(k), 10.0).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5))
    numpyro.sample("y", dist.Normal(alpha + lags @ beta, sigma), obs=y[k:])


def _ark_names(s: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"alpha": s["alpha"], **_vec(s["beta"], "beta"), "sigma": s["sigma"]}


def _linear(x_of: Callable[[Mapping[str, Any]], Any], obs: str) -> Callable[[Mapping], None]:
    def model(d: Mapping[str, Any]) -> None:
        x = x_of(d)
        beta = numpyro.sample("beta", _flat(x.shape[1]))
        sigma = numpyro.sample("sigma", _flat(positive=True))
        numpyro.sample(obs, dist.Normal(x @ beta, sigma), obs=d[obs])

    return model


def _mesquite_x(d: Mapping[str, Any]) -> Any:
    cols = [d[n] for n in ("diam1", "diam2", "canopy_height", "total_height", "density", "group")]
    return jnp.stack([jnp.ones_like(cols[0]), *cols], axis=-1)


def _nes_x(d: Mapping[str, Any]) -> Any:
    age = d["age_discrete"]
    dummies = [(age == level).astype(jnp.float64) for level in (2, 3, 4)]
    cols = [d["real_ideo"], d["race_adj"], *dummies, d["educ1"], d["gender"], d["income"]]
    return jnp.stack([jnp.ones_like(cols[0]), *cols], axis=-1)


#: short name -> (posteriordb name, NumPyro model of the data dict, samples -> Stan names)
MODELS: dict[str, tuple[str, Callable[[Mapping[str, Any]], None], Callable]] = {
    "kidiq": ("kidiq-kidscore_momiq", _kidiq, _regression_names),
    "kilpisjarvi": ("kilpisjarvi_mod-kilpisjarvi", _kilpisjarvi,
                    lambda s: {k: s[k] for k in ("alpha", "beta", "sigma")}),
    "earnings": ("earnings-earn_height", _earnings, _regression_names),
    "sblri": ("sblri-blr", _sblri, _regression_names),
    "eight_schools_noncentered": ("eight_schools-eight_schools_noncentered",
                                  _eight_schools_nc, _eight_schools_names),
    "arK": ("arK-arK", _ark, _ark_names),
    "mesquite": ("mesquite-mesquite", _linear(_mesquite_x, "weight"), _regression_names),
    "nes1976": ("nes1976-nes", _linear(_nes_x, "partyid7"), _regression_names),
}


def _data(name: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in load_data(name).items():
        out[k] = jnp.asarray(np.asarray(v, dtype=np.float64)) if isinstance(v, np.ndarray) else v
    return out


def run_one(short: str, seed: int = 0) -> dict[str, Any]:
    """Run NumPyro NUTS on one posterior and score it against the reference moments.

    Arguments:
        short: a key of :data:`MODELS`.
        seed: the PRNG seed of the chain.

    Returns:
        A row: ``target``, ``method`` (``"numpyro-nuts-dense"``), ``seed``,
        ``seconds`` (wall, compilation included), ``ess`` (min bulk ESS),
        ``ess_per_s``, ``mean_err``, ``sd_err``, ``divergences``.

    Raises:
        ValueError: for an unknown name, or when the draws are not finite.
    """
    import arviz as az
    from numpyro.infer import MCMC, NUTS

    if short not in MODELS:
        raise ValueError(f"run_one: expected one of {sorted(MODELS)}, got {short!r}")
    name, model, to_names = MODELS[short]
    data = _data(name)
    mcmc = MCMC(NUTS(model, dense_mass=True), num_warmup=NUM_WARMUP,
                num_samples=NUM_SAMPLES, num_chains=1, progress_bar=False)
    start = time.perf_counter()
    mcmc.run(jax.random.PRNGKey(seed), data, extra_fields=("diverging",))
    samples = jax.block_until_ready(mcmc.get_samples())
    seconds = time.perf_counter() - start
    draws = to_names({k: np.asarray(v, dtype=np.float64) for k, v in samples.items()})
    ref = reference_moments(name)
    if set(draws) != set(ref):
        raise ValueError(f"run_one: {short}: names {sorted(draws)} differ from {sorted(ref)}")
    ess, mean_err, sd_err = float("inf"), 0.0, 0.0
    for k, v in draws.items():
        if not np.all(np.isfinite(v)):
            raise ValueError(f"run_one: {short}: expected finite draws of {k!r}, got non-finite")
        ess = min(ess, float(az.ess(v[None, :], method="bulk")))
        rm, rs = ref[k]
        mean_err = max(mean_err, abs(float(v.mean()) - rm) / rs)
        sd_err = max(sd_err, abs(float(v.std(ddof=1)) / rs - 1.0))
    div = int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum())
    return {"target": short, "method": "numpyro-nuts-dense", "seed": seed, "seconds": seconds,
            "ess": ess, "ess_per_s": ess / seconds, "mean_err": mean_err, "sd_err": sd_err,
            "divergences": div}


def _table(rows: Sequence[Mapping[str, Any]]) -> str:
    lines = [f"{'posterior':<26} {'seconds':>8} {'ESS':>7} {'ESS/s':>8} {'mean err':>9} "
             f"{'sd err':>7} {'div':>4}"]
    for r in rows:
        lines.append(f"{r['target']:<26} {r['seconds']:8.2f} {r['ess']:7.1f} "
                     f"{r['ess_per_s']:8.2f} {r['mean_err']:9.3f} {r['sd_err']:7.3f} "
                     f"{r['divergences']:4d}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run the chosen posteriors, print the table, optionally write JSON.

    Arguments:
        argv: arguments (``None``: ``sys.argv[1:]``).

    Returns:
        The exit status (0).

    Raises:
        ValueError: for an unknown model name.
        FileExistsError: when ``--json`` names an existing file and ``--overwrite`` is absent.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the rows to this file")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        raise ValueError(f"peers_numpyro: expected models from {sorted(MODELS)}, got {unknown}")
    if args.json and os.path.exists(args.json) and not args.overwrite:
        raise FileExistsError(f"peers_numpyro: {args.json} exists; pass --overwrite to replace it")
    rows = []
    for m in args.models:
        rows.append(run_one(m, args.seed))
        print(_table(rows[-1:]).splitlines()[-1], flush=True)
    print(_table(rows))
    if args.json:
        env = {"python": platform.python_version(), "jax": jax.__version__,
               "numpyro": numpyro.__version__, "platform": platform.platform(),
               "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
        budget = {"num_warmup": NUM_WARMUP, "num_samples": NUM_SAMPLES, "chains": 1,
                  "dense_mass": True, "dtype": "float64", "device": "cpu"}
        with open(args.json, "w") as f:
            json.dump({"environment": env, "budget": budget, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
