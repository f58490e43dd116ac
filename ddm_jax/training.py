"""Training and fine-tuning of the DDM and the line-ratio regressor (optax, Orbax).

    library = synthetic_library(seed=0, n_sf=2048, n_agn=2048)
    result = train("runs/a", library, TrainConfig(steps=2000), DDMConfig.tiny(), RegressorConfig.tiny(),
                   max_seconds=300)
    export_checkpoint("weights/mine", result)

Normalisation (consistent with SPEC's preprocessing). Library spectra are scaled to unit
median in the window, so `w` is the SF share of the composite's flux there. The DDM sees
`normalize(c, mass)` of the composite `c = w SF + (1 - w) AGN`, i.e. `(c - m) / (s mass)`
with m, s the window median and std of c. The targets are the two parts under that same
affine map, `(SF - m) / (s mass)` and `(AGN - m) / (s mass)`; since w + (1 - w) = 1 the
targets recombine exactly into the input, `w sf_t + (1 - w) agn_t = x`, which is how
`decompose` reconstructs (residual = reconstruction - normalised input). The regressor
sees `center(normalize(part, mass))` of single SF or AGN spectra, as `decompose` feeds it
the predicted parts, and learns their eight `synthetic.LINE_QUANTITIES`.

Determinism: the batch and the dropout keys of step t are functions of (seed, t) only,
and the whole train state is checkpointed, so a run killed at any point and resumed from
its run directory reaches the same params as an uninterrupted run (same machine).

Run directory: `run.json` (the settings; a resume with other settings is refused),
`checkpoints/` (Orbax CheckpointManager), `metrics.jsonl` (one JSON object per logged step).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import sys
import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ddm_jax import synthetic
from ddm_jax.checkpoint import load_checkpoint, save_checkpoint
from ddm_jax.config import DDMConfig, RegressorConfig, config_from_dict, config_to_dict, norm_window_slice
from ddm_jax.errors import DDMError
from ddm_jax.io import load_npz, write_json_atomic, write_text_atomic
from ddm_jax.models import DDM, LineRatioRegressor, abstract_params
from ddm_jax.preprocess import center_batch, normalize_batch, window_median_std

N_BINS = DDMConfig().n_bins
_WINDOW = norm_window_slice(N_BINS)
DDM_LOSS_NAMES = ("sf_spectrum", "agn_spectrum", "p_sf", "p_agn", "p_total")
BATCH_AXIS = "batch"


# ----------------------------------------------------------------------------- configuration

@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """An optax optimiser and learning-rate schedule (decaying over the run's steps)."""

    name: str = "adam"  # adam | adamw | rmsprop | sgd
    learning_rate: float = 1e-3  # peak value of the schedule
    schedule: str = "warmup_cosine"  # constant | cosine | warmup_cosine
    warmup_steps: int = 50
    end_fraction: float = 0.05  # final / peak learning rate for the cosine schedules
    weight_decay: float = 0.0  # adamw only
    rmsprop_decay: float = 0.9
    momentum: float = 0.0  # rmsprop and sgd
    eps: float = 1e-8
    grad_clip_norm: float = 1.0  # 0 disables clipping


# Upstream compiled the regressor with Keras RMSprop(2e-4, rho .9, momentum .005, eps 1e-7).
UPSTREAM_REGRESSOR_OPTIMIZER = OptimizerConfig(name="rmsprop", learning_rate=2e-4, schedule="constant",
                                               warmup_steps=0, momentum=0.005, eps=1e-7, grad_clip_norm=0.0)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run. Loss weights are in `DDM_LOSS_NAMES` order (SPEC: all 1)."""

    steps: int = 2000
    batch_size: int = 64
    seed: int = 0
    ddm_optimizer: OptimizerConfig = OptimizerConfig()
    regressor_optimizer: OptimizerConfig = UPSTREAM_REGRESSOR_OPTIMIZER
    train_ddm: bool = True
    train_regressor: bool = True
    loss_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0)
    total_prob_target: float = 1.0  # Tot_Prob -> 1 ("TO_ONE"), SPEC's default
    mass_range: tuple[float, float] = (1.0, 1.0)  # composite masses ~ U(low, high)
    # The last N steps are taken with dropout off. Inference runs without dropout, and a network
    # trained briefly with it drifts in its outputs: in the demo this phase took the held-out
    # SF-fraction bias from about -0.05 to 0.00 (MAE 0.062 -> 0.036 after 60 steps).
    dropout_free_steps: int = 0
    checkpoint_every: int = 100
    log_every: int = 10
    keep_checkpoints: int = 2

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Inverse of `to_dict`; unknown keys are a DDMError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise DDMError(f"unknown training settings {sorted(unknown)}; known: {sorted(names)}")
        fields = dict(data)
        for key in ("ddm_optimizer", "regressor_optimizer"):
            if isinstance(fields.get(key), dict):
                fields[key] = OptimizerConfig(**fields[key])
        for key in ("loss_weights", "mass_range"):
            if key in fields:
                fields[key] = tuple(fields[key])
        return cls(**fields)


def validate_config(config: TrainConfig, n_devices: int) -> None:
    if config.steps < 1 or config.batch_size < 1:
        raise DDMError(f"steps and batch_size must be positive (got {config.steps}, {config.batch_size})")
    if config.batch_size % n_devices:
        raise DDMError(f"batch_size {config.batch_size} must be a multiple of the {n_devices} devices")
    if not (config.train_ddm or config.train_regressor):
        raise DDMError("nothing to train: both train_ddm and train_regressor are off")
    if len(config.loss_weights) != len(DDM_LOSS_NAMES):
        raise DDMError(f"loss_weights needs {len(DDM_LOSS_NAMES)} values {DDM_LOSS_NAMES}")
    low, high = config.mass_range
    if not 0 < low <= high:
        raise DDMError(f"mass_range must satisfy 0 < low <= high (got {config.mass_range})")
    if config.checkpoint_every < 1 or config.log_every < 1:
        raise DDMError("checkpoint_every and log_every must be positive")
    if not 0 <= config.dropout_free_steps <= config.steps:
        raise DDMError(f"dropout_free_steps must be between 0 and steps ({config.steps}), "
                       f"got {config.dropout_free_steps}")


def learning_rate_schedule(config: OptimizerConfig, total_steps: int) -> optax.Schedule:
    peak, end = config.learning_rate, config.learning_rate * config.end_fraction
    if config.schedule == "constant":
        return optax.constant_schedule(peak)
    if config.schedule == "cosine":
        return optax.cosine_decay_schedule(peak, max(total_steps, 1), alpha=config.end_fraction)
    if config.schedule == "warmup_cosine":
        warmup = min(config.warmup_steps, total_steps - 1)
        return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, max(total_steps, warmup + 1), end)
    raise DDMError(f"unknown schedule {config.schedule!r}; choose constant, cosine or warmup_cosine")


def build_optimizer(config: OptimizerConfig, total_steps: int) -> optax.GradientTransformation:
    """The optax chain: optional global-norm clipping, then the optimiser on the schedule."""
    lr = learning_rate_schedule(config, total_steps)
    momentum = config.momentum or None
    if config.name == "adam":
        optimizer = optax.adam(lr, eps=config.eps)
    elif config.name == "adamw":
        optimizer = optax.adamw(lr, eps=config.eps, weight_decay=config.weight_decay)
    elif config.name == "rmsprop":  # eps outside the square root, as Keras
        optimizer = optax.rmsprop(lr, decay=config.rmsprop_decay, eps=config.eps, eps_in_sqrt=False,
                                  momentum=momentum)
    elif config.name == "sgd":
        optimizer = optax.sgd(lr, momentum=momentum)
    else:
        raise DDMError(f"unknown optimiser {config.name!r}; choose adam, adamw, rmsprop or sgd")
    if config.grad_clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), optimizer)
    return optimizer


# ----------------------------------------------------------------------------- spectral library

class SpectralLibrary(NamedTuple):
    """SF and AGN spectra at unit window median, with optional true line quantities (N, 8)."""

    sf: jax.Array  # (N_sf, n_bins)
    agn: jax.Array  # (N_agn, n_bins)
    sf_lines: jax.Array | None = None
    agn_lines: jax.Array | None = None

    @property
    def has_lines(self) -> bool:
        return self.sf_lines is not None and self.agn_lines is not None


def _check_spectra(name: str, spectra) -> np.ndarray:
    spectra = np.asarray(spectra, dtype=np.float32)
    if spectra.ndim != 2 or spectra.shape[1] != N_BINS:
        raise DDMError(f"{name} spectra must have shape (N, {N_BINS}) on SPEC's grid, got {spectra.shape}")
    if spectra.shape[0] == 0:
        raise DDMError(f"the library has no {name} spectra: training needs both SF and AGN spectra")
    bad = ~np.isfinite(spectra).all(axis=1)
    if bad.any():
        raise DDMError(f"{name} spectra {np.flatnonzero(bad)[:5].tolist()} contain NaN or inf")
    medians = np.median(spectra[:, _WINDOW], axis=1)
    if (medians <= 0).any():
        raise DDMError(f"{name} spectra {np.flatnonzero(medians <= 0)[:5].tolist()} have a non-positive "
                       "median flux in 4000-7000 A: cannot put them on a common scale")
    return spectra / medians[:, None]


def _check_lines(name: str, lines, n: int) -> np.ndarray | None:
    if lines is None:
        return None
    lines = np.asarray(lines, dtype=np.float32)
    if lines.shape != (n, synthetic.N_LINE_QUANTITIES):
        raise DDMError(f"{name} line quantities must have shape ({n}, {synthetic.N_LINE_QUANTITIES}), "
                       f"got {lines.shape}")
    if not np.isfinite(lines).all():
        raise DDMError(f"{name} line quantities contain NaN or inf")
    return lines


def library_from_arrays(sf, agn, sf_lines=None, agn_lines=None) -> SpectralLibrary:
    """Validate user spectra (e.g. MaNGA spaxels) and scale each to unit window median."""
    sf, agn = _check_spectra("SF", sf), _check_spectra("AGN", agn)
    if (sf_lines is None) != (agn_lines is None):
        raise DDMError("give line quantities for both the SF and the AGN spectra, or for neither")
    return SpectralLibrary(jnp.asarray(sf), jnp.asarray(agn), _as_jax(_check_lines("SF", sf_lines, len(sf))),
                           _as_jax(_check_lines("AGN", agn_lines, len(agn))))


def _as_jax(array):
    return None if array is None else jnp.asarray(array)


def load_library(path) -> SpectralLibrary:
    """A library from an .npz with `sf`, `agn` (N, 2208) and optional `sf_lines`, `agn_lines` (N, 8)."""
    arrays = load_npz(path, f"spectral library (an .npz of 'sf' and 'agn' arrays (N, {N_BINS}))", ("sf", "agn"))
    return library_from_arrays(arrays["sf"], arrays["agn"], arrays.get("sf_lines"), arrays.get("agn_lines"))


def synthetic_library(seed: int = 0, n_sf: int = 2048, n_agn: int = 2048, snr: float = 30.0,
                      spread: float = 1.0) -> SpectralLibrary:
    """A library of synthetic spectra (`ddm_jax.synthetic`), a pure function of its arguments.

    `spread` < 1 narrows the parameter ranges (more homogeneous classes, an easier split)."""
    sf_key, agn_key = jax.random.split(jax.random.PRNGKey(seed))
    sf, sf_lines = synthetic.sf_spectra(sf_key, n_sf, snr, spread)
    agn, agn_lines = synthetic.agn_spectra(agn_key, n_agn, snr, spread=spread)
    return library_from_arrays(sf, agn, sf_lines, agn_lines)


def library_fingerprint(library: SpectralLibrary) -> str:
    """SHA-256 of the library's arrays: a resumed run must see the very same data."""
    digest = hashlib.sha256()
    for array in library:
        if array is not None:
            digest.update(np.ascontiguousarray(np.asarray(array)).tobytes())
    return digest.hexdigest()


# ----------------------------------------------------------------------------- batches and losses

class Batch(NamedTuple):
    """One step's data: DDM inputs and targets, and the regressor's (see module docstring)."""

    inputs: jax.Array  # (B, n_bins) normalised composites
    sf_target: jax.Array  # (B, n_bins)
    agn_target: jax.Array  # (B, n_bins)
    sf_weight: jax.Array  # (B,) true w
    regressor_inputs: jax.Array  # (B, n_bins) centred, normalised single SF or AGN spectra
    regressor_targets: jax.Array  # (B, 8) their line quantities (zeros without lines)


def normalize_example(sf, agn, sf_weight, mass):
    """The composite's normalisation applied to it and to its parts (see module docstring).

    sf, agn: (n_bins,) unit-median spectra; sf_weight, mass: (). Returns three (n_bins,).
    """
    mixed = synthetic.composite(sf, agn, sf_weight)
    offset, std = window_median_std(mixed)  # the very map `normalize(mixed, mass)` applies
    return tuple((spectrum - offset) / std / mass for spectrum in (mixed, sf, agn))


def make_batch(library: SpectralLibrary, key: jax.Array, batch_size: int,
               mass_range: tuple[float, float] = (1.0, 1.0)) -> Batch:
    """A batch of composites and regressor examples drawn from the library with `key`."""
    w_key, mass_key, pick_key, sf_key, agn_key, single_mass_key = jax.random.split(key, 6)
    sf_index = jax.random.randint(sf_key, (batch_size,), 0, library.sf.shape[0])
    agn_index = jax.random.randint(agn_key, (batch_size,), 0, library.agn.shape[0])
    w = jax.random.uniform(w_key, (batch_size,))
    mass = jax.random.uniform(mass_key, (batch_size,), minval=mass_range[0], maxval=mass_range[1])
    inputs, sf_target, agn_target = jax.vmap(normalize_example)(
        library.sf[sf_index], library.agn[agn_index], w, mass)

    use_sf = jax.random.bernoulli(pick_key, 0.5, (batch_size,))
    single = jnp.where(use_sf[:, None], library.sf[sf_index], library.agn[agn_index])
    single_mass = jax.random.uniform(single_mass_key, (batch_size,), minval=mass_range[0], maxval=mass_range[1])
    regressor_inputs = center_batch(normalize_batch(single, single_mass))
    if library.has_lines:
        targets = jnp.where(use_sf[:, None], library.sf_lines[sf_index], library.agn_lines[agn_index])
    else:
        targets = jnp.zeros((batch_size, synthetic.N_LINE_QUANTITIES), jnp.float32)
    return Batch(inputs, sf_target, agn_target, w, regressor_inputs, targets)


def step_keys(seed: int, step) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(data, DDM dropout, regressor dropout) keys of one step: a function of (seed, step) only."""
    return tuple(jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), step), 3))


def ddm_loss_terms(outputs, batch: Batch, total_prob_target: float) -> jax.Array:
    """SPEC's five MSE losses, in `DDM_LOSS_NAMES` order. Returns (5,)."""
    mse = lambda a, b: jnp.mean((a - b) ** 2)  # noqa: E731
    return jnp.stack([
        mse(outputs.sf_spectrum, batch.sf_target),
        mse(outputs.agn_spectrum, batch.agn_target),
        mse(outputs.p_sf, batch.sf_weight),
        mse(outputs.p_agn, 1.0 - batch.sf_weight),
        mse(outputs.p_total, total_prob_target),
    ])


@functools.partial(jax.jit, static_argnames=("ddm_config", "regressor_config", "total_prob_target"))
def evaluate(ddm_params, regressor_params, batch: Batch, ddm_config: DDMConfig,
             regressor_config: RegressorConfig, total_prob_target: float = 1.0) -> dict:
    """Dropout-free losses on a batch, plus the SF-fraction MAE (w = clip(SF_Prob, 0, 1))."""
    outputs = DDM(ddm_config).apply({"params": ddm_params}, batch.inputs)
    terms = ddm_loss_terms(outputs, batch, total_prob_target)
    ratios = LineRatioRegressor(regressor_config).apply({"params": regressor_params}, batch.regressor_inputs)
    metrics = {f"ddm/{name}": terms[i] for i, name in enumerate(DDM_LOSS_NAMES)}
    metrics["regressor/line_quantities"] = jnp.mean((ratios - batch.regressor_targets) ** 2)
    metrics["sf_fraction_mae"] = jnp.mean(jnp.abs(jnp.clip(outputs.p_sf, 0.0, 1.0) - batch.sf_weight))
    return metrics


# ----------------------------------------------------------------------------- the train step

def device_mesh() -> Mesh:
    """A 1-D mesh over all local devices; batches are split along it, params replicated."""
    return Mesh(np.array(jax.local_devices()), (BATCH_AXIS,))


def initial_state(ddm_params, regressor_params, ddm_optimizer, regressor_optimizer) -> dict:
    return {"step": jnp.zeros((), jnp.int32),
            "ddm": ddm_params, "ddm_opt": ddm_optimizer.init(ddm_params),
            "regressor": regressor_params, "regressor_opt": regressor_optimizer.init(regressor_params)}


@functools.lru_cache(maxsize=8)
def make_train_step(config: TrainConfig, ddm_config: DDMConfig, regressor_config: RegressorConfig, mesh: Mesh,
                    dropout: bool = True):
    """Jitted `(state, library) -> (state, metrics)`, data-parallel over `mesh`; with `dropout`
    off the networks run as at inference (see `TrainConfig.dropout_free_steps`).

    Cached, so that calls of `train` in one process (resume, chunks) compile once.
    """
    ddm_optimizer = build_optimizer(config.ddm_optimizer, config.steps)
    regressor_optimizer = build_optimizer(config.regressor_optimizer, config.steps)
    # Whole batches through the conv stacks: lax.map's backward pass is slow (models.CONV_CHUNK).
    ddm = DDM(ddm_config, conv_chunk=None)
    regressor = LineRatioRegressor(regressor_config, conv_chunk=None)
    replicated = NamedSharding(mesh, PartitionSpec())
    split_batch = NamedSharding(mesh, PartitionSpec(BATCH_AXIS))
    weights = jnp.asarray(config.loss_weights, jnp.float32)

    def ddm_loss(params, batch, key):
        outputs = ddm.apply({"params": params}, batch.inputs, deterministic=not dropout, rngs={"dropout": key})
        terms = ddm_loss_terms(outputs, batch, config.total_prob_target)
        return jnp.dot(weights, terms), terms

    def regressor_loss(params, batch, key):
        ratios = regressor.apply({"params": params}, batch.regressor_inputs, deterministic=not dropout,
                                 rngs={"dropout": key})
        return jnp.mean((ratios - batch.regressor_targets) ** 2)

    def step(state, library):
        data_key, ddm_key, regressor_key = step_keys(config.seed, state["step"])
        batch = make_batch(library, data_key, config.batch_size, config.mass_range)
        batch = jax.lax.with_sharding_constraint(batch, split_batch)
        new, metrics, total = dict(state, step=state["step"] + 1), {}, 0.0
        if config.train_ddm:
            (loss, terms), grads = jax.value_and_grad(ddm_loss, has_aux=True)(state["ddm"], batch, ddm_key)
            updates, ddm_opt = ddm_optimizer.update(grads, state["ddm_opt"], state["ddm"])
            new.update(ddm=optax.apply_updates(state["ddm"], updates), ddm_opt=ddm_opt)
            metrics.update({f"ddm/{name}": terms[i] for i, name in enumerate(DDM_LOSS_NAMES)})
            total += loss
        if config.train_regressor:
            loss, grads = jax.value_and_grad(regressor_loss)(state["regressor"], batch, regressor_key)
            updates, reg_opt = regressor_optimizer.update(grads, state["regressor_opt"], state["regressor"])
            new.update(regressor=optax.apply_updates(state["regressor"], updates), regressor_opt=reg_opt)
            metrics["regressor/line_quantities"] = loss
            total += loss
        metrics["loss"] = total  # the weighted DDM loss plus the regressor's, of what is trained
        return new, metrics

    # No buffer donation: a Ctrl-C mid-step must leave the previous state intact to checkpoint.
    return jax.jit(step, in_shardings=(replicated, replicated), out_shardings=(replicated, replicated))


# ----------------------------------------------------------------------------- run directory

class TrainResult(NamedTuple):
    ddm_params: dict
    regressor_params: dict
    ddm_config: DDMConfig
    regressor_config: RegressorConfig
    train_config: TrainConfig
    step: int  # steps done in total (resumed ones included)
    completed: bool  # step == train_config.steps
    seconds: float  # wall-clock time of this call
    samples_per_second: float  # DDM composites per second over this call's steps, compile excluded
    last_metrics: dict


def _check_run_settings(run_dir: Path, settings: dict) -> None:
    """Write run.json, or refuse to resume a run started with other settings."""
    path = run_dir / "run.json"
    settings = json.loads(json.dumps(settings))  # tuples become lists, as in the saved file
    if path.exists():
        previous = json.loads(path.read_text())
        changed = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
        if changed:
            raise DDMError(f"{run_dir} holds a run with other settings ({', '.join(changed)}): "
                           "resume it with the same settings or use a new run directory")
    else:
        write_json_atomic(path, settings)


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


LECUN_TRUNCATION = 2.0  # standard deviations, as flax's truncated-normal initialisers
LECUN_STD_CORRECTION = 0.87962566103423978  # std of a unit normal truncated to +-2


def fresh_params(model, seed: int):
    """Random params with flax's default initialisation (LeCun-normal kernels, zero biases).

    Drawn with numpy: jitting flax's `init` costs tens of seconds of XLA:CPU compilation
    (one threefry program per param), this costs milliseconds. Same distribution, other draws.
    """
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        if path[-1].key != "kernel":
            return np.zeros(leaf.shape, leaf.dtype)
        values = rng.standard_normal(leaf.shape)
        while (outside := np.abs(values) > LECUN_TRUNCATION).any():
            values[outside] = rng.standard_normal(int(outside.sum()))
        fan_in = math.prod(leaf.shape[:-1])
        return (values * (1.0 / math.sqrt(fan_in)) / LECUN_STD_CORRECTION).astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, abstract_params(model))


