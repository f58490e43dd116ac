"""The demo and the bundled example: the tool at work with nothing downloaded.

`run_example` converts the committed tiny Keras-written weight files (random weights) and
decomposes the bundled example spectra: a smoke test of the install, in seconds.

`run_demo` is a real, measured decomposition:
Trains the released-size DDM and line-ratio regressor on a seeded synthetic library within a
wall-clock budget, caches the trained checkpoint, decomposes held-out composites with the
real `Decomposer` and scores the recovered parts against the true ones.

    metrics = run_demo("demo_output", budget_seconds=300)
    metrics["sf_fraction_mae"]

Budget: the step counts are planned from the budget with the recipe's nominal speeds (a
2-core CPU) and `train`'s `max_seconds` caps each network's share, so a slower machine stops
early (checkpointed; the next run with the same options continues) instead of overrunning.
The cache key is a digest of everything that determines the trained params, so a second run
with the same options only loads the checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from importlib import resources
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ddm_jax import __version__, bpt, constants, synthetic
from ddm_jax.checkpoint import convert_to_checkpoint, load_checkpoint
from ddm_jax.config import PRESETS, OptimizerConfig, TrainConfig, config_to_dict
from ddm_jax.constants import NII_HA, OIII_HB
from ddm_jax.errors import DDMError
from ddm_jax.inference import Decomposer
from ddm_jax.input_pipeline import SpectralLibrary, normalize_example, synthetic_library
from ddm_jax.io import load_npz, save_npz_atomic, write_json_atomic
from ddm_jax.plotting import fraction_figure, plot_decomposition, save_png
from ddm_jax.progress import log
from ddm_jax.train import export_checkpoint, train_networks

RANDOM_WEIGHTS_NOTICE = (
    "NOTE: these weights are RANDOM (a tiny test network written by Keras, bundled with ddm-jax).\n"
    "The numbers below show the pipeline working end to end; they are NOT a real decomposition.\n"
    "For science, download the released weights (see weights/README.md) and run `ddm-jax convert`.")

DEFAULT_BUDGET_SECONDS = 300.0
DEFAULT_CACHE = Path.home() / ".cache" / "ddm-jax" / "demo"
HELD_OUT_FILE = "held_out.npz"
RUN_DIR = "runs"  # in the cache, until both networks are trained
DDM_OPTIMIZER = OptimizerConfig(learning_rate=1e-3, warmup_steps=20)
REGRESSOR_OPTIMIZER = OptimizerConfig(learning_rate=5e-4, warmup_steps=10)
TINY_OPTIMIZER = OptimizerConfig(learning_rate=3e-3, warmup_steps=2)


@dataclasses.dataclass(frozen=True)
class DemoRecipe:
    """Everything but the budget that fixes the demo's data, training and evaluation."""

    preset: str = "released"  # architecture (config.PRESETS)
    library_seed: int = 0
    library_size: int = 512  # SF and AGN spectra each, for training: 512^2 pairs, ample for minutes
    held_out_size: int = 256  # SF and AGN spectra each, never trained on; also the number of composites
    composite_seed: int = 1
    snr: float = 30.0
    spread: float = 0.25  # near-homogeneous classes, as upstream's training recipe (docs/model.md#training)
    ddm_batch: int = 32
    regressor_batch: int = 32
    # Spectrum losses are ~10x the probability losses at the start; the fractions are the demo's target.
    loss_weights: tuple[float, ...] = (1.0, 1.0, 4.0, 4.0, 1.0)
    ddm_optimizer: OptimizerConfig = DDM_OPTIMIZER
    regressor_optimizer: OptimizerConfig = REGRESSOR_OPTIMIZER
    # The last steps without dropout: they remove the SF fraction's bias (TrainConfig.dropout_free_steps).
    dropout_free_fraction: float = 0.15
    ddm_share: float = 0.75  # of the training time; the regressor costs ~2x the DDM per sample
    # Nominal speeds on a 2-core CPU, to plan the steps (measured idle: 2.85 and 1.65 steps/s).
    ddm_steps_per_second: float = 2.5
    regressor_steps_per_second: float = 1.4
    startup_seconds: float = 25.0  # per network: initial params and compiling its two train steps
    overhead_seconds: float = 30.0  # generating the library, evaluation, figures

    def plan(self, budget_seconds: float) -> dict[str, tuple[TrainConfig, float]]:
        """{network: (TrainConfig, max_seconds)}: the budget less the overhead and start-ups is
        split by `ddm_share`, and steps planned at the nominal speeds."""
        training = budget_seconds - self.overhead_seconds - 2 * self.startup_seconds
        if training <= 0:
            raise DDMError(f"a budget of {budget_seconds:g} s leaves no time to train: the demo needs more than "
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
    "released": DemoRecipe(),
    # The tiny networks, for tests: the whole pipeline in seconds (not a real decomposition).
    "tiny": DemoRecipe(preset="tiny", library_size=64, held_out_size=16, ddm_batch=8, regressor_batch=8,
                       ddm_optimizer=TINY_OPTIMIZER, regressor_optimizer=TINY_OPTIMIZER,
                       ddm_steps_per_second=1.0, regressor_steps_per_second=1.0, startup_seconds=120.0,
                       overhead_seconds=0.0),
}


