"""The demo and the bundled example: the tool at work with nothing downloaded.

`run_example` converts the committed tiny Keras-written weight files (random weights) and
decomposes the bundled example spectra: a smoke test of the install, in seconds.

`run_demo` is a real, measured decomposition: it trains the released-size DDM and line-ratio
regressor by a recipe (`ddm_jax.recipes`, default `realistic`: spectra built from real stellar
populations and photoionisation grids) within a wall-clock budget, caches the checkpoint, and
runs `ddm_jax.evaluate` on it: held-out synthetic composites, real composites, the committed real
spectra and out-of-domain inputs, side by side. The real spectra's decompositions also go into a
FITS catalogue and an HTML report.

    metrics = run_demo("demo_output", budget_seconds=300)
    metrics["synthetic"]["sf_fraction_mae"], metrics["real_composites"]["mae"]

The cache key is a digest of everything that determines the trained params, so a second run
with the same options only loads the checkpoint; an unfinished run continues.
"""

from __future__ import annotations

import os
import time
from importlib import resources
from pathlib import Path

import jax

from ddm_jax.errors import InputError, OutputExistsError
from ddm_jax.evaluation.evaluate import evaluate, write_evaluation
from ddm_jax.evaluation.real_eval import load_real_set
from ddm_jax.inference.decomposer import Decomposer
from ddm_jax.inference.streaming import carried_keys
from ddm_jax.io.checkpoint import convert_to_checkpoint
from ddm_jax.io.outputs.base import output_arrays
from ddm_jax.io.outputs.files import write_output
from ddm_jax.io.safe import load_npz, save_npz_atomic
from ddm_jax.progress import log
from ddm_jax.report.html import write_report
from ddm_jax.report.plotting import fraction_figure, plot_decomposition, save_png
from ddm_jax.training.recipes import get_recipe
from ddm_jax.training.workflow import fingerprint, train_recipe

RANDOM_WEIGHTS_NOTICE = (
    "NOTE: these weights are RANDOM (a tiny test network written by Keras, bundled with ddm-jax).\n"
    "The numbers below show the pipeline working end to end; they are NOT a real decomposition.\n"
    "For science, download the released weights (see weights/README.md) and run `ddm-jax convert`.")

DEFAULT_RECIPE = "realistic"
REAL_CATALOGUE, REPORT = "real_spectra.fits", "report.html"  # the demo's real spectra: catalogue and page
TRAINING_ROUNDS = 3  # budgets demo_checkpoint gives a training run that a busy machine slows
DEFAULT_CACHE = Path.home() / ".cache" / "ddm-jax" / "demo"


def cached_run(cache, recipe: str, budget_seconds: float | None) -> tuple[float, Path]:
    """The budget (the recipe's unless given) and the cache folder of a demo training run."""
    chosen = get_recipe(recipe)
    budget_seconds = chosen.budget_seconds if budget_seconds is None else budget_seconds
    if not budget_seconds > 0:
        raise InputError(f"the budget must be a positive number of seconds, got {budget_seconds}")
    return budget_seconds, Path(cache) / fingerprint(chosen, budget_seconds)


