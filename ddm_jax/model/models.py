"""Flax Linen modules for the DDM and the line-ratio regressor (modules only, no I/O).

Keras semantics are kept exactly (docs/model.md#keras-semantics): LeakyReLU slope 0.3, asymmetric 'same' padding,
channels-last flatten in (length, channels) order, dropout off unless `deterministic=False`
(then a 'dropout' RNG is needed, e.g. for training or Monte-Carlo dropout).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ddm_jax.config import ConvSpec, DDMConfig, RegressorConfig, same_padding


class DDMOutputs(NamedTuple):
    """The DDM's five outputs, in Keras output order. Spectra (B, n_bins), probabilities (B,)."""

    sf_spectrum: jax.Array
    agn_spectrum: jax.Array
    p_sf: jax.Array
    p_agn: jax.Array
    p_total: jax.Array


# Spectra per step of the conv stack: a chunk's activations stay in cache from one layer to the next
# (a 16-spectrum chunk of the regressor's first layer is 9 MB, a 256-spectrum batch 145 MB);
# measured ~10 % faster than the whole batch at once on a 2-core CPU, see benchmarks/README.md.
# Inference only: the backward pass through `lax.map` is ~20x slower on XLA:CPU than through the
# whole batch at once (measured: 6.0 s vs 0.30 s for the DDM's conv stack at batch 32), so
# training builds its models with `conv_chunk=None`.
CONV_CHUNK = 16

# Computation dtypes by name (float32 is the default; bfloat16 is opt-in, see `DDM`).
COMPUTE_DTYPES = {"float32": None, "bf16": jnp.bfloat16}


def _as_float32(dtype, outputs):
    """Reduced-precision outputs back to float32; float32 ones untouched."""
    return outputs if dtype is None else jax.tree.map(lambda a: a.astype(jnp.float32), outputs)


class ConvWeights(nn.Module):
    """One Conv1D layer's params in nn.Conv's layout: kernel (k, in, out), optional bias (out,)."""

    spec: ConvSpec
    in_features: int

    @nn.compact
    def __call__(self):
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (self.spec.kernel, self.in_features, self.spec.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.spec.features,)) if self.spec.bias else None
        return kernel, bias


def conv1d_same(x, kernel, stride: int):
    """Keras Conv1D(padding='same') on channels-last x (B, L, C); kernel (k, C, C')."""
    pad = same_padding(x.shape[-2], kernel.shape[0], stride)
    return lax.conv_general_dilated(x, kernel, (stride,), [pad], dimension_numbers=("NWC", "WIO", "NWC"))


