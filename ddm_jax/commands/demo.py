"""`ddm-jax demo`: train by a recipe, then evaluate on synthetic and real spectra.

Nothing is downloaded. The first run generates a seeded library of realistic spectra (real
stellar populations, photoionisation-model lines, dust, survey-like noise) and trains the
released-size DDM and line-ratio regressor within a wall-clock budget on this machine, then
caches the trained checkpoint; later runs with the same options load it and take seconds.
It prints the held-out synthetic numbers beside those on real composites and real SDSS, DESI
and MaNGA spectra, and the trust flags' rates.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="train on realistic spectra and measure on synthetic and real ones (nothing downloaded)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", default="demo_output",
                        help="folder for metrics.json, decomposition.npz and figures (default: demo_output)")
    # Defaults live in ddm_jax.demo, which imports JAX: not loaded just to build the parser.
    parser.add_argument("--budget-seconds", type=float,
                        help="wall-clock budget of the first run, training included (default: the recipe's, "
                             "300 for realistic)")
    parser.add_argument("--cache", help="folder of trained demo networks, one per setting "
                                        "(default ~/.cache/ddm-jax/demo)")
    parser.add_argument("--recipe", help="realistic (default), realistic-hour (about an hour on 2 cores), formula "
                                         "(the earlier formula-made spectra) or tiny (tests)")
    parser.add_argument("--quiet", action="store_true", help="no training progress line")
    parser.set_defaults(run=run)


def run(args) -> int:
    from ddm_jax.evaluation.demo import run_demo, summary

    given = {"budget_seconds": args.budget_seconds, "cache": args.cache, "recipe": args.recipe}
    metrics = run_demo(args.output, progress=not args.quiet, **{k: v for k, v in given.items() if v is not None})
    print(summary(metrics, args.output))
    return 0
