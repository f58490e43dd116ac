"""The losses, the jitted data-parallel train step and the evaluation of one network.

The DDM learns its five outputs with mean-squared errors (docs/model.md#training); the
regressor the eight line quantities. A step's data and dropout keys are functions of
(seed, step) only, so a resumed run repeats an uninterrupted one exactly.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ddm_jax.batching import BATCH_AXIS
from ddm_jax.config import DDM_LOSS_NAMES, NETWORKS, DDMConfig, RegressorConfig, TrainConfig
from ddm_jax.model.models import DDM, LineRatioRegressor
from ddm_jax.training.input_pipeline import MAKE_BATCH, DDMBatch, RegressorBatch
from ddm_jax.training.optimizers import build_optimizer

MODELS = {"ddm": DDM, "regressor": LineRatioRegressor}


def step_keys(seed: int, step) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(data, DDM dropout, regressor dropout) keys of one step: a function of (seed, step) only."""
    return tuple(jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), step), 3))


def ddm_loss_terms(outputs, batch: DDMBatch, total_prob_target: float) -> jax.Array:
    """The five MSE losses, in `DDM_LOSS_NAMES` order. Returns (5,)."""
    def mse(a, b):
        return jnp.mean((a - b) ** 2)

    return jnp.stack([
        mse(outputs.sf_spectrum, batch.sf_target),
        mse(outputs.agn_spectrum, batch.agn_target),
        mse(outputs.p_sf, batch.sf_weight),
        mse(outputs.p_agn, 1.0 - batch.sf_weight),
        mse(outputs.p_total, total_prob_target),
    ])


def ddm_loss(model: nn.Module, params, batch: DDMBatch, key, deterministic: bool, config: TrainConfig):
    """(weighted loss, metrics) of a DDM batch."""
    outputs = model.apply({"params": params}, batch.inputs, deterministic=deterministic, rngs={"dropout": key})
    terms = ddm_loss_terms(outputs, batch, config.total_prob_target)
    loss = jnp.dot(jnp.asarray(config.loss_weights, jnp.float32), terms)
    metrics = {f"ddm/{name}": terms[i] for i, name in enumerate(DDM_LOSS_NAMES)}
    metrics["sf_fraction_mae"] = jnp.mean(jnp.abs(jnp.clip(outputs.p_sf, 0.0, 1.0) - batch.sf_weight))
    return loss, metrics


def regressor_loss(model: nn.Module, params, batch: RegressorBatch, key, deterministic: bool, config: TrainConfig):
    """(loss, metrics) of a regressor batch: the MSE over the eight line quantities."""
    ratios = model.apply({"params": params}, batch.inputs, deterministic=deterministic, rngs={"dropout": key})
    loss = jnp.mean((ratios - batch.targets) ** 2)
    return loss, {"regressor/line_quantities": loss}


LOSSES = {"ddm": ddm_loss, "regressor": regressor_loss}


@functools.partial(jax.jit, static_argnames=("network", "model_config", "config"))
def evaluate(network: str, params, batch, model_config: DDMConfig | RegressorConfig,
             config: TrainConfig = TrainConfig()) -> dict:
    """Dropout-free metrics of one network on a batch (for the DDM, the SF-fraction MAE too)."""
    model = MODELS[network](model_config)
    return LOSSES[network](model, params, batch, jax.random.PRNGKey(0), True, config)[1]


def initial_state(params, optimizer: optax.GradientTransformation) -> dict:
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt": optimizer.init(params)}


@functools.lru_cache(maxsize=8)
def make_train_step(network: str, config: TrainConfig, model_config, mesh: Mesh, dropout: bool = True):
    """Jitted `(state, library) -> (state, metrics)` of `network`, data-parallel over `mesh`;
    with `dropout` off the network runs as at inference (`TrainConfig.dropout_free_steps`).

    Cached, so that calls of `train` in one process (resume, chunks) compile once.
    """
    optimizer = build_optimizer(config.optimizer_for(network), config.steps)
    # Whole batches through the conv stacks: lax.map's backward pass is slow (models.CONV_CHUNK).
    model = MODELS[network](model_config, conv_chunk=None)
    loss_function = functools.partial(LOSSES[network], model, deterministic=not dropout, config=config)
    replicated = NamedSharding(mesh, PartitionSpec())
    split_batch = NamedSharding(mesh, PartitionSpec(BATCH_AXIS))
    dropout_key_index = 1 + NETWORKS.index(network)

    def step(state, library):
        keys = step_keys(config.seed, state["step"])
        batch = MAKE_BATCH[network](library, keys[0], config.batch_size, config.mass_range)
        batch = jax.lax.with_sharding_constraint(batch, split_batch)
        (loss, metrics), grads = jax.value_and_grad(loss_function, has_aux=True)(
            state["params"], batch, keys[dropout_key_index])
        updates, opt = optimizer.update(grads, state["opt"], state["params"])
        metrics = {name: value for name, value in metrics.items() if name != "sf_fraction_mae"}
        metrics["loss"] = loss  # the weighted loss that is minimised
        return {"step": state["step"] + 1, "params": optax.apply_updates(state["params"], updates), "opt": opt}, metrics

    # No buffer donation: a Ctrl-C mid-step must leave the previous state intact to checkpoint.
    return jax.jit(step, in_shardings=(replicated, replicated), out_shardings=(replicated, replicated))
