"""`ddm-jax evaluate CHECKPOINT`: held-out synthetic composites, real composites, real spectra and
out-of-domain inputs, side by side with the targets (ddm_jax.evaluate)."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="measure a checkpoint on synthetic and real spectra (and out-of-domain inputs)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint folder (`ddm-jax convert`, `train` or the demo's)")
    parser.add_argument("-o", "--output", default="evaluation",
                        help="folder for metrics.json, evaluation.npz and evaluation.png (default: evaluation)")
    parser.add_argument("--recipe", help="whose held-out synthetic set to use (default: the checkpoint's own "
                                         "recipe, or 'realistic' for converted weights)")
    parser.set_defaults(run=run)


def run(args) -> int:
    from ddm_jax.evaluation.evaluate import evaluate_checkpoint, summary

    metrics = evaluate_checkpoint(args.checkpoint, args.output, args.recipe)
    print(summary(metrics))
    print(f"wrote {args.output}/metrics.json, evaluation.npz and evaluation.png")
    return 0