def _starting_params(init_from, ddm_config, regressor_config, seed):
    """Params to start from: a converted/exported checkpoint (fine-tuning) or a fresh init."""
    if init_from is None:
        ddm_config, regressor_config = ddm_config or DDMConfig(), regressor_config or RegressorConfig()
        return (fresh_params(DDM(ddm_config), seed), fresh_params(LineRatioRegressor(regressor_config), seed + 1),
                ddm_config, regressor_config)
    ddm_params, regressor_params, metadata = load_checkpoint(init_from)
    saved_ddm = config_from_dict(DDMConfig, metadata["ddm_config"])
    saved_regressor = config_from_dict(RegressorConfig, metadata["regressor_config"])
    for given, saved, what in ((ddm_config, saved_ddm, "DDM"), (regressor_config, saved_regressor, "regressor")):
        if given is not None and given != saved:
            raise DDMError(f"the {what} architecture asked for differs from the one in {init_from}")
    return ddm_params, regressor_params, saved_ddm, saved_regressor


class Progress:
    """One status line on stderr: steps/s, samples/s, ETA and the loss."""

    def __init__(self, total_steps: int, batch_size: int, enabled: bool):
        self.total, self.batch_size, self.enabled = total_steps, batch_size, enabled
        self.tty = sys.stderr.isatty()

    def show(self, step: int, steps_per_second: float, eta_seconds: float, loss: float) -> None:
        if not self.enabled:
            return
        eta = time.strftime("%H:%M:%S", time.gmtime(eta_seconds)) if math.isfinite(eta_seconds) else "?"
        line = (f"step {step}/{self.total} | {steps_per_second:.2f} steps/s "
                f"{steps_per_second * self.batch_size:.0f} samples/s | ETA {eta} | loss {loss:.4g}")
        print(f"\r{line}" if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled and self.tty:
            print(file=sys.stderr)


def train(run_dir, library: SpectralLibrary, config: TrainConfig = TrainConfig(),
          ddm_config: DDMConfig | None = None, regressor_config: RegressorConfig | None = None, *,
          init_from=None, max_seconds: float | None = None, max_new_steps: int | None = None,
          progress: bool = True) -> TrainResult:
    """Train (or resume training) in `run_dir` until `config.steps`, or earlier.

    Architectures default to the released ones, or to those of `init_from` (a checkpoint
    from `ddm-jax convert` or `export_checkpoint`) whose params start the run (fine-tuning).
    The call stops, after checkpointing, once the next step would end past `max_seconds`
    of wall-clock time (compilation included) or after `max_new_steps` steps; calling
    again with the same arguments continues. Ctrl-C checkpoints, then re-raises.
    """
    started = time.perf_counter()
    run_dir = Path(run_dir).absolute()
    mesh = device_mesh()
    validate_config(config, mesh.size)
    if config.train_regressor and not library.has_lines:
        raise DDMError("training the regressor needs the library's line quantities (sf_lines, agn_lines); "
                       "add them or switch the regressor off (train_regressor=False, --no-regressor)")
    ddm_params, regressor_params, ddm_config, regressor_config = _starting_params(
        init_from, ddm_config, regressor_config, config.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_run_settings(run_dir, {
        "train_config": config.to_dict(), "ddm_config": config_to_dict(ddm_config),
        "regressor_config": config_to_dict(regressor_config), "library_sha256": library_fingerprint(library),
        "init_from": None if init_from is None else str(Path(init_from).absolute())})

    ddm_optimizer = build_optimizer(config.ddm_optimizer, config.steps)
    regressor_optimizer = build_optimizer(config.regressor_optimizer, config.steps)
    replicated = NamedSharding(mesh, PartitionSpec())
    state = jax.device_put(initial_state(ddm_params, regressor_params, ddm_optimizer, regressor_optimizer),
                           replicated)
    library = jax.device_put(library, replicated)
    train_steps = tuple(make_train_step(config, ddm_config, regressor_config, mesh, dropout)
                        for dropout in (True, False))

    metrics_path = run_dir / "metrics.jsonl"
    manager = ocp.CheckpointManager(run_dir / "checkpoints", options=ocp.CheckpointManagerOptions(
        max_to_keep=config.keep_checkpoints, create=True, cleanup_tmp_directories=True))
    try:
        if manager.latest_step() is not None:
            state = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore(state))
        first_step = int(state["step"])
        _truncate_metrics(metrics_path, first_step)
        return _run_loop(state, library, train_steps, manager, metrics_path, config, ddm_config, regressor_config,
                         started, first_step, max_seconds, max_new_steps, progress)
    finally:
        manager.wait_until_finished()
        manager.close()


def _run_loop(state, library, train_steps, manager, metrics_path, config, ddm_config, regressor_config,
              started, first_step, max_seconds, max_new_steps, progress_enabled) -> TrainResult:
    progress = Progress(config.steps, config.batch_size, progress_enabled)
    schedules = {f"learning_rate/{name}": learning_rate_schedule(optimizer, config.steps) for name, optimizer in
                 (("ddm", config.ddm_optimizer), ("regressor", config.regressor_optimizer))}
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
                    last_metrics = _log(log, step, window, schedules, started)
                    window = []
                    rate = timed_steps / timed_seconds if timed_seconds else math.nan
                    progress.show(step, rate, _eta(step, config.steps, rate, started, max_seconds),
                                  last_metrics["loss"])
                if step % config.checkpoint_every == 0:
                    manager.save(step, args=ocp.args.StandardSave(state))
    finally:  # Ctrl-C included: keep what was done; the state knows its own step
        done = int(state["step"])
        if done > first_step and manager.latest_step() != done:
            manager.save(done, args=ocp.args.StandardSave(state), force=True)
        progress.close()
    rate = timed_steps * config.batch_size / timed_seconds if timed_seconds else math.nan
    return TrainResult(jax.device_get(state["ddm"]), jax.device_get(state["regressor"]), ddm_config,
                       regressor_config, config, step, step == config.steps, time.perf_counter() - started,
                       rate, last_metrics)


def _log(log, step, window, schedules, started) -> dict:
    """Append the mean metrics of the steps since the last record (step: the last one's count)."""
    record = {"step": step, "seconds": round(time.perf_counter() - started, 3)}
    record.update({name: float(schedule(step - 1)) for name, schedule in schedules.items()})
    record.update({key: float(np.mean([m[key] for m in window])) for key in window[0]})
    log.write(json.dumps(record) + "\n")
    log.flush()
    return record


def _eta(step, total, rate, started, max_seconds) -> float:
    eta = (total - step) / rate if rate > 0 else math.inf
    if max_seconds is not None:
        eta = min(eta, max(max_seconds - (time.perf_counter() - started), 0.0))
    return eta


def export_checkpoint(path, result: TrainResult, overwrite: bool = False) -> Path:
    """Save the trained params as a ddm-jax checkpoint (`decompose`, `--init-from` read it)."""
    metadata = {"ddm_config": config_to_dict(result.ddm_config),
                "regressor_config": config_to_dict(result.regressor_config),
                "training": {"step": result.step, "completed": result.completed,
                             "config": result.train_config.to_dict(),
                             "line_quantities": list(synthetic.LINE_QUANTITIES)}}
    return save_checkpoint(path, result.ddm_params, result.regressor_params, metadata, overwrite=overwrite)
