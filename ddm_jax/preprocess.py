"""SPEC's preprocessing, written for one spectrum and batched with `vmap`.

All functions are jittable; the normalisation window is a static slice of the grid.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ddm_jax.config import N_BINS, norm_window_slice

_WINDOW = norm_window_slice(N_BINS)


def normalize(flux: jax.Array, mass: jax.Array) -> jax.Array:
    """DDM input for one spectrum: `(x - median(x[w])) / std(x[w]) / mass`.

    flux: (2208,) on the rest-frame grid; mass: () positive. Returns (2208,).
    w is 4000 < lambda <= 7000 Angstrom; std is the population std (ddof=0).
    """
    window = flux[_WINDOW]
    return (flux - jnp.median(window)) / jnp.std(window) / mass


def center(spectrum: jax.Array) -> jax.Array:
    """Regressor input for one spectrum: `y - median(y[w])`. (2208,) -> (2208,)."""
    return spectrum - jnp.median(spectrum[_WINDOW])


normalize_batch = jax.vmap(normalize)  # (B, 2208), (B,) -> (B, 2208)
center_batch = jax.vmap(center)  # (B, 2208) -> (B, 2208)