def run_demo(output_dir, budget_seconds: float | None = None, cache=DEFAULT_CACHE, recipe: str = DEFAULT_RECIPE,
             progress: bool = True) -> dict:
    """Train (or load from `cache`) by `recipe`, evaluate, write DIR/metrics.json,
    DIR/decomposition.npz (the held-out synthetic composites), DIR/evaluation.npz and figures.
    Returns the metrics."""
    started = time.perf_counter()
    budget_seconds, run_dir = cached_run(cache, recipe, budget_seconds)
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise OutputExistsError(f"{output_dir} exists and is not a folder")
    load_average = os.getloadavg()[0]
    trained = train_recipe(recipe, run_dir, budget_seconds, progress)
    if trained["model"] is not None:
        decomposer = Decomposer.from_checkpoint(trained["model"])
    else:  # unfinished: the networks as they are, uncalibrated (nothing trusted)
        decomposer = Decomposer(*trained["params"], *trained["configs"], needs_mass=False)
    data = trained["held_out"]
    metrics, arrays = evaluate(decomposer, data, recipe=recipe)
    device = jax.devices()[0]
    metrics.update({
        "training": trained["info"], "recipe": recipe,
        "device": f"{device.platform}: {device.device_kind} x{jax.device_count()}", "cpu_count": os.cpu_count(),
        "load_average_at_start": round(load_average, 2),
        "checkpoint": None if trained["model"] is None else str(Path(trained["model"]).absolute()),
        "total_seconds": round(time.perf_counter() - started, 1)})
    out = arrays["synthetic_out"]
    held_out = {"wavelength": decomposer.wavelength, **out,
                **{key: value for key, value in data.items() if key.startswith("true_")}}
    save_npz_atomic(output_dir / "decomposition.npz", held_out)
    plot_decomposition(held_out, output_dir)
    save_png(fraction_figure(data, out), output_dir / "sf_fraction.png")
    real_catalogue = write_output(output_dir / REAL_CATALOGUE, output_arrays(
        decomposer, arrays["real_out"], carried_keys(load_real_set()), command="demo",
        input="the committed real spectra (ddm_jax/data/real_eval.npz)", normalize=True))
    write_report(real_catalogue, output_dir / REPORT, n_spectra=metrics["real_spectra"]["n"],
                 title="ddm-jax demo: the committed real spectra")
    write_evaluation(output_dir, metrics, arrays)  # metrics.json last: its presence means the rest is whole
    return metrics



def demo_checkpoint(cache=DEFAULT_CACHE, recipe: str = DEFAULT_RECIPE, budget_seconds: float | None = None,
                    progress: bool = True) -> Path:
    """The demo's trained checkpoint (the one `ddm-jax demo` makes): loaded from `cache` if that run
    was made before, else trained now by `recipe` (about 2.5 min on 2 CPU cores). A busy machine may
    reach the budget before the planned steps: the run then continues, up to TRAINING_ROUNDS budgets."""
    budget_seconds, run_dir = cached_run(cache, recipe, budget_seconds)
    for _ in range(TRAINING_ROUNDS):
        trained = train_recipe(recipe, run_dir, budget_seconds, progress)
        if trained["model"] is not None:
            return Path(trained["model"])
        log(f"the training reached its {budget_seconds:.0f} s budget before its planned steps; continuing it")
    raise InputError(f"the demo training did not finish in {TRAINING_ROUNDS} budgets of {budget_seconds:.0f} s; "
                     f"call again to continue it ({run_dir})")


def summary(metrics: dict, output_dir) -> str:
    """A few lines for people: how the networks came to be, then `evaluate.summary`."""
    from ddm_jax.evaluation.evaluate import summary as evaluation_summary

    info = metrics["training"]
    source = "loaded from the cache" if info.get("from_cache") else "trained now"
    state = "" if info["training_completed"] else " (unfinished: run again to continue)"
    lines = [
        (f"networks ({metrics['recipe']} recipe) {source}: {info['ddm_steps']} DDM and {info['regressor_steps']} "
         f"regressor steps in {info['training_seconds']:.0f} s of training{state} on {metrics['device']}"),
        evaluation_summary(metrics),
        f"wrote {output_dir}/metrics.json, decomposition.npz, evaluation.npz, figures, {REAL_CATALOGUE} (the "
        f"real spectra's FITS catalogue) and {REPORT} (their page) ({metrics['total_seconds']:.0f} s in all)",
    ]
    if metrics["checkpoint"]:
        lines.append(f"checkpoint (`ddm-jax decompose --weights`, `ddm-jax evaluate`): {metrics['checkpoint']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the bundled example

def bundled(name: str) -> Path:
    """A file of the package's data folder."""
    return Path(str(resources.files("ddm_jax") / "data" / name))


def run_example(output_dir) -> str:
    """Convert the bundled tiny Keras files into `output_dir/checkpoint`, decompose the bundled
    spectra into `output_dir/decomposition.npz`; returns a table of the results for people."""
    from ddm_jax.model.bpt import CLASS_NAMES

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