def fingerprint(recipe: DemoRecipe, budget_seconds: float) -> str:
    """Digest of what determines the trained params: the cache key."""
    (ddm, _), (regressor, _) = recipe.plan(budget_seconds).values()
    ddm_config, regressor_config = PRESETS[recipe.preset]
    key = {"version": __version__, "recipe": dataclasses.asdict(recipe), "ddm_train": config_to_dict(ddm),
           # the generator's code: a changed synthetic library must not load networks trained on the old one
           "synthetic": [hashlib.sha256(Path(module.__file__).read_bytes()).hexdigest()
                         for module in (synthetic, constants)],
           "regressor_train": config_to_dict(regressor), "ddm_config": config_to_dict(ddm_config),
           "regressor_config": config_to_dict(regressor_config)}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- data

def make_library(recipe: DemoRecipe) -> tuple[SpectralLibrary, SpectralLibrary]:
    """(training, held-out) libraries: one seeded draw split in two, so one compilation serves both."""
    n = recipe.library_size + recipe.held_out_size
    library = synthetic_library(recipe.library_seed, n, n, recipe.snr, recipe.spread)
    split = recipe.library_size
    return (SpectralLibrary(*(array[:split] for array in library)),
            SpectralLibrary(*(array[split:] for array in library)))


def held_out_composites(recipe: DemoRecipe, held_out: SpectralLibrary) -> dict[str, np.ndarray]:
    """Composites of held-out spectra with w ~ U(0, 1), and their true parts in normalised units."""
    composites, w, sf_index, agn_index = synthetic.random_composites(
        jax.random.PRNGKey(recipe.composite_seed), held_out.sf, held_out.agn, recipe.held_out_size)
    mass = jnp.ones_like(w)  # the training composites' mass (TrainConfig.mass_range)
    _, sf_true, agn_true = jax.vmap(normalize_example)(held_out.sf[sf_index], held_out.agn[agn_index], w, mass)
    lines = jnp.stack([held_out.sf_lines[sf_index], held_out.agn_lines[agn_index]], axis=1)  # (n, 2, 8)
    arrays = {"composite": composites, "mass": mass, "true_sf_fraction": w, "true_sf_spectrum": sf_true,
              "true_agn_spectrum": agn_true, "true_line_ratios": lines}
    return {key: np.asarray(value) for key, value in arrays.items()}


# ----------------------------------------------------------------------------- training and cache

def train_demo_networks(recipe: DemoRecipe, budget_seconds: float, cache_dir: Path, library: SpectralLibrary,
                        progress: bool) -> tuple[dict, dict]:
    """Train (or resume) the DDM, then the regressor, each within its share of the budget.

    Returns (TrainResults by network, training info).
    """
    plan = recipe.plan(budget_seconds)
    for network, (config, max_seconds) in plan.items():
        log(f"training the {recipe.preset}-size {network}: {config.steps} steps of {config.batch_size}, "
            f"at most {max_seconds:.0f} s")
    results = train_networks(cache_dir / RUN_DIR, library, {network: config for network, (config, _) in plan.items()},
                             *PRESETS[recipe.preset], max_seconds={network: s for network, (_, s) in plan.items()},
                             progress=progress)
    ddm, regressor = results["ddm"], results["regressor"]
    info = {"training_seconds": round(ddm.seconds + regressor.seconds, 1),
            "ddm_steps": ddm.step, "regressor_steps": regressor.step,
            "ddm_samples_per_second": _finite(ddm.samples_per_second),
            "regressor_samples_per_second": _finite(regressor.samples_per_second),
            "training_completed": ddm.completed and regressor.completed}
    return results, info


def _finite(value: float) -> float | None:
    """Rounded, or None (JSON null) where no speed was measured (fewer than two steps)."""
    return round(value, 1) if np.isfinite(value) else None


