"""The training recipes against the issue's targets: train each recipe from scratch in a fresh
run directory, evaluate it (`ddm_jax.evaluate`: held-out synthetic composites, real composites,
real spectra, out-of-domain inputs), and record what each run reached beside the targets, with
the machine, its load and the time generation and training took.

    python -m benchmarks.recipes --recipe realistic
    python -m benchmarks.recipes --recipe realistic-hour

Writes benchmarks/results/recipe-<name>.json and .md. Data generation is timed on its own
(spectra/s) beside training (samples/s): the library is generated once, before training, so it
must take a small share of the budget.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import tempfile
import time
from pathlib import Path

from benchmarks.prepare_speed import RESULTS, cpu_description
from ddm_jax.io.safe import write_json_atomic, write_text_atomic


def time_generation(count: int = 2048) -> dict:
    """Realistic spectra per second, compiled first (one SF and one AGN batch of `count` each)."""
    import jax

    from ddm_jax.training import realistic

    # compile first, at the timed sizes (the batch size is a static argument: another size compiles again)
    jax.block_until_ready(realistic.galaxies(jax.random.PRNGKey(0), count, "sf"))
    jax.block_until_ready(realistic.agn_galaxies(jax.random.PRNGKey(1), count))
    started = time.perf_counter()
    jax.block_until_ready(realistic.galaxies(jax.random.PRNGKey(2), count, "sf"))
    jax.block_until_ready(realistic.agn_galaxies(jax.random.PRNGKey(3), count))
    seconds = time.perf_counter() - started
    return {"spectra": 2 * count, "seconds": round(seconds, 2), "spectra_per_second": round(2 * count / seconds, 1)}


def run_recipe(name: str, run_dir: Path) -> dict:
    import jax

    from ddm_jax.evaluation.evaluate import evaluate
    from ddm_jax.inference.decomposer import Decomposer
    from ddm_jax.io.checkpoint import load_trust
    from ddm_jax.training.recipes import get_recipe
    from ddm_jax.training.workflow import train_recipe

    load = os.getloadavg()[0]
    started = time.perf_counter()
    trained = train_recipe(name, run_dir, progress=False)
    wall = time.perf_counter() - started
    if trained["model"] is None:
        decomposer = Decomposer(*trained["params"], *trained["configs"], needs_mass=False)
    else:
        decomposer = Decomposer.from_checkpoint(trained["model"])
    started = time.perf_counter()
    metrics, _ = evaluate(decomposer, trained["held_out"], recipe=name)
    evaluate_seconds = time.perf_counter() - started
    calibration = None if trained["model"] is None else load_trust(trained["model"])
    device = jax.devices()[0]
    recipe = get_recipe(name)
    return {"recipe": name, "budget_seconds": recipe.budget_seconds, "library_size": recipe.library_size,
            "batch_sizes": [recipe.ddm_batch, recipe.regressor_batch], "dtype": "float32",
            "training": trained["info"], "train_recipe_wall_seconds": round(wall, 1),
            "evaluate_seconds": round(evaluate_seconds, 1), "metrics": metrics,
            "trust_false_alarm_rate": None if calibration is None else float(calibration.false_alarm_rate),
            "device": f"{device.platform}: {device.device_kind}", "cpu": cpu_description(),
            "load_average_at_start": round(load, 2), "jax": importlib.metadata.version("jax"),
            "generation": time_generation()}


def markdown(result: dict) -> str:
    metrics, training = result["metrics"], result["training"]
    cpu = result["cpu"]
    lines = [
        f"# Recipe `{result['recipe']}`", "",
        f"CPU: {cpu.get('model', '?')} ({cpu.get('cpu_count')} cores; {', '.join(cpu.get('isa', []))}); "
        f"{result['device']}; {result['dtype']}; load average at start {result['load_average_at_start']}.", "",
        f"Training: {training['ddm_steps']} DDM steps and {training['regressor_steps']} regressor steps "
        f"(batches {result['batch_sizes'][0]} and {result['batch_sizes'][1]}) in {training['training_seconds']} s "
        f"({training['ddm_samples_per_second']} and {training['regressor_samples_per_second']} samples/s); "
        f"train_recipe in all {result['train_recipe_wall_seconds']} s of a {result['budget_seconds']:g} s budget; "
        f"completed: {training['training_completed']}; evaluation {result['evaluate_seconds']} s; trust "
        f"calibration's false-alarm rate on its held-out test spectra: {result['trust_false_alarm_rate']}.",
        f"Data generation: {result['generation']['spectra_per_second']} realistic spectra/s "
        f"({result['generation']['spectra']} in {result['generation']['seconds']} s).", "",
        "| target | goal | reached | met |", "|---|---|---|---|",
    ]
    for row in metrics["targets"]:
        value = "n/a" if row["value"] is None else f"{row['value']:.3f}"
        lines.append(f"| {row['metric']} | {row['target']} | {value} | {row['met']} |")
    trust = metrics["trust"]
    lines += ["", "Out-of-domain inputs not trusted: " + ", ".join(
        f"{kind} {100 * value:.0f} %" for kind, value in trust["ood_untrusted_by_kind"].items()),
        f"Real spectra trusted: {metrics['real_spectra']['trusted']} of {metrics['real_spectra']['n']}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", action="append", required=True, help="recipe name (repeatable)")
    parser.add_argument("--run-dir", help="keep the run here (default: a temporary folder)")
    args = parser.parse_args()
    for name in args.recipe:
        with tempfile.TemporaryDirectory() as scratch:
            run_dir = Path(args.run_dir) / name if args.run_dir else Path(scratch) / name
            result = run_recipe(name, run_dir)
        write_json_atomic(RESULTS / f"recipe-{name}.json", result)
        write_text_atomic(RESULTS / f"recipe-{name}.md", markdown(result))
        print(markdown(result))


if __name__ == "__main__":
    main()
