"""`ddm-jax demo`: train on synthetic spectra, decompose held-out composites, measure the result.

Nothing is downloaded. The first run generates a seeded synthetic library and trains the
released-size DDM and line-ratio regressor within a wall-clock budget on this machine, then
caches the trained checkpoint; later runs with the same options load it and take seconds.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="train on synthetic spectra and show a measured decomposition (nothing downloaded)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", default="demo_output",
                        help="folder for metrics.json, decomposition.npz and figures (default: demo_output)")
    # Defaults live in ddm_jax.demo, which imports JAX: not loaded just to build the parser.
    parser.add_argument("--budget-seconds", type=float,
                        help="wall-clock budget of the first run, training included (default 300)")
    parser.add_argument("--cache", help="folder of trained demo networks, one per setting "
                                        "(default ~/.cache/ddm-jax/demo)")
    parser.add_argument("--recipe", help=argparse.SUPPRESS)  # 'tiny': the test networks, for tests
    parser.add_argument("--quiet", action="store_true", help="no training progress line")
    parser.set_defaults(run=run)


def run(args) -> int:
    from ddm_jax.demo import run_demo, summary

    given = {"budget_seconds": args.budget_seconds, "cache": args.cache, "recipe": args.recipe}
    metrics = run_demo(args.output, progress=not args.quiet, **{k: v for k, v in given.items() if v is not None})
    print(summary(metrics, args.output))
    return 0