def load_model(cache_dir: Path):
    """(params, training info) of a completed earlier run, or None."""
    if not (cache_dir / "model").is_dir() or not (cache_dir / HELD_OUT_FILE).is_file():
        return None
    ddm_params, regressor_params, metadata = load_checkpoint(cache_dir / "model")
    return (ddm_params, regressor_params), metadata["demo"]


def load_held_out(cache_dir: Path) -> dict[str, np.ndarray]:
    return load_npz(cache_dir / HELD_OUT_FILE, "demo held-out set", ("composite", "mass"))


# ----------------------------------------------------------------------------- evaluation

def score(data: dict[str, np.ndarray], out: dict[str, np.ndarray]) -> dict:
    """The recovered fractions, spectra and [NII]-BPT classes against the true ones."""
    def rmse(a, b):
        return float(np.sqrt(np.mean((a - b) ** 2)))

    true_lines = data["true_line_ratios"]  # (n, 2, 8): SF part, AGN part
    true_class = np.asarray(bpt.classify_nii(true_lines[..., NII_HA], true_lines[..., OIII_HB]))
    recovered_class = out["bpt_class"][:, 1:]  # axis 1: composite, SF part, AGN part
    recovered_lines = out["line_ratios"][:, 1:, [NII_HA, OIII_HB]]
    error = np.abs(out["sf_fraction"] - data["true_sf_fraction"])
    return {
        "sf_fraction_mae": float(error.mean()),
        "sf_fraction_mae_constant_guess": float(np.abs(0.5 - data["true_sf_fraction"]).mean()),
        "sf_spectrum_rmse": rmse(out["sf_spectrum"], data["true_sf_spectrum"]),
        "agn_spectrum_rmse": rmse(out["agn_spectrum"], data["true_agn_spectrum"]),
        "sf_bpt_accuracy": float((recovered_class[:, 0] == true_class[:, 0]).mean()),
        "agn_bpt_accuracy": float((recovered_class[:, 1] == true_class[:, 1]).mean()),
        "sf_line_ratio_mae": float(np.abs(recovered_lines[:, 0] - true_lines[:, 0, [NII_HA, OIII_HB]]).mean()),
        "agn_line_ratio_mae": float(np.abs(recovered_lines[:, 1] - true_lines[:, 1, [NII_HA, OIII_HB]]).mean()),
        "n_held_out": int(error.size),
    }


def write_outputs(output_dir: Path, data: dict, out: dict, wavelength: np.ndarray, metrics: dict) -> None:
    """decomposition.npz, the figures, then metrics.json: each file atomic, metrics.json last,
    so its presence means the rest is whole."""
    arrays = {"wavelength": wavelength, **out, **{k: v for k, v in data.items() if k.startswith("true_")}}
    save_npz_atomic(output_dir / "decomposition.npz", arrays)
    plot_decomposition(arrays, output_dir)
    save_png(fraction_figure(data, out), output_dir / "sf_fraction.png")
    write_json_atomic(output_dir / "metrics.json", metrics)


# ----------------------------------------------------------------------------- the whole demo

def run_demo(output_dir, budget_seconds: float = DEFAULT_BUDGET_SECONDS, cache=DEFAULT_CACHE,
             recipe: str = "released", progress: bool = True) -> dict:
    """Train (or load from `cache`), decompose held-out composites, write DIR/metrics.json,
    DIR/decomposition.npz and figures. Returns the metrics."""
    started = time.perf_counter()
    if recipe not in RECIPES:
        raise DDMError(f"unknown demo recipe {recipe!r}; choose one of {sorted(RECIPES)}")
    if not budget_seconds > 0:
        raise DDMError(f"the budget must be a positive number of seconds, got {budget_seconds}")
    chosen = RECIPES[recipe]
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise DDMError(f"{output_dir} exists and is not a folder")
    cache_dir = Path(cache) / fingerprint(chosen, budget_seconds)
    load_average = os.getloadavg()[0]

    cached = load_model(cache_dir)
    if cached is None:
        params, info, data = _train_fresh(chosen, budget_seconds, cache_dir, progress)
    else:
        log(f"loading the trained networks from {cache_dir}")
        (params, info), data = cached, load_held_out(cache_dir)

    ddm_config, regressor_config = PRESETS[chosen.preset]
    decomposer = Decomposer(*params, ddm_config, regressor_config)
    log(f"decomposing {len(data['composite'])} held-out composites")
    out = decomposer(data["composite"], data["mass"])
    device = jax.devices()[0]
    metrics = {**score(data, out), **info, "from_cache": cached is not None, "budget_seconds": budget_seconds,
               "recipe": recipe, "device": f"{device.platform}: {device.device_kind} x{jax.device_count()}",
               "cpu_count": os.cpu_count(), "load_average_at_start": round(load_average, 2),
               "checkpoint": str((cache_dir / "model").absolute()) if info["training_completed"] else None,
               "total_seconds": round(time.perf_counter() - started, 1)}
    write_outputs(output_dir, data, out, decomposer.wavelength, metrics)
    return metrics


