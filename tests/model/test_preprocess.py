"""Preprocessing (model.preprocess, docs/model.md): the vmapped batch versions match a loop and the
formulas, and the bisection median is exact."""

import numpy as np
import pytest

from conftest import random_spectra
from ddm_jax.model.preprocess import center, center_batch, median, normalize, normalize_batch


def test_preprocessing_vmap_matches_a_loop_and_spec():
    flux = random_spectra(5, seed=2).astype(np.float64)
    mass = np.linspace(0.5, 2.0, 5)
    batched = np.asarray(normalize_batch(flux, mass))
    looped = np.stack([np.asarray(normalize(f, m)) for f, m in zip(flux, mass)])
    np.testing.assert_allclose(batched, looped, rtol=1e-6)
    wave = 3700 + 2 * np.arange(2208)
    window = (wave > 4000) & (wave <= 7000)
    expected = (flux - np.median(flux[:, window], 1, keepdims=True)) / flux[:, window].std(1, keepdims=True) \
        / mass[:, None]
    np.testing.assert_allclose(batched, expected, rtol=1e-5, atol=1e-6)
    centred = np.asarray(center_batch(flux))
    np.testing.assert_allclose(centred, np.stack([np.asarray(center(f)) for f in flux]), rtol=1e-6)
    np.testing.assert_allclose(centred, flux - np.median(flux[:, window], 1, keepdims=True), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [1500, 1501, 2])
def test_median_is_exact(n):
    """The bisection median equals NumPy's bit for bit: negatives, duplicates, zeros, huge ranges."""
    rng = np.random.default_rng(n)
    for trial in range(30):
        x = (rng.normal(size=n) * 10.0 ** rng.uniform(-20, 20)).astype(np.float32)
        if trial % 3 == 0:
            x = np.round(x)
        if trial % 5 == 0:
            x = -np.abs(x)
        assert np.float32(median(x)) == np.float32(np.median(x)), (trial, x[:5])
