"""The ``pyro-relax`` command: the only home of argument parsing and file output.

    pyro-relax demo
    pyro-relax fit MODEL.py[:name] --guide NAME --steps N --num-samples M --out DIR
    pyro-relax fit MODEL.py[:name] --devices N --guide normal --batch-size B --out DIR
    pyro-relax mcmc MODEL.py[:name] --kernel NAME --num-samples M --out DIR
    pyro-relax density DATA --flow NAME --out DIR

The names and their help come from the method tables
:data:`~pyro_relax.infer.runner.GUIDES`, :data:`~pyro_relax.infer.runner.KERNELS`
and :data:`~pyro_relax.density_fit.FLOWS`.

``fit --devices N`` is data-parallel SVI (``pyro_relax.lightning``, one of its
``GUIDE_NAMES``): the file then defines ``model(ind, *data)``, with
``pyro.plate(name, size, subsample=ind)`` over the data, and the data as a tensor,
a tuple of tensors or a function returning one (``data``, or ``--data NAME``); see
``examples/data_parallel.py`` and :mod:`pyro_relax.modelfile`. The draws come from
the model on all indices, ``model(torch.arange(size), *data)``.

Everything that can be checked (counts and their bounds, ``--out``, the device, the
model file and one trial run of the model, seeded with ``--seed``: its sites, their
supports and names, and the memory the draws need) is checked before fitting.
Outputs are written to a temporary folder next to ``DIR`` and swapped into place
only when complete, so a failed or interrupted run (SIGHUP exits 129, SIGINT 130,
SIGTERM 143; a full disk exits 1) leaves nothing half-written; ``--force`` replaces
only empty folders and earlier outputs, whose ``.pyro-relax-run.json`` marker lists
every file in them (see ``pyro_relax._outdir``). A model file that calls
``sys.exit`` is an error (exit 1), never a success. Errors are one line on stderr;
set ``PYRO_RELAX_DEBUG=1`` to see the traceback of an unexpected one.
"""

from __future__ import annotations

__all__ = ["load_model", "main"]

import argparse
import contextlib
import functools
import inspect
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pyro_relax._cli_checks import check_memory, check_numbers, quiet_lightning, setup_device
from pyro_relax._outdir import Interrupted, Output, check_out, signals_raise
from pyro_relax._progress import interactive
from pyro_relax._results import write_results
from pyro_relax.infer.runner import DTYPES, GUIDES, KERNELS
from pyro_relax.modelfile import ERRORS, add_devices_options, import_file, trial_run


# -- model files -------------------------------------------------------------
def load_model(spec: str) -> Callable[[], Any]:
    """Import ``MODEL.py[:name]``; return its zero-argument model (named ``model`` by default).

    Example:
        >>> load_model("no/such/file.py")
        Traceback (most recent call last):
        ...
        FileNotFoundError: model file not found: no/such/file.py
    """
    path, _, name = spec.partition(":")
    name = name or "model"
    fn = getattr(import_file(path), name, None)
    if fn is None or not callable(fn):
        raise ValueError(f"{path} has no callable {name!r}; name the model as {path}:NAME")
    required = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if required:
        raise ValueError(f"expected a zero-argument model, {name}() takes "
                         f"{[p.name for p in required]} (model(ind, *data) needs --devices N)")
    return fn


# -- checks before anything runs ------------------------------------------------
def _prepare(args: argparse.Namespace) -> tuple[Callable[..., Any], tuple[Any, ...], Output]:
    """Check --out, the device and the model (in that order): the model, its arguments, output.

    With ``--devices`` the model is ``model(ind, *data)`` and its arguments all
    indices and the data; otherwise a zero-argument model and no arguments.
    """
    import pyro

    target = check_out(args.out, force=args.force, model_file=args.model.partition(":")[0])
    setup_device(args.device)
    pyro.set_rng_seed(args.seed)  # the trial run draws from the prior: same command, same answer
    model: Callable[..., Any]
    if getattr(args, "devices", None) is None:
        model, model_args = load_model(args.model), ()
    else:
        import torch

        from pyro_relax.modelfile import prepare_data_parallel

        model, data = prepare_data_parallel(args)
        model_args = (torch.arange(data[0].shape[0], device=data[0].device), *data)
    pyro.set_rng_seed(args.seed)  # again: imports on the way may have drawn
    size = trial_run(functools.partial(model, *model_args))
    check_memory(args.num_samples * getattr(args, "chains", 1), size)
    record = {k: v for k, v in vars(args).items() if k != "func"}  # the run's options
    return model, model_args, Output(target, record, force=args.force)


