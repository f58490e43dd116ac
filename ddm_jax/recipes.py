"""Training recipes: the data, architecture and schedule that make a trained model, by name.

    ddm-jax train runs/r --recipe realistic        # or: recipes.train_recipe("realistic", "runs/r")
    ddm-jax demo                                   # the same recipe, cached, then `evaluate`

| recipe | data | budget | for |
|---|---|---|---|
| `realistic` | `ddm_jax.realistic` (templates, photoionisation grids, dust, survey noise) | 5 min | the demo |
| `realistic-hour` | the same, 4x the library | 1 hour | the README's longer run |
| `formula` | `ddm_jax.synthetic` (formula continua, the earlier demo) | 5 min | comparison |
| `tiny` | realistic, tiny networks | seconds | tests |

Budget: the step counts are planned from the budget with the recipe's nominal speeds (a 2-core
CPU) and `train`'s `max_seconds` caps each network's share, so a slower machine stops early
(checkpointed; the same command continues) instead of overrunning.

The exported checkpoint says what it expects (`expects`: no fibre mass, the grid, the data it was
trained on) and carries a trust calibration made on held-out spectra of the same distribution
(docs/trust.md).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ddm_jax import __version__, constants, input_pipeline, nebular, realistic, synthetic, templates, trust
from ddm_jax.checkpoint import attach_trust, load_checkpoint
from ddm_jax.config import PRESETS, OptimizerConfig, TrainConfig, config_to_dict
from ddm_jax.errors import DDMError
from ddm_jax.input_pipeline import SpectralLibrary, normalize_example, realistic_library, synthetic_library
from ddm_jax.io import load_npz, save_npz_atomic, sha256_file
from ddm_jax.prepare.lines import SNR_MIN
from ddm_jax.progress import log
from ddm_jax.train import export_checkpoint, train_networks

DDM_OPTIMIZER = OptimizerConfig(learning_rate=2e-3, warmup_steps=20)
LONG_DDM_OPTIMIZER = OptimizerConfig(learning_rate=2e-3, warmup_steps=100)
LONG_REGRESSOR_OPTIMIZER = OptimizerConfig(learning_rate=5e-4, warmup_steps=50)
REGRESSOR_OPTIMIZER = OptimizerConfig(learning_rate=5e-4, warmup_steps=10)
TINY_OPTIMIZER = OptimizerConfig(learning_rate=3e-3, warmup_steps=2)
HELD_OUT_FILE = "held_out.npz"
RUN_DIR = "runs"  # until both networks are trained
MODEL_DIR = "model"
CALIBRATION_COMPOSITES_PER_SPECTRUM = 4  # random pairs of the calibration set's SF and AGN spectra


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Everything that fixes a trained model: data, architecture, schedule and budget."""

    data: str = "realistic"  # "realistic" (ddm_jax.realistic) or "formula" (ddm_jax.synthetic)
    preset: str = "released"  # architecture (config.PRESETS)
    budget_seconds: float = 300.0
    library_seed: int = 0
    library_size: int = 2048  # SF and AGN spectra each, for training
    held_out_size: int = 256  # SF and AGN spectra each, never trained on; also the number of composites
    composite_seed: int = 1
    seyfert_fraction: float = 0.5  # realistic AGN: Seyferts, the rest LINERs
    snr: float = 30.0  # formula data only
    spread: float = 0.25  # formula data only: near-homogeneous classes (docs/model.md#training)
    ddm_batch: int = 32
    regressor_batch: int = 32
    # Spectrum losses are ~10x the probability losses at the start; the fractions are the target
    # (on realistic data, weights 10 and a peak rate of 2e-3 gave an SF-fraction MAE of 0.109 against
    # 0.115 with 10 and 1e-3, and 0.123 with 4 and 1e-3, in the same 5-minute budget: development runs,
    # on the generator before its dust and rebin fixes, not recorded).
    loss_weights: tuple[float, ...] = (1.0, 1.0, 10.0, 10.0, 1.0)
    ddm_optimizer: OptimizerConfig = DDM_OPTIMIZER
    regressor_optimizer: OptimizerConfig = REGRESSOR_OPTIMIZER
    # The last steps without dropout: they remove the SF fraction's bias (TrainConfig.dropout_free_steps).
    dropout_free_fraction: float = 0.15
    ddm_share: float = 0.75  # of the training time; the regressor costs ~2x the DDM per sample
    # Nominal speeds on a 2-core CPU, to plan the steps (measured idle at batch 32: 3.0 and 1.6 steps/s
    # on an AVX2 AMD EPYC, 6.6 and 3.4 on an AVX-512/AMX Xeon): the slower machine fits the budget.
    ddm_steps_per_second: float = 3.2
    regressor_steps_per_second: float = 1.9
    startup_seconds: float = 25.0  # per network: initial params and compiling its two train steps
    overhead_seconds: float = 45.0  # generating the library, calibration, evaluation, figures

    def plan(self, budget_seconds: float | None = None) -> dict[str, tuple[TrainConfig, float]]:
        """{network: (TrainConfig, max_seconds)}: the budget less the overhead and start-ups is
        split by `ddm_share`, and steps planned at the nominal speeds."""
        budget_seconds = self.budget_seconds if budget_seconds is None else budget_seconds
        training = budget_seconds - self.overhead_seconds - 2 * self.startup_seconds
        if training <= 0:
            raise DDMError(f"a budget of {budget_seconds:g} s leaves no time to train: this recipe needs more than "
                           f"{self.overhead_seconds + 2 * self.startup_seconds:g} s for data, compilation and "
                           "evaluation")
        shares = (self.ddm_share * training, (1 - self.ddm_share) * training)
        common = {"seed": self.library_seed, "checkpoint_every": 50, "log_every": 5, "keep_checkpoints": 1}
        ddm_steps = max(1, round(shares[0] * self.ddm_steps_per_second))
        regressor_steps = max(1, round(shares[1] * self.regressor_steps_per_second))
        ddm = TrainConfig(steps=ddm_steps, batch_size=self.ddm_batch, optimizer=self.ddm_optimizer,
                          loss_weights=self.loss_weights,
                          dropout_free_steps=round(self.dropout_free_fraction * ddm_steps), **common)
        regressor = TrainConfig(steps=regressor_steps, batch_size=self.regressor_batch,
                                optimizer=self.regressor_optimizer,
                                dropout_free_steps=round(self.dropout_free_fraction * regressor_steps), **common)
        return {"ddm": (ddm, self.startup_seconds + shares[0]),
                "regressor": (regressor, self.startup_seconds + shares[1])}