def _train_fresh(recipe: DemoRecipe, budget_seconds: float, cache_dir: Path, progress: bool):
    """Generate the data, train within the budget; cache the model and held-out set once complete."""
    log(f"generating {recipe.library_size} + {recipe.held_out_size} synthetic SF and AGN spectra")
    library, held_out = make_library(recipe)
    data = held_out_composites(recipe, held_out)
    results, info = train_demo_networks(recipe, budget_seconds, cache_dir, library, progress)
    if info["training_completed"]:
        save_npz_atomic(cache_dir / HELD_OUT_FILE, data)
        # its presence marks a complete cache
        export_checkpoint(cache_dir / "model", results, overwrite=True, extra={"demo": info})
        shutil.rmtree(cache_dir / RUN_DIR)  # optimiser states and all: hundreds of MB the model supersedes
    else:
        log("the budget ran out before training finished (checkpointed): run again to continue")
    return (results["ddm"].params, results["regressor"].params), info, data


def summary(metrics: dict, output_dir) -> str:
    """A few lines for people."""
    source = "loaded from the cache" if metrics["from_cache"] else "trained now"
    state = "" if metrics["training_completed"] else " (unfinished: run again to continue)"
    lines = [
        (f"networks {source}: {metrics['ddm_steps']} DDM and {metrics['regressor_steps']} regressor steps in "
         f"{metrics['training_seconds']:.0f} s of training{state} on {metrics['device']}"),
        f"held-out composites: {metrics['n_held_out']}",
        (f"  SF fraction MAE   {metrics['sf_fraction_mae']:.3f}  "
         f"(guessing 0.5: {metrics['sf_fraction_mae_constant_guess']:.3f})"),
        (f"  SF spectrum RMSE  {metrics['sf_spectrum_rmse']:.3f}   "
         f"AGN spectrum RMSE {metrics['agn_spectrum_rmse']:.3f}  (normalised units)"),
        (f"  [NII]-BPT class of the SF part right {100 * metrics['sf_bpt_accuracy']:.0f}%, "
         f"of the AGN part {100 * metrics['agn_bpt_accuracy']:.0f}%"),
        f"wrote {output_dir}/metrics.json, decomposition.npz and figures ({metrics['total_seconds']:.0f} s in all)",
    ]
    if metrics["checkpoint"]:
        lines.append("checkpoint (`ddm-jax decompose --weights`; trained on synthetic spectra): "
                     f"{metrics['checkpoint']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the bundled example

def bundled(name: str) -> Path:
    """A file of the package's data folder."""
    return Path(str(resources.files("ddm_jax") / "data" / name))


def run_example(output_dir) -> str:
    """Convert the bundled tiny Keras files into `output_dir/checkpoint`, decompose the bundled
    spectra into `output_dir/decomposition.npz`; returns a table of the results for people."""
    from ddm_jax.bpt import CLASS_NAMES

    output_dir = Path(output_dir)
    checkpoint = output_dir / "checkpoint"
    convert_to_checkpoint([bundled("tiny_ddm_keras.hdf5"), bundled("tiny_regressor_keras.hdf5")], checkpoint,
                          overwrite=True)
    examples = load_npz(bundled("example_spectra.npz"), "example spectra", ("flux", "mass", "label"))
    decomposer = Decomposer.from_checkpoint(checkpoint)
    result = decomposer(examples["flux"], examples["mass"])
    output = save_npz_atomic(output_dir / "decomposition.npz", {"wavelength": decomposer.wavelength, **result})
    lines = [f"converted the bundled Keras files -> {checkpoint}", "",
             f"{'spectrum':28s} {'p_sf':>7s} {'p_agn':>7s} {'SF frac':>7s}  BPT class (composite / SF part / AGN part)"]
    for i, label in enumerate(examples["label"]):
        classes = " / ".join(CLASS_NAMES[int(c)] for c in result["bpt_class"][i])
        lines.append(f"{str(label):28s} {result['p_sf'][i]:7.3f} {result['p_agn'][i]:7.3f} "
                     f"{result['sf_fraction'][i]:7.3f}  {classes}")
    lines += ["", f"wrote {output} (keys: {', '.join(['wavelength', *result])})"]
    return "\n".join(lines)