# -- subcommands -------------------------------------------------------------
def _fit(args: argparse.Namespace) -> int:
    from pyro_relax.infer.runner import fit_guide, guide_draws

    if args.dtype is None:
        args.dtype = "float64" if args.devices is None else "float32"
    stray = [k for k in ("strategy", "batch_size", "data") if getattr(args, k) is not None]
    if args.devices is None and stray:
        raise ValueError(f"--{stray[0].replace('_', '-')} only applies with --devices N")
    model, model_args, output = _prepare(args)
    steps = args.steps if args.steps is not None else GUIDES[args.guide].default_steps
    with output.writing() as tmp:
        if args.devices is None:
            fit = fit_guide(
                model, args.guide, steps=steps, lr=args.lr, seed=args.seed,
                progress=args.progress, num_particles=args.particles, dtype=args.dtype,
                budget=args.budget,
            )
        else:
            fit = _fit_devices(args, model, model_args[1:], steps)
        samples, log_w = guide_draws(fit, model, args.num_samples, model_args)
        diag: dict[str, Any] = {
            "guide": args.guide,
            "steps": len(fit.elbo) or steps,  # those run: early stopping may end sooner
            "max_steps": steps,
            "particles": args.particles,
            "dtype": args.dtype,
            "final_elbo": fit.elbo[-1],
            "seconds": fit.seconds,
            "stages": fit.stages,
            **fit.extra,
        }
        diag.update(_judge(fit, samples, log_w, args))
        table = write_results(tmp, samples, diag, log_w=log_w, elbo=fit.elbo, seed=args.seed,
                              name=output.target.name)
    print(table[["mean", "sd", "ess_bulk"]].to_string(float_format=lambda v: f"{v:.3f}"))
    corrected = " (the posterior is PSIS-corrected)" if "posterior" in diag else ""
    print(f"\nfinal ELBO {fit.elbo[-1]:.3f}; wrote {args.out}/{corrected}")
    print(_verdict_line(diag))
    return 0


def _fit_devices(
    args: argparse.Namespace, model: Callable[..., Any], data: tuple[Any, ...], steps: int
) -> Any:  # noqa: ANN401 - a FitResult (lightning is imported only here)
    """Train the guide by SVI on ``--devices`` workers (see ``pyro_relax.lightning``)."""
    import pyro

    from pyro_relax.lightning import fit_guide_distributed

    pyro.set_rng_seed(args.seed)
    return fit_guide_distributed(
        model, args.guide, args.devices, *data, num_particles=args.particles, steps=steps,
        batch_size=args.batch_size, lr=args.lr, seed=args.seed,
        strategy="ddp_spawn" if args.strategy == "ddp" else "auto",  # this process keeps --out
        accelerator="gpu" if args.device == "cuda" else "cpu",
    )


@contextlib.contextmanager
def _on_device(device: str | None) -> Iterator[None]:
    """Run a command with ``--device`` as torch's default device, restored afterwards."""
    if device is None:
        yield
        return
    import torch

    with torch.device(device):
        yield


def _judge(fit: Any, samples: dict, log_w: Any, args: argparse.Namespace) -> dict:  # noqa: ANN401
    """The one verdict (``pyro_relax.infer.draws``) on the draws this run writes."""
    from pyro_relax.diagnostics import weighted_report
    from pyro_relax.infer.draws import WeightedDraws, verdict

    neutra = fit.extra.get("method") == "neutra"
    dim = getattr(fit.guide, "latent_dim", 0) or sum(v[0].numel() for v in samples.values())
    draws = WeightedDraws(samples, log_w, fit.extra.get("method", args.guide),
                          weighted=not neutra, latent_dim=int(dim), converged=fit.converged,
                          noisy_weights=bool(fit.extra.get("subsampled")))
    v = verdict(draws, advice=fit.extra.get("advice", ""))
    out: dict[str, Any] = {}
    if args.num_samples >= 25 and not neutra:
        out.update(weighted_report(log_w))
    out.update(verdict=v.label, verdict_reason=v.reason, advice=v.advice, converged=fit.converged)
    out.pop("khat", None)
    if v.khat == v.khat:  # not NaN
        out["khat"] = v.khat
    return out