RECIPES = {
    "realistic": Recipe(),
    # About an hour on 2 cores: 4x the library, batches of 64, ~21x the demo's DDM samples.
    "realistic-hour": Recipe(budget_seconds=3600.0, library_size=8192, ddm_batch=64, regressor_batch=64,
                             ddm_optimizer=LONG_DDM_OPTIMIZER, regressor_optimizer=LONG_REGRESSOR_OPTIMIZER,
                             ddm_steps_per_second=2.0, regressor_steps_per_second=1.0, overhead_seconds=120.0),
    "formula": Recipe(data="formula", library_size=512, loss_weights=(1.0, 1.0, 4.0, 4.0, 1.0),
                      ddm_optimizer=OptimizerConfig(learning_rate=1e-3, warmup_steps=20),
                      ddm_steps_per_second=2.5, regressor_steps_per_second=1.4, overhead_seconds=30.0),
    # The tiny networks, for tests: the whole pipeline in seconds (not a real decomposition).
    "tiny": Recipe(preset="tiny", budget_seconds=300.0, library_size=64, held_out_size=16, ddm_batch=8,
                   regressor_batch=8, ddm_optimizer=TINY_OPTIMIZER, regressor_optimizer=TINY_OPTIMIZER,
                   ddm_steps_per_second=1.0, regressor_steps_per_second=1.0, startup_seconds=120.0,
                   overhead_seconds=0.0),
}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise DDMError(f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}")
    return RECIPES[name]


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


def expects(recipe: Recipe) -> dict:
    """What a model trained by `recipe` expects of its inputs (checkpoint metadata)."""
    described = {"realistic": "ddm_jax.realistic: BC03 populations, NebulaBayes HII/NLR line grids, dust, "
                              "survey-like noise (docs/realistic.md)",
                 "formula": "ddm_jax.synthetic: formula continua and line ratios"}
    return {"needs_mass": False, "grid": "rest-frame vacuum, 3700 + 2 i A, 2208 bins",
            "normalisation": "(x - median) / std over 4000 < lambda <= 7000 A, mass 1",
            "trained_on": described[recipe.data], "line_snr_min": SNR_MIN}


# ----------------------------------------------------------------------------- data

def make_library(recipe: Recipe) -> tuple[SpectralLibrary, SpectralLibrary, SpectralLibrary]:
    """(training, held-out, calibration) libraries: one seeded draw split in three, so one compilation
    serves all; the trust thresholds are set on spectra the evaluation never sees."""
    n = recipe.library_size + 2 * recipe.held_out_size
    if recipe.data == "realistic":
        library = realistic_library(recipe.library_seed, n, n, recipe.seyfert_fraction)
    elif recipe.data == "formula":
        library = synthetic_library(recipe.library_seed, n, n, recipe.snr, recipe.spread)
    else:
        raise DDMError(f"unknown recipe data {recipe.data!r}: 'realistic' or 'formula'")
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
        arrays["ivar"] = trust.composite_ivar(np.asarray(held_out.sf_ivar[sf_index]),
                                              np.asarray(held_out.agn_ivar[agn_index]), np.asarray(w))
    return {key: np.asarray(value) for key, value in arrays.items()}


# ----------------------------------------------------------------------------- training

def train_recipe(name: str, run_dir, budget_seconds: float | None = None, progress: bool = True) -> dict:
    """Train (or resume, or load) recipe `name` in `run_dir`; the model goes to `run_dir/model`.

    Returns {"model": path or None while unfinished, "info": training info, "held_out": composites,
    "params": (ddm, regressor) params, "configs": (ddm, regressor) configs}.
    The same call with the same settings continues an interrupted run, and loads a finished one.
    """
    recipe = get_recipe(name)
    budget_seconds = recipe.budget_seconds if budget_seconds is None else budget_seconds
    if not budget_seconds > 0:
        raise DDMError(f"the budget must be a positive number of seconds, got {budget_seconds}")
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
    calibration = trust.calibrate_from_library(ddm.params, ddm.model_config, calibration_set, n_calibration,
                                               seed=recipe.composite_seed + 1)
    export_checkpoint(model, results, overwrite=True, extra={"recipe": info, "expects": expects(recipe)})
    attach_trust(model, calibration)
    save_npz_atomic(run_dir / HELD_OUT_FILE, data)  # its presence marks a finished run
    shutil.rmtree(run_dir / RUN_DIR)  # optimiser states and all: hundreds of MB the model supersedes
    return {**trained, "model": model}


def _finite(value: float) -> float | None:
    """Rounded, or None (JSON null) where no speed was measured (fewer than two steps)."""
    return round(value, 1) if np.isfinite(value) else None
