"""`ddm-jax train`: train or fine-tune the DDM and the regressor; rerun to resume."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ddm_jax.config import PRESETS
from ddm_jax.errors import InputError


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train or fine-tune the DDM (and regressor) on SF and AGN spectra",
        description="Train on composites w*SF + (1-w)*AGN of a spectral library (synthetic unless --library). "
                    "RUN_DIR/ddm and RUN_DIR/regressor keep each network's checkpoints and metrics.jsonl: the same "
                    "command resumes an interrupted run. "
                    "The trained networks are exported as a checkpoint (RUN_DIR/model unless --output).")
    parser.add_argument("run_dir", help="run directory (created; reused to resume)")
    parser.add_argument("--recipe", help="train by a named recipe (ddm_jax.recipes: realistic, realistic-hour, "
                                         "formula, tiny): its data, networks, schedule and budget, a trust "
                                         "calibration, RUN_DIR/model; excludes the options below but "
                                         "--budget-seconds and --quiet")
    parser.add_argument("--budget-seconds", type=float, help="with --recipe: its wall-clock budget (default the "
                                                              "recipe's)")
    parser.add_argument("--library", help=".npz with 'sf' and 'agn' (N, 2208) spectra and optional "
                                          "'sf_lines', 'agn_lines' (N, 8) line quantities")
    parser.add_argument("--synthetic", type=int, default=2048, metavar="N",
                        help="without --library: N synthetic SF and N AGN spectra (default 2048)")
    parser.add_argument("--snr", type=float, default=30.0, help="S/N per bin of synthetic spectra (default 30)")
    parser.add_argument("--spread", type=float, default=1.0,
                        help="range of the synthetic spectra's parameters, 0-1 (default 1; small: near-homogeneous)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="released",
                        help="architecture when not fine-tuning (default: released)")
    parser.add_argument("--init-from", help="checkpoint to fine-tune (from `ddm-jax convert` or a previous run)")
    parser.add_argument("--config", help="JSON file of training settings (TrainConfig fields), for each network "
                                         "trained")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float, help="peak learning rate of the DDM's optimiser")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--dropout-free-steps", type=int, metavar="N",
                        help="take the last N steps with dropout off (calibrates the outputs for inference)")
    parser.add_argument("--no-regressor", action="store_true", help="train the DDM only")
    parser.add_argument("--regressor-only", action="store_true",
                        help="train the regressor only (e.g. with --init-from a trained DDM)")
    parser.add_argument("--max-seconds", type=float, help="stop (checkpointed) after this much wall-clock time")
    parser.add_argument("-o", "--output", help="exported checkpoint (default: RUN_DIR/model, replaced)")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.set_defaults(run=run)
    parser.set_defaults(option_defaults=vars(parser.parse_args(["RUN_DIR"])))  # to tell which options were given


# What --recipe leaves to the user; it fixes every other option.
RECIPE_OPTIONS = ("run_dir", "recipe", "budget_seconds", "quiet", "run")


def _given(args, names) -> list[str]:
    """The options among `names` given other than their defaults, as they are spelled."""
    return [f"--{name.replace('_', '-')}" for name in names if getattr(args, name) != args.option_defaults[name]]


def _train_configs(args) -> dict:
    """{network: TrainConfig} of the networks to train, from --config and the options."""
    from ddm_jax.config import TrainConfig, config_from_dict

    config = TrainConfig()
    if args.config:
        try:
            config = config_from_dict(TrainConfig, json.loads(Path(args.config).read_text()))
        except (OSError, json.JSONDecodeError, TypeError) as err:
            raise InputError(f"cannot read training settings from {args.config}: {err}") from err
    overrides = {"steps": args.steps, "batch_size": args.batch_size, "seed": args.seed,
                 "dropout_free_steps": args.dropout_free_steps}
    config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
    networks = [n for n, off in (("ddm", args.regressor_only), ("regressor", args.no_regressor)) if not off]
    if not networks:
        raise InputError("nothing to train: --no-regressor and --regressor-only exclude each other")
    configs = {network: config for network in networks}
    if args.learning_rate is not None and "ddm" in configs:
        configs["ddm"] = dataclasses.replace(config, optimizer=dataclasses.replace(
            config.optimizer_for("ddm"), learning_rate=args.learning_rate))
    return configs


def run_recipe(args) -> int:
    from ddm_jax.training.workflow import train_recipe

    given = _given(args, [name for name in args.option_defaults if name not in RECIPE_OPTIONS])
    if given:
        raise InputError(f"--recipe fixes the data and the schedule: drop {', '.join(given)}")
    trained = train_recipe(args.recipe, args.run_dir, args.budget_seconds, progress=not args.quiet)
    if trained["model"] is None:
        print("stopped early (budget); rerun the same command to continue")
        return 0
    print(f"checkpoint -> {trained['model']} (evaluate it: ddm-jax evaluate {trained['model']})")
    return 0


def run(args) -> int:
    from ddm_jax.training.input_pipeline import load_library, synthetic_library

    if args.recipe:
        return run_recipe(args)
    if args.budget_seconds is not None:
        raise InputError("--budget-seconds applies to --recipe; without one, --max-seconds bounds the training")
    from ddm_jax.training.train import export_checkpoint, train_networks

    configs = _train_configs(args)
    seed = next(iter(configs.values())).seed
    if args.library:
        library = load_library(args.library)
    else:
        library = synthetic_library(seed, args.synthetic, args.synthetic, args.snr, args.spread)
    ddm_config, regressor_config = (None, None) if args.init_from else PRESETS[args.preset]
    results = train_networks(args.run_dir, library, configs, ddm_config, regressor_config, init_from=args.init_from,
                             max_seconds=args.max_seconds, progress=not args.quiet)
    output = Path(args.output) if args.output else Path(args.run_dir) / "model"
    export_checkpoint(output, results, overwrite=True)
    for network in configs:
        result = results[network]
        state = "done" if result.completed else "stopped early; rerun the same command to continue"
        print(f"{network}: step {result.step}/{result.train_config.steps} ({state}); "
              f"{result.samples_per_second:.0f} samples/s")
    print(f"checkpoint -> {output}")
    return 0
