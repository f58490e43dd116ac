"""Optax optimisers and learning-rate schedules from an `OptimizerConfig`."""

from __future__ import annotations

import optax

from ddm_jax.config import OptimizerConfig
from ddm_jax.errors import InputError


def learning_rate_schedule(config: OptimizerConfig, total_steps: int) -> optax.Schedule:
    peak, end = config.learning_rate, config.learning_rate * config.end_fraction
    if config.schedule == "constant":
        return optax.constant_schedule(peak)
    if config.schedule == "cosine":
        return optax.cosine_decay_schedule(peak, max(total_steps, 1), alpha=config.end_fraction)
    if config.schedule == "warmup_cosine":
        warmup = min(config.warmup_steps, total_steps - 1)
        return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, max(total_steps, warmup + 1), end)
    raise InputError(f"unknown schedule {config.schedule!r}; choose constant, cosine or warmup_cosine")


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
        raise InputError(f"unknown optimiser {config.name!r}; choose adam, adamw, rmsprop or sgd")
    if config.grad_clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), optimizer)
    return optimizer
