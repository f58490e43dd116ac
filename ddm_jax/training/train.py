"""Training and fine-tuning, one network per call (optax, Orbax), resumable at any point.

    library = synthetic_library(seed=0, n_sf=2048, n_agn=2048)
    ddm = train("runs/a/ddm", "ddm", library, TrainConfig(steps=2000), DDMConfig.tiny(), max_seconds=300)
    both = train_networks("runs/b", library, {"ddm": TrainConfig(), "regressor": TrainConfig()})
    export_checkpoint("weights/mine", both)

The two networks share no gradients: the DDM learns to decompose composites, the regressor
the line quantities of single spectra (`input_pipeline`).

Determinism: the batch and the dropout key of step t are functions of (seed, t) only, and
the whole train state is checkpointed, so a run killed at any point and resumed from its run
directory reaches the same params as an uninterrupted run (same machine).

Run directory (one per network): `run.json` (the settings; a resume with other settings is
refused), `checkpoints/` (Orbax CheckpointManager), `metrics.jsonl` (one JSON object per
logged step).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding, PartitionSpec

from ddm_jax.batching import device_mesh
from ddm_jax.config import NETWORKS, DDMConfig, RegressorConfig, TrainConfig, config_from_dict, config_to_dict
from ddm_jax.constants import LINE_QUANTITIES
from ddm_jax.errors import InputError
from ddm_jax.io.checkpoint import load_checkpoint, save_checkpoint
from ddm_jax.io.safe import changed_settings, write_json_atomic, write_text_atomic
from ddm_jax.model.models import fresh_params
from ddm_jax.model.scoring import TrustCalibration
from ddm_jax.progress import Progress
from ddm_jax.training.input_pipeline import SpectralLibrary, library_fingerprint
from ddm_jax.training.optimizers import build_optimizer, learning_rate_schedule
from ddm_jax.training.train_step import MODELS, initial_state, make_train_step

DEFAULT_CONFIGS = {"ddm": DDMConfig, "regressor": RegressorConfig}


class TrainResult(NamedTuple):
    network: str
    params: dict
    model_config: DDMConfig | RegressorConfig
    train_config: TrainConfig | None  # None: not trained (the starting params, e.g. --no-regressor)
    step: int  # steps done in total (resumed ones included)
    completed: bool  # step == train_config.steps
    seconds: float  # wall-clock time of this call
    samples_per_second: float  # examples per second over this call's steps, compile excluded
    last_metrics: dict


def _check_network(network: str) -> None:
    if network not in NETWORKS:
        raise InputError(f"unknown network {network!r}; choose one of {NETWORKS}")


def starting_params(network: str, seed: int, model_config=None, init_from=None):
    """(params, model config) to start from: a converted/exported checkpoint's (fine-tuning),
    or a fresh initialisation (the DDM from `seed`, the regressor from `seed + 1`)."""
    _check_network(network)
    if init_from is None:
        model_config = model_config or DEFAULT_CONFIGS[network]()
        return fresh_params(MODELS[network](model_config), seed + NETWORKS.index(network)), model_config
    ddm_params, regressor_params, metadata = load_checkpoint(init_from)
    saved = config_from_dict(DEFAULT_CONFIGS[network], metadata[f"{network}_config"])
    if model_config is not None and model_config != saved:
        raise InputError(f"the {network} architecture asked for differs from the one in {init_from}")
    return {"ddm": ddm_params, "regressor": regressor_params}[network], saved


def _check_run_settings(run_dir: Path, settings: dict) -> None:
    """Write run.json, or refuse to resume a run started with other settings."""
    path = run_dir / "run.json"
    if not path.exists():
        write_json_atomic(path, settings)
    elif changed := changed_settings(path, settings):
        raise InputError(f"{run_dir} holds a run with other settings ({', '.join(changed)}): "
                         "resume it with the same settings or use a new run directory")


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Keep the metrics lines up to the restored step; drop the rest and any torn last line."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("step", math.inf) <= last_step:
            kept.append(line)
    write_text_atomic(path, "".join(f"{line}\n" for line in kept))


def train(run_dir, network: str, library: SpectralLibrary, config: TrainConfig = TrainConfig(),
          model_config: DDMConfig | RegressorConfig | None = None, *, init_from=None,
          max_seconds: float | None = None, max_new_steps: int | None = None,
          progress: bool = True) -> TrainResult:
    """Train (or resume training) `network` ('ddm' or 'regressor') in `run_dir` until
    `config.steps`, or earlier.

    The architecture defaults to the released one, or to that of `init_from` (a checkpoint
    from `ddm-jax convert` or `export_checkpoint`) whose params start the run (fine-tuning).
    The call stops, after checkpointing, once the next step would end past `max_seconds`
    of wall-clock time (compilation included) or after `max_new_steps` steps; calling
    again with the same arguments continues. Ctrl-C checkpoints, then re-raises.
    """
    started = time.perf_counter()
    _check_network(network)
    run_dir = Path(run_dir).absolute()
    mesh = device_mesh()
    config.validate(mesh.size)
    if network == "regressor" and not library.has_lines:
        raise InputError("training the regressor needs the library's line quantities (sf_lines, agn_lines); "
                         "add them or train the DDM only (--no-regressor)")
    params, model_config = starting_params(network, config.seed, model_config, init_from)
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_run_settings(run_dir, json.loads(json.dumps({
        "network": network, "train_config": config_to_dict(config), "model_config": config_to_dict(model_config),
        "library_sha256": library_fingerprint(library),
        "init_from": None if init_from is None else str(Path(init_from).absolute())})))

    replicated = NamedSharding(mesh, PartitionSpec())
    optimizer = build_optimizer(config.optimizer_for(network), config.steps)
    state = jax.device_put(initial_state(params, optimizer), replicated)
    library = jax.device_put(library, replicated)
    train_steps = tuple(make_train_step(network, config, model_config, mesh, dropout) for dropout in (True, False))

    metrics_path = run_dir / "metrics.jsonl"
    manager = ocp.CheckpointManager(run_dir / "checkpoints", options=ocp.CheckpointManagerOptions(
        max_to_keep=config.keep_checkpoints, create=True, cleanup_tmp_directories=True))
    try:
        if manager.latest_step() is not None:
            state = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore(state))
        first_step = int(state["step"])
        _truncate_metrics(metrics_path, first_step)
        params, step, rate, last_metrics = _run_loop(state, library, train_steps, manager, metrics_path, network,
                                                     config, started, first_step, max_seconds, max_new_steps, progress)
    finally:
        manager.wait_until_finished()
        manager.close()
    return TrainResult(network, jax.device_get(params), model_config, config, step, step == config.steps,
                       time.perf_counter() - started, rate, last_metrics)


def _run_loop(state, library, train_steps, manager, metrics_path, network, config, started, first_step,
              max_seconds, max_new_steps, progress_enabled):
    """Steps until done, stopped or out of time; returns (params, steps done, samples/s, last metrics)."""
    progress = Progress(f"train {network}", unit="steps", interval=0.0, enabled=progress_enabled)
    schedule = learning_rate_schedule(config.optimizer_for(network), config.steps)
    step, step_seconds, timed_steps, timed_seconds = first_step, 0.0, 0, 0.0
    last_metrics, window = {}, []
    stop_at = config.steps if max_new_steps is None else min(config.steps, first_step + max_new_steps)
    dropout_free_from = config.steps - config.dropout_free_steps
    try:
        with metrics_path.open("a") as log:
            while step < stop_at:
                next_step_seconds = timed_seconds / timed_steps if timed_steps else step_seconds
                if max_seconds is not None and time.perf_counter() - started + next_step_seconds > max_seconds:
                    break
                tick = time.perf_counter()
                state, metrics = train_steps[step >= dropout_free_from](state, library)
                metrics = jax.device_get(metrics)  # waits for the step: honest timing and budget
                step_seconds = time.perf_counter() - tick
                if step not in (first_step, dropout_free_from):  # these steps include compilation
                    timed_steps, timed_seconds = timed_steps + 1, timed_seconds + step_seconds
                step += 1
                window.append(metrics)
                if step % config.log_every == 0 or step == stop_at:
                    last_metrics = _log(log, step, window, schedule, started)
                    window = []
                    rate = timed_steps / timed_seconds if timed_seconds else math.nan
                    progress(step, config.steps, rate=rate, eta=_eta(step, config.steps, rate, started, max_seconds),
                             note=f", {rate * config.batch_size:.0f} samples/s, loss {last_metrics['loss']:.4g}")
                if step % config.checkpoint_every == 0:
                    manager.save(step, args=ocp.args.StandardSave(state))
    finally:  # Ctrl-C included: keep what was done; the state knows its own step
        done = int(state["step"])
        if done > first_step and manager.latest_step() != done:
            manager.save(done, args=ocp.args.StandardSave(state), force=True)
        progress.close()
    rate = timed_steps * config.batch_size / timed_seconds if timed_seconds else math.nan
    return state["params"], step, rate, last_metrics


def _log(log, step, window, schedule, started) -> dict:
    """Append the mean metrics of the steps since the last record (step: the last one's count)."""
    record = {"step": step, "seconds": round(time.perf_counter() - started, 3),
              "learning_rate": float(schedule(step - 1))}
    record.update({key: float(np.mean([m[key] for m in window])) for key in window[0]})
    log.write(json.dumps(record) + "\n")
    log.flush()
    return record


def _eta(step, total, rate, started, max_seconds) -> float:
    eta = (total - step) / rate if rate > 0 else math.inf
    if max_seconds is not None:
        eta = min(eta, max(max_seconds - (time.perf_counter() - started), 0.0))
    return eta


def train_networks(run_dir, library: SpectralLibrary, configs: Mapping[str, TrainConfig],
                   ddm_config: DDMConfig | None = None, regressor_config: RegressorConfig | None = None, *,
                   init_from=None, max_seconds: float | Mapping[str, float] | None = None,
                   progress: bool = True) -> dict[str, TrainResult]:
    """Train the networks named in `configs`, the DDM first, each in `run_dir/<network>`;
    the others keep their starting params (fresh, or `init_from`'s).

    `max_seconds`: one budget for all (each network gets what the ones before left), or one
    per network. Returns a TrainResult per network, for `export_checkpoint`.
    """
    started, results = time.perf_counter(), {}
    model_configs = {"ddm": ddm_config, "regressor": regressor_config}
    for network in NETWORKS:
        if network not in configs:
            params, model_config = starting_params(network, 0, model_configs[network], init_from)
            results[network] = TrainResult(network, params, model_config, None, 0, True, 0.0, math.nan, {})
            continue
        budget = max_seconds.get(network) if isinstance(max_seconds, Mapping) else max_seconds
        if budget is not None and not isinstance(max_seconds, Mapping):
            budget -= time.perf_counter() - started
        results[network] = train(Path(run_dir) / network, network, library, configs[network], model_configs[network],
                                 init_from=init_from, max_seconds=budget, progress=progress)
    return results


def export_checkpoint(path, results: Mapping[str, TrainResult], overwrite: bool = False,
                      extra: dict | None = None, trust: TrustCalibration | None = None) -> Path:
    """Save both networks' params as a ddm-jax checkpoint (`decompose` and `--init-from` read it),
    with how each was trained, `extra` metadata and the `trust` calibration, in one atomic write."""
    training = {network: None if r.train_config is None else
                {"step": r.step, "completed": r.completed, "config": config_to_dict(r.train_config)}
                for network, r in results.items()}
    metadata = {"ddm_config": config_to_dict(results["ddm"].model_config),
                "regressor_config": config_to_dict(results["regressor"].model_config),
                "training": {**training, "line_quantities": list(LINE_QUANTITIES)}, **(extra or {})}
    return save_checkpoint(path, results["ddm"].params, results["regressor"].params, metadata, overwrite=overwrite,
                           trust=trust)