class ConvStack(nn.Module):
    """Conv1D('same') + LeakyReLU per layer; (B, L) or (B, L, C) in, (B, L', C') out.

    On CPU the batch runs through all layers `chunk` spectra at a time (see CONV_CHUNK) when
    `chunk` divides it, else (and with `chunk=None`, for gradients) all at once.
    XLA's own convolution is kept: an explicit im2col + one matmul per layer measured
    2-3x slower here, since the patch matrix of a whole batch does not fit in cache.
    """

    convs: tuple[ConvSpec, ...]
    negative_slope: float
    dtype: Any = None  # computation dtype; params stay float32
    chunk: int | None = CONV_CHUNK

    @nn.compact
    def __call__(self, x):
        if x.ndim == 2:
            x = x[..., None]
        in_features = (x.shape[-1],) + tuple(spec.features for spec in self.convs[:-1])
        weights = [ConvWeights(spec, cin, name=f"conv_{i}")()
                   for i, (spec, cin) in enumerate(zip(self.convs, in_features), start=1)]
        if self.dtype is not None:
            x, weights = jax.tree.map(lambda a: a.astype(self.dtype), (x, weights))

        def stack(h):  # (B, L, C) -> (B, L', C')
            for spec, (kernel, bias) in zip(self.convs, weights):
                h = conv1d_same(h, kernel, spec.stride)
                h = nn.leaky_relu(h if bias is None else h + bias, self.negative_slope)
            return h

        batch = x.shape[0]
        if self.chunk is None or batch % self.chunk or jax.default_backend() != "cpu":  # tuned on CPU only
            return stack(x)
        # Strided chunks: chunk i holds rows i, i + n, i + 2n, ... (n = batch / chunk), so that the loop
        # runs along an axis that is not the batch axis `Decomposer` splits over devices (looping over
        # contiguous blocks of it made XLA gather the whole batch onto every device).
        strided = x.reshape(self.chunk, batch // self.chunk, *x.shape[1:]).swapaxes(0, 1)
        out = lax.map(stack, strided)
        return out.swapaxes(0, 1).reshape(batch, *out.shape[2:])


class ProbabilityHead(nn.Module):
    """Dense -> LReLU -> Dropout per hidden layer, then a linear Dense(1); returns (B,)."""

    units: tuple[int, ...]
    dropout: float
    negative_slope: float
    dtype: Any = None

    @nn.compact
    def __call__(self, x, deterministic: bool):
        for i, units in enumerate(self.units, start=1):
            x = nn.leaky_relu(nn.Dense(units, dtype=self.dtype, name=f"dense_{i}")(x), self.negative_slope)
            x = nn.Dropout(self.dropout, deterministic=deterministic)(x)
        return nn.Dense(1, dtype=self.dtype, name="out")(x)[..., 0]


class DDM(nn.Module):
    """Deep Decomposition Model: normalised spectra (B, n_bins) -> `DDMOutputs`.

    `dtype` is the computation dtype (`COMPUTE_DTYPES`): with bfloat16, params (kept in
    float32) and activations are cast to bfloat16 and the outputs back to float32.
    """

    config: DDMConfig = DDMConfig()
    dtype: Any = None
    conv_chunk: int | None = CONV_CHUNK  # None for training (see CONV_CHUNK)

    @nn.compact
    def __call__(self, spectra, deterministic: bool = True) -> DDMOutputs:
        cfg = self.config
        act = lambda y: nn.leaky_relu(y, cfg.negative_slope)  # noqa: E731
        dense = partial(nn.Dense, dtype=self.dtype)
        h = ConvStack(cfg.convs, cfg.negative_slope, self.dtype, self.conv_chunk, name="trunk")(spectra)
        h = h.reshape(h.shape[0], -1)  # (length, channels) order, as Keras Flatten
        for i, (units, rate) in enumerate(zip(cfg.trunk_units, cfg.trunk_dropout), start=1):
            h = nn.Dropout(rate, deterministic=deterministic)(act(dense(units, name=f"dense_{i}")(h)))
        # The trunk features, for the trust scores (ddm_jax.trust); kept only with mutable=["intermediates"].
        self.sow("intermediates", "features", _as_float32(self.dtype, h))

        def branch(name):
            hidden = act(dense(cfg.branch_units, name=f"{name}_dense")(h))
            hidden = nn.Dropout(cfg.branch_dropout, deterministic=deterministic)(hidden)
            return hidden, dense(cfg.n_bins, name=f"{name}_spectrum")(hidden)

        agn_hidden, agn_spectrum = branch("agn")
        sf_hidden, sf_spectrum = branch("sf")
        both = jnp.concatenate([sf_hidden, agn_hidden], axis=-1)  # SF first, as upstream
        head = lambda name: ProbabilityHead(cfg.head_units, cfg.head_dropout, cfg.negative_slope,  # noqa: E731
                                            self.dtype, name=name)(both, deterministic)
        p_sf, p_agn = head("sf_head"), head("agn_head")
        p_total = dense(1, name="total")(act(p_sf + p_agn)[..., None])[..., 0]
        return DDMOutputs(*_as_float32(self.dtype, (sf_spectrum, agn_spectrum, p_sf, p_agn, p_total)))


class LineRatioRegressor(nn.Module):
    """Centred spectra (B, n_bins) -> eight line-ratio outputs (B, 8); see `LINE_RATIO_NAMES`."""

    config: RegressorConfig = RegressorConfig()
    dtype: Any = None  # computation dtype, as in `DDM`
    conv_chunk: int | None = CONV_CHUNK  # None for training (see CONV_CHUNK)

    @nn.compact
    def __call__(self, spectra, deterministic: bool = True):
        cfg = self.config
        act = lambda y: nn.leaky_relu(y, cfg.negative_slope)  # noqa: E731
        dense = partial(nn.Dense, dtype=self.dtype)
        h = ConvStack(cfg.convs, cfg.negative_slope, self.dtype, self.conv_chunk, name="convs")(spectra)
        h = h.reshape(h.shape[0], -1)
        h = act(act(dense(cfg.dense_units[0], name="dense_1")(h)))  # upstream applies LReLU twice
        h = act(dense(cfg.dense_units[1], name="dense_2")(h))
        h = nn.Dropout(cfg.dropout, deterministic=deterministic)(h)
        return _as_float32(self.dtype, dense(cfg.n_outputs, name="out")(h))


def init_params(model: nn.Module, seed: int = 0):
    """Random params for `model` (for tests, training from scratch and shape checks)."""
    n_bins = model.config.n_bins
    return model.init(jax.random.PRNGKey(seed), jnp.zeros((1, n_bins), jnp.float32))["params"]


def abstract_params(model: nn.Module):
    """Shapes and dtypes of `model`'s params, without allocating them."""
    n_bins = model.config.n_bins
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, n_bins), jnp.float32))
    return variables["params"]


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
