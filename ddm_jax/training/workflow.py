"""Training by a named recipe (`recipes`): `train_recipe` draws the libraries (`make_library`),
trains or resumes both networks, calibrates trust on held-out spectra and exports a checkpoint that
says what it expects; `fingerprint` is the cache key of what it trains."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ddm_jax import __version__, constants
from ddm_jax.astro import nebular, templates
from ddm_jax.config import PRESETS, config_to_dict
from ddm_jax.errors import InputError
from ddm_jax.io.checkpoint import load_checkpoint
from ddm_jax.io.safe import load_npz, save_npz_atomic, sha256_file
from ddm_jax.progress import log
from ddm_jax.training import input_pipeline, realistic, synthetic
from ddm_jax.training.calibrate import calibrate_from_library, composite_ivar
from ddm_jax.training.input_pipeline import SpectralLibrary, normalize_example, realistic_library, synthetic_library
from ddm_jax.training.recipes import Recipe, expects, get_recipe
from ddm_jax.training.train import export_checkpoint, train_networks

HELD_OUT_FILE = "held_out.npz"
RUN_DIR = "runs"  # until both networks are trained
MODEL_DIR = "model"
CALIBRATION_COMPOSITES_PER_SPECTRUM = 4  # random pairs of the calibration set's SF and AGN spectra


def fingerprint(recipe: Recipe, budget_seconds: float) -> str:
    """Digest of what determines the trained params: a cache key."""
    (ddm, _), (regressor, _) = recipe.plan(budget_seconds).values()
    ddm_config, regressor_config = PRESETS[recipe.preset]
    generators = ((realistic, nebular, templates, constants, input_pipeline) if recipe.data == "realistic"
                  else (synthetic, constants, input_pipeline))
    tables = [nebular.data_path(), templates.data_dir() / "templates_bc03.npz"] if recipe.data == "realistic" else []
    key = {"version": __version__, "recipe": dataclasses.asdict(recipe), "ddm_train": config_to_dict(ddm),
           # the generator's code: a changed library must not load networks trained on the old one
           "generator": [hashlib.sha256(Path(module.__file__).read_bytes()).hexdigest() for module in generators],
           "tables": [sha256_file(path) for path in tables],  # the stellar and nebular data files
           "regressor_train": config_to_dict(regressor), "ddm_config": config_to_dict(ddm_config),
           "regressor_config": config_to_dict(regressor_config)}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def make_library(recipe: Recipe) -> tuple[SpectralLibrary, SpectralLibrary, SpectralLibrary]:
    """(training, held-out, calibration) libraries: one seeded draw split in three, so one compilation
    serves all; the trust thresholds are set on spectra the evaluation never sees."""
    n = recipe.library_size + 2 * recipe.held_out_size
    if recipe.data == "realistic":
        library = realistic_library(recipe.library_seed, n, n, recipe.seyfert_fraction)
    elif recipe.data == "formula":
        library = synthetic_library(recipe.library_seed, n, n, recipe.snr, recipe.spread)
    else:
        raise InputError(f"unknown recipe data {recipe.data!r}: 'realistic' or 'formula'")
    train = slice(None, recipe.library_size)
    held = slice(recipe.library_size, recipe.library_size + recipe.held_out_size)
    calibration = slice(recipe.library_size + recipe.held_out_size, None)
    return library.rows(train, train), library.rows(held, held), library.rows(calibration, calibration)


def held_out_composites(recipe: Recipe, held_out: SpectralLibrary) -> dict[str, np.ndarray]:
    """Composites of held-out spectra with w ~ U(0, 1), their ivar where the library has one, and
    their true parts in normalised units."""
    composites, w, sf_index, agn_index = synthetic.random_composites(
        jax.random.PRNGKey(recipe.composite_seed), held_out.sf, held_out.agn, recipe.held_out_size)
    mass = jnp.ones_like(w)  # the training composites' mass (TrainConfig.mass_range)
    _, sf_true, agn_true = jax.vmap(normalize_example)(held_out.sf[sf_index], held_out.agn[agn_index], w, mass)
    lines = jnp.stack([held_out.sf_lines[sf_index], held_out.agn_lines[agn_index]], axis=1)  # (n, 2, 8)
    arrays = {"composite": composites, "mass": mass, "true_sf_fraction": w, "true_sf_spectrum": sf_true,
              "true_agn_spectrum": agn_true, "true_line_ratios": lines}
    if held_out.has_ivar:
        arrays["ivar"] = composite_ivar(np.asarray(held_out.sf_ivar[sf_index]),
                                        np.asarray(held_out.agn_ivar[agn_index]), np.asarray(w))
    return {key: np.asarray(value) for key, value in arrays.items()}


def train_recipe(name: str, run_dir, budget_seconds: float | None = None, progress: bool = True) -> dict:
    """Train (or resume, or load) recipe `name` in `run_dir`; the model goes to `run_dir/model`.

    Returns {"model": path or None while unfinished, "info": training info, "held_out": composites,
    "params": (ddm, regressor) params, "configs": (ddm, regressor) configs}.
    The same call with the same settings continues an interrupted run, and loads a finished one.
    """
    recipe = get_recipe(name)
    budget_seconds = recipe.budget_seconds if budget_seconds is None else budget_seconds
    if not budget_seconds > 0:
        raise InputError(f"the budget must be a positive number of seconds, got {budget_seconds}")
    run_dir = Path(run_dir)
    model = run_dir / MODEL_DIR
    configs = PRESETS[recipe.preset]
    if model.is_dir() and (run_dir / HELD_OUT_FILE).is_file():
        log(f"loading the trained networks from {model}")
        ddm_params, regressor_params, metadata = load_checkpoint(model)
        return {"model": model, "info": {**metadata["recipe"], "from_cache": True}, "configs": configs,
                "params": (ddm_params, regressor_params),
                "held_out": load_npz(run_dir / HELD_OUT_FILE, "held-out set", ("composite", "mass"))}

    log(f"generating {recipe.library_size} + 2 x {recipe.held_out_size} {recipe.data} SF and AGN spectra")
    library, held_out, calibration_set = make_library(recipe)
    data = held_out_composites(recipe, held_out)
    plan = recipe.plan(budget_seconds)
    for network, (config, max_seconds) in plan.items():
        log(f"training the {recipe.preset}-size {network}: {config.steps} steps of {config.batch_size}, "
            f"at most {max_seconds:.0f} s")
    results = train_networks(run_dir / RUN_DIR, library._replace(sf_ivar=None, agn_ivar=None),  # training reads no ivar
                             {network: config for network, (config, _) in plan.items()},
                             *configs, max_seconds={network: s for network, (_, s) in plan.items()},
                             progress=progress)
    ddm, regressor = results["ddm"], results["regressor"]
    info = {"recipe": name, "data": recipe.data, "budget_seconds": budget_seconds,
            "training_seconds": round(ddm.seconds + regressor.seconds, 1),
            "ddm_steps": ddm.step, "regressor_steps": regressor.step,
            "ddm_samples_per_second": _finite(ddm.samples_per_second),
            "regressor_samples_per_second": _finite(regressor.samples_per_second),
            "training_completed": ddm.completed and regressor.completed}
    trained = {"model": None, "info": {**info, "from_cache": False}, "held_out": data, "configs": configs,
               "params": (ddm.params, regressor.params)}
    if not info["training_completed"]:
        log("the budget ran out before training finished (checkpointed): run the same command again to continue")
        return trained
    n_calibration = CALIBRATION_COMPOSITES_PER_SPECTRUM * recipe.held_out_size
    log(f"calibrating trust on {n_calibration} composites of a second held-out set")
    calibration = calibrate_from_library(ddm.params, ddm.model_config, calibration_set, n_calibration,
                                         seed=recipe.composite_seed + 1)
    export_checkpoint(model, results, overwrite=True, extra={"recipe": info, "expects": expects(recipe)},
                      trust=calibration)
    save_npz_atomic(run_dir / HELD_OUT_FILE, data)  # its presence marks a finished run
    shutil.rmtree(run_dir / RUN_DIR)  # optimiser states and all: hundreds of MB the model supersedes
    return {**trained, "model": model}


def _finite(value: float) -> float | None:
    """Rounded, or None (JSON null) where no speed was measured (fewer than two steps)."""
    return round(value, 1) if np.isfinite(value) else None
