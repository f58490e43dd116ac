"""`ddm-jax calibrate`: fit a checkpoint's trust calibration (docs/trust.md) on composites of a library."""

from __future__ import annotations

from ddm_jax.training.calibrate import DEFAULT_COMPONENTS, DEFAULT_QUANTILE, DEFAULT_SAMPLES


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "calibrate", help="fit the trust calibration (ood_score and chi2 thresholds) of a checkpoint",
        description="Calibrate the trust outputs of CHECKPOINT on random composites w*SF + (1-w)*AGN, w ~ U(0,1), "
                    "of an in-domain library (held out from training), and store the calibration in the checkpoint "
                    "(added, or replacing the one there). See docs/trust.md.")
    parser.add_argument("checkpoint", help="checkpoint directory (ddm-jax convert / train)")
    parser.add_argument("--library", required=True,
                        help="LIB.npz with 'sf' and 'agn' (N, 2208) arrays, optionally 'sf_ivar' and 'agn_ivar' "
                             "of the same shapes (then reconstruction_chi2 gets a threshold too)")
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES,
                        help=f"composites drawn (half fit, a quarter set thresholds, a quarter measure the "
                             f"false-alarm rate; default {DEFAULT_SAMPLES})")
    parser.add_argument("--quantile", type=float, default=DEFAULT_QUANTILE,
                        help=f"in-domain quantile of each threshold (default {DEFAULT_QUANTILE})")
    parser.add_argument("--components", type=int, default=DEFAULT_COMPONENTS,
                        help=f"PCA components of the features and inputs (default {DEFAULT_COMPONENTS})")
    parser.add_argument("--mass", type=float, nargs=2, metavar=("LOW", "HIGH"),
                        help="composite masses ~ U(LOW, HIGH) in the checkpoint's mass convention; needed for "
                             "a checkpoint that needs a mass (converted weights: log10 M_sun, e.g. 9.5 11), "
                             "ones otherwise")
    parser.add_argument("--seed", type=int, default=0, help="seed of the composites and of the split")
    parser.set_defaults(run=run)


def run(args) -> int:
    from ddm_jax.training.calibrate import calibrate_checkpoint

    calibration = calibrate_checkpoint(args.checkpoint, args.library, args.samples, args.seed,
                                       quantile=args.quantile, components=args.components, mass_range=args.mass)
    print(f"calibrated {args.checkpoint}: ood_score threshold {float(calibration.ood_threshold):.4g}, "
          f"chi2 threshold {float(calibration.chi2_threshold):.4g}, in-domain false-alarm rate "
          f"{float(calibration.false_alarm_rate):.2%} on {int(calibration.counts[2])} held-out composites")
    return 0
