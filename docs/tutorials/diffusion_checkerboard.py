# %% [markdown]
# # A score model and DiffFlow on the checkerboard
#
# Two diffusion models of the 2-D checkerboard: a VP score SDE (Song et al. 2021),
# trained by denoising score matching with a fixed forward SDE, and DiffFlow
# (Zhang and Chen 2021), whose forward drift is trained too, so that a short
# 30-step sampler already lands near the data. Both get an exact `log p(x)` from the
# probability-flow ODE (`ode_log_prob`, exact divergence in 2-D).
#
# Run it with `python docs/tutorials/diffusion_checkerboard.py --quick`.

# %%
import argparse
import time
from pathlib import Path

import torch
from matplotlib.figure import Figure

import pyro_relax
from pyro_relax import datasets
from pyro_relax.diffusion import VPSDE, DiffFlow, ScoreModel, euler_maruyama, ode_log_prob
from pyro_relax.nn import ScoreMLP

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--quick", action="store_true", help="a small run (seconds)")
parser.add_argument("--out", type=Path, default=Path(__file__).parent / "figures")
args, _ = parser.parse_known_args()
args.out.mkdir(parents=True, exist_ok=True)
# Adam steps for the score model and for DiffFlow (whose path KL costs 30 SDE steps each)
steps = {"score": 3000, "diffflow": 200} if args.quick else {"score": 20000, "diffflow": 3000}
torch.manual_seed(0)
train = datasets.checkerboard(20_000, seed=0)
test = datasets.checkerboard(500, seed=1)

# %% [markdown]
# Training is plain Adam on each model's `loss` (a score-matching loss for the score
# model, the path KL for DiffFlow). `pyro_relax.validation(False)` turns off the input
# checks that synchronize with the device, once the inputs are known to be good.

# %%
def fit(module: torch.nn.Module, steps: int, batch_size: int) -> float:
    opt = torch.optim.Adam(module.parameters(), lr=2e-3)
    start = time.perf_counter()
    with pyro_relax.validation(False):
        for _ in range(steps):
            batch = train[torch.randint(len(train), (batch_size,))]
            loss = module.loss(batch)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 10.0)
            opt.step()
    return time.perf_counter() - start


score = ScoreModel(VPSDE(), ScoreMLP(2, hidden=(64, 64)))
diffflow = DiffFlow(VPSDE(0.1, 5.0), ScoreMLP(2, hidden=(64, 64), out_features=4), "shared",
                    num_steps=30)
for name, module, key, batch in (("VP score model", score, "score", 256),
                                 ("DiffFlow", diffflow, "diffflow", 64)):
    seconds = fit(module, steps[key], batch)
    with torch.no_grad():
        nll = -ode_log_prob(module, test, divergence="exact", rtol=1e-4, atol=1e-4).mean()
    print(f"{name:>14}: trained {steps[key]} steps in {seconds:.1f} s; "
          f"test NLL by the probability-flow ODE {float(nll):.3f} nats")

# %% [markdown]
# Samples: the score model with 30 and with 1000 Euler-Maruyama steps, DiffFlow with
# its 30 steps; and the score model's ODE density on a grid. At the `--quick` size the
# squares are still blurred; the full size resolves them.
#
# ![samples and ODE density](figures/diffusion_checkerboard.png)

# %%
with torch.no_grad():
    shown = {
        "score model, 30 steps": euler_maruyama(score, (2000,), steps=30),
        "score model, 1000 steps": euler_maruyama(score, (2000,), steps=1000),
        "DiffFlow, 30 steps": diffflow.sample((2000,), denoise=True),
    }
    grid = torch.linspace(-2.5, 2.5, 48)
    xx, yy = torch.meshgrid(grid, grid, indexing="xy")
    points = torch.stack([xx.reshape(-1), yy.reshape(-1)], -1)
    density = ode_log_prob(score, points, divergence="exact", rtol=1e-3, atol=1e-3).exp()
fig = Figure(figsize=(14, 3.6), layout="constrained")
axes = fig.subplots(1, 4)
for ax, (title, x) in zip(axes, shown.items(), strict=False):
    ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.5)
    ax.set(title=title, xlim=(-2.5, 2.5), ylim=(-2.5, 2.5))
axes[3].pcolormesh(xx, yy, density.reshape(xx.shape), shading="auto")
axes[3].set_title("score model: ODE density")
for ax in axes:
    ax.set_aspect("equal")
fig.savefig(args.out / "diffusion_checkerboard.png", dpi=80)