def _verdict_line(diag: dict[str, Any]) -> str:
    """The last line of ``fit``: how far to trust the answer, and what to do if not."""
    label, reason = diag.get("verdict", "unknown"), diag.get("verdict_reason", "")
    if label == "mcmc":
        return f"verdict: NeuTra MCMC draws (no k-hat); {diag.get('advice', '')}".rstrip("; ")
    line = f"verdict: {label} ({reason})" if reason else f"verdict: {label}"
    if label not in ("good", "acceptable") and diag.get("advice"):
        line += f"; {diag['advice']}"
    return line


def _mcmc(args: argparse.Namespace) -> int:
    from pyro_relax.infer.runner import run_mcmc

    model, _, output = _prepare(args)
    with output.writing() as tmp:
        res = run_mcmc(
            model,
            args.kernel,
            num_samples=args.num_samples,
            warmup_steps=args.warmup,
            num_chains=args.chains,
            seed=args.seed,
            progress=args.progress and interactive(),  # Pyro's bar: none in a log
            guide_steps=args.guide_steps,
        )
        diag = {"kernel": args.kernel, "seconds": res.seconds, **res.extra}
        table = write_results(tmp, res.samples, diag, chains=args.chains, mcmc=res.mcmc,
                              name=output.target.name)
    print(table[["mean", "sd", "ess_bulk", "r_hat"]].to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"\n{args.kernel}: {res.seconds:.1f} s; wrote {args.out}/")
    return 0


def _density(args: argparse.Namespace) -> int:
    from pyro_relax.density_fit import check_density_args, run_density

    data_file = args.data if Path(args.data).suffix in (".npy", ".csv") else None
    target = check_out(args.out, force=args.force, model_file=data_file, source="data file")
    setup_device(args.device)
    quiet_lightning()
    check_density_args(args)  # options and data, before anything is created
    args.progress = args.progress and interactive()  # Lightning's bar: none in a log
    record = {k: v for k, v in vars(args).items() if k != "func"}
    with Output(target, record, force=args.force).writing() as tmp:
        metrics = run_density(args, tmp)
    shown = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
    print(" ".join(f"{k} {v:.4g}" for k, v in shown.items()))
    print(f"wrote {args.out}/ (model.pt: pyro_relax.density_fit.load_density_model)")
    return 0


