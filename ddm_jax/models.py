"""Flax Linen modules for the DDM and the line-ratio regressor (modules only, no I/O).

Keras semantics are kept exactly (SPEC): LeakyReLU slope 0.3, asymmetric 'same' padding,
channels-last flatten in (length, channels) order, dropout off unless `deterministic=False`
(then a 'dropout' RNG is needed, e.g. for training or Monte-Carlo dropout).
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from ddm_jax.config import ConvSpec, DDMConfig, RegressorConfig, same_padding


class DDMOutputs(NamedTuple):
    """The DDM's five outputs, in Keras output order. Spectra (B, n_bins), probabilities (B,)."""

    sf_spectrum: jax.Array
    agn_spectrum: jax.Array
    p_sf: jax.Array
    p_agn: jax.Array
    p_total: jax.Array


class ConvStack(nn.Module):
    """Conv1D('same') + LeakyReLU per layer; (B, L) or (B, L, C) in, (B, L', C') out."""

    convs: tuple[ConvSpec, ...]
    negative_slope: float

    @nn.compact
    def __call__(self, x):
        if x.ndim == 2:
            x = x[..., None]
        for i, spec in enumerate(self.convs, start=1):
            pad = same_padding(x.shape[-2], spec.kernel, spec.stride)
            x = nn.Conv(spec.features, (spec.kernel,), strides=(spec.stride,), padding=[pad],
                        use_bias=spec.bias, name=f"conv_{i}")(x)
            x = nn.leaky_relu(x, self.negative_slope)
        return x


class ProbabilityHead(nn.Module):
    """Dense -> LReLU -> Dropout per hidden layer, then a linear Dense(1); returns (B,)."""

    units: tuple[int, ...]
    dropout: float
    negative_slope: float

    @nn.compact
    def __call__(self, x, deterministic: bool):
        for i, units in enumerate(self.units, start=1):
            x = nn.leaky_relu(nn.Dense(units, name=f"dense_{i}")(x), self.negative_slope)
            x = nn.Dropout(self.dropout, deterministic=deterministic)(x)
        return nn.Dense(1, name="out")(x)[..., 0]


class DDM(nn.Module):
    """Deep Decomposition Model: normalised spectra (B, n_bins) -> `DDMOutputs`."""

    config: DDMConfig = DDMConfig()

    @nn.compact
    def __call__(self, spectra, deterministic: bool = True) -> DDMOutputs:
        cfg = self.config
        act = lambda y: nn.leaky_relu(y, cfg.negative_slope)  # noqa: E731
        h = ConvStack(cfg.convs, cfg.negative_slope, name="trunk")(spectra)
        h = h.reshape(h.shape[0], -1)  # (length, channels) order, as Keras Flatten
        for i, (units, rate) in enumerate(zip(cfg.trunk_units, cfg.trunk_dropout), start=1):
            h = nn.Dropout(rate, deterministic=deterministic)(act(nn.Dense(units, name=f"dense_{i}")(h)))

        def branch(name):
            hidden = act(nn.Dense(cfg.branch_units, name=f"{name}_dense")(h))
            hidden = nn.Dropout(cfg.branch_dropout, deterministic=deterministic)(hidden)
            return hidden, nn.Dense(cfg.n_bins, name=f"{name}_spectrum")(hidden)

        agn_hidden, agn_spectrum = branch("agn")
        sf_hidden, sf_spectrum = branch("sf")
        both = jnp.concatenate([sf_hidden, agn_hidden], axis=-1)  # SF first, as upstream
        head = lambda name: ProbabilityHead(cfg.head_units, cfg.head_dropout, cfg.negative_slope,  # noqa: E731
                                            name=name)(both, deterministic)
        p_sf, p_agn = head("sf_head"), head("agn_head")
        p_total = nn.Dense(1, name="total")(act(p_sf + p_agn)[..., None])[..., 0]
        return DDMOutputs(sf_spectrum, agn_spectrum, p_sf, p_agn, p_total)


class LineRatioRegressor(nn.Module):
    """Centred spectra (B, n_bins) -> eight line-ratio outputs (B, 8); see `LINE_RATIO_NAMES`."""

    config: RegressorConfig = RegressorConfig()

    @nn.compact
    def __call__(self, spectra, deterministic: bool = True):
        cfg = self.config
        act = lambda y: nn.leaky_relu(y, cfg.negative_slope)  # noqa: E731
        h = ConvStack(cfg.convs, cfg.negative_slope, name="convs")(spectra)
        h = h.reshape(h.shape[0], -1)
        h = act(act(nn.Dense(cfg.dense_units[0], name="dense_1")(h)))  # upstream applies LReLU twice
        h = act(nn.Dense(cfg.dense_units[1], name="dense_2")(h))
        h = nn.Dropout(cfg.dropout, deterministic=deterministic)(h)
        return nn.Dense(cfg.n_outputs, name="out")(h)


def init_params(model: nn.Module, seed: int = 0):
    """Random params for `model` (for tests, training from scratch and shape checks)."""
    n_bins = model.config.n_bins
    return model.init(jax.random.PRNGKey(seed), jnp.zeros((1, n_bins), jnp.float32))["params"]


def abstract_params(model: nn.Module):
    """Shapes and dtypes of `model`'s params, without allocating them."""
    n_bins = model.config.n_bins
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, n_bins), jnp.float32))
    return variables["params"]
