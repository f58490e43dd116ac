"""The preprocessing (docs/model.md#preprocessing), written for one spectrum and batched with `vmap`.

All functions are jittable; the normalisation window is a static slice of the grid.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ddm_jax.constants import N_BINS, norm_window_slice

_WINDOW = norm_window_slice(N_BINS)
_SIGN = np.uint32(0x80000000)


def _sortable_bits(x: jax.Array) -> jax.Array:
    """float32 -> uint32 with the same order (IEEE 754: flip negatives, offset positives)."""
    bits = lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
    return jnp.where(bits & _SIGN, ~bits, bits | _SIGN)


def _from_sortable_bits(keys: jax.Array) -> jax.Array:
    bits = jnp.where(keys & _SIGN, keys & ~_SIGN, ~keys)
    return lax.bitcast_convert_type(bits, jnp.float32)


def _kth_smallest(keys: jax.Array, k: int) -> jax.Array:
    """The k-th smallest (0-based) of uint32 keys (n,), by bisection on the value: 32 counting passes."""
    def step(_, bounds):
        lo, hi = bounds
        mid = lo + (hi - lo) // 2
        enough = jnp.sum(keys <= mid) > k
        return jnp.where(enough, lo, mid + 1), jnp.where(enough, mid, hi)

    return lax.fori_loop(0, 32, step, (jnp.uint32(0), jnp.uint32(0xFFFFFFFF)))[0]


def median(x: jax.Array) -> jax.Array:
    """Exact median of a 1-D float array, as `jnp.median` (mean of the middle two when n is even).

    XLA's CPU sort makes `jnp.median` the slowest step of the whole pipeline; selecting the
    middle values by bisection on their bit patterns needs only 64 vectorised counting passes.
    """
    n = x.shape[0]
    keys = _sortable_bits(x)
    upper = _from_sortable_bits(_kth_smallest(keys, n // 2))
    if n % 2:
        return upper
    return 0.5 * (_from_sortable_bits(_kth_smallest(keys, n // 2 - 1)) + upper)


def window_median_std(flux: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(median, std) of one spectrum (2208,) in the normalisation window: two ()."""
    window = flux[_WINDOW]
    return median(window), jnp.std(window)


def normalize(flux: jax.Array, mass: jax.Array) -> jax.Array:
    """DDM input for one spectrum: `(x - median(x[w])) / std(x[w]) / mass`.

    flux: (2208,) on the rest-frame grid; mass: () positive. Returns (2208,).
    w is 4000 < lambda <= 7000 Angstrom; std is the population std (ddof=0).
    """
    offset, std = window_median_std(flux)
    return (flux - offset) / std / mass


def center(spectrum: jax.Array) -> jax.Array:
    """Regressor input for one spectrum: `y - median(y[w])`. (2208,) -> (2208,)."""
    return spectrum - median(spectrum[_WINDOW])


normalize_batch = jax.vmap(normalize)  # (B, 2208), (B,) -> (B, 2208)
center_batch = jax.vmap(center)  # (B, 2208) -> (B, 2208)