def _demo(args: argparse.Namespace) -> int:
    import logging

    import torch

    from pyro_relax import demo

    # The demo's models are tiny: one thread avoids oversubscription on small
    # machines, and single-chain ArviZ summaries would warn about R-hat.
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)  # this process only runs the demo
    print("pyro-relax demo, part 1: density estimation on the built-in sign-symmetric 2-D data")
    print(f"(4000 train / 2000 test points, {args.steps} Adam steps per model)\n")
    rows = demo.density_demo(steps=args.steps, seed=args.seed, progress=args.progress)
    print(demo.density_table(rows))
    gain = rows[1]["test_loglik"] - rows[0]["test_loglik"]
    print(f"\nThe abs surjection changes the test log-likelihood by {gain:+.3f} nats per point.\n")
    if args.density_only:
        return 0
    print("part 2: centered eight schools (a funnel): the default method, auto, beside Pyro NUTS")
    print("(auto is what pyro-relax fit runs: Pathfinder, a flow, PSIS k-hat, escalation)\n")
    rows = demo.inference_demo(seed=args.seed, progress=args.progress)
    print(demo.inference_table(rows))
    print(
        "\nReference (posteriordb, Stan NUTS): mu 4.39 (3.3); log tau is heavy-tailed towards -inf."
    )
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pyro-relax", description="Relaxed normalizing flows for Pyro."
    )
    sub = p.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="density estimation and a hard posterior on built-in data")
    demo.add_argument("--steps", type=int, default=600, help="training steps of the density part")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--density-only", action="store_true", help="skip the posterior part")
    demo.set_defaults(func=_demo)

    fit = sub.add_parser("fit", help="fit a guide to a Pyro model file (--devices N: "
                                     "data-parallel SVI on a model(ind, *data))")
    mc = sub.add_parser("mcmc", help="run an MCMC kernel on a Pyro model file")
    for s, option, table, default in ((fit, "--guide", GUIDES, "auto"),
                                      (mc, "--kernel", KERNELS, "nuts")):
        s.add_argument("model", help="MODEL.py[:name], a zero-argument Pyro model (default "
                                     "name: model; fit --devices: model(ind, *data))")
        s.add_argument(option, choices=list(table), default=default,
                       help="; ".join(f"{k}: {m.description}" for k, m in table.items()))
    fit.add_argument("--particles", type=int, default=8, help="ELBO particles per step")
    fit.add_argument("--steps", type=int, default=None,
                     help="SVI steps (default 2000; for auto the most, default 5000)")
    fit.add_argument("--dtype", choices=list(DTYPES), default=None,
                     help="dtype of the fit (default float64; float32 with --devices; the "
                          "draws written keep the model's dtype)")
    fit.add_argument("--budget", type=float, default=600.0,
                     help="seconds after which auto starts no further escalation")
    fit.add_argument("--lr", type=float, default=1e-2)
    fit.add_argument("--num-samples", type=int, default=1000)
    add_devices_options(fit)
    fit.set_defaults(func=_fit)

    mc.add_argument("--num-samples", type=int, default=1000)
    mc.add_argument("--warmup", type=int, default=500)
    mc.add_argument("--chains", type=int, default=1)
    mc.add_argument(
        "--guide-steps", type=int, default=2000, help="guide training for flow-imh/ais-imh/neutra"
    )
    mc.set_defaults(func=_mcmc)

    from pyro_relax.density_fit import add_density_parser

    dens = add_density_parser(sub)
    dens.set_defaults(func=_density)

    for s in (fit, mc, dens):
        s.add_argument("--out", required=True, help="output folder")
        s.add_argument("--force", action="store_true", help="replace an existing output folder")
        s.add_argument("--device", default="cpu")
        s.add_argument("--seed", type=int, default=0)
    for s in (demo, fit, mc, dens):
        s.add_argument(
            "--no-progress", dest="progress", action="store_false", help="hide progress bars"
        )
    return p


def _interrupted(err: BaseException, args: argparse.Namespace) -> int:
    signum = err.signum if isinstance(err, Interrupted) else signal.SIGINT
    name = signal.Signals(signum).name
    out = getattr(args, "out", None)
    if out is None:
        where = ""
    elif getattr(err, "written", False):
        where = f" after {out} was written"
    else:
        where = f"; nothing written to {out}"
    print(f"pyro-relax: interrupted ({name}){where}", file=sys.stderr)
    return 128 + int(signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pyro-relax`` console script; returns the exit code.

    Arguments:
        argv: the arguments after the program name (default: ``sys.argv[1:]``).

    Returns:
        0 on success, 1 for an error (one line on stderr; also when the model
        file calls ``sys.exit``), 2 for a bad option, 129 after SIGHUP, 130
        after SIGINT and 143 after SIGTERM.
    """
    args = _parser().parse_args(argv)
    problem = check_numbers(args)
    if problem is not None:
        print(f"pyro-relax: error: {problem}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        with signals_raise(), _on_device(getattr(args, "device", None)):
            code = int(args.func(args))
    except (Interrupted, KeyboardInterrupt) as err:
        return _interrupted(err, args)
    except SystemExit as err:  # the model file's sys.exit: never a (false) success
        out = getattr(args, "out", None)
        where = f"; nothing written to {out}" if out else ""
        print(f"pyro-relax: error: the model called sys.exit({err.code!r}){where}",
              file=sys.stderr)
        return 1
    except Exception as err:
        if os.environ.get("PYRO_RELAX_DEBUG") == "1":
            raise
        lines = str(err).strip().splitlines()
        first = lines[0] if lines else ""
        if not isinstance(err, ERRORS):  # not one of ours: name what went wrong
            first = f"{type(err).__name__}: {first}" if first else type(err).__name__
        print(f"pyro-relax: error: {first or type(err).__name__}", file=sys.stderr)
        return 1
    if args.command == "mcmc":  # fit ends with its verdict line instead
        print(f"done in {time.perf_counter() - start:.1f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
