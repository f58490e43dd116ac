"""The Decomposer on the committed tiny Keras weights: batching and padding change nothing, jit changes nothing,
`normalize=False` takes spectra as given, bad inputs are clear errors."""

import jax
import numpy as np
import pytest

from conftest import TINY_DDM_KERAS, TINY_REGRESSOR_KERAS, random_spectra
from ddm_jax.errors import DDMError
from ddm_jax.inference.decomposer import Decomposer
from ddm_jax.schema import OUTPUT_KEYS
from ddm_jax_convert import convert_files

WAVE = 3700.0 + 2.0 * np.arange(2208)
WINDOW = (WAVE > 4000) & (WAVE <= 7000)


@pytest.fixture(scope="module")
def fixture_decomposer():
    ddm, regressor = convert_files([str(TINY_DDM_KERAS), str(TINY_REGRESSOR_KERAS)])
    return Decomposer(ddm.params, regressor.params, ddm.config, regressor.config, batch_size=8)


def test_batching_does_not_change_results(fixture_decomposer):
    flux, mass = random_spectra(11, seed=31), np.full(11, 1.2)
    whole = fixture_decomposer(flux, mass)
    for i in (0, 7, 10):
        single = fixture_decomposer(flux[i], mass[i])  # a single spectrum is a batch of one
        for key in OUTPUT_KEYS:
            assert single[key].shape == (1,) + whole[key].shape[1:]
            np.testing.assert_allclose(single[key][0], whole[key][i], rtol=1e-5, atol=1e-6)


def test_jit_matches_disable_jit(fixture_decomposer):
    flux, mass = random_spectra(2, seed=32), np.array([1.0, 2.0])
    jitted = fixture_decomposer(flux, mass)
    with jax.disable_jit():
        eager = fixture_decomposer(flux, mass)
    for key in OUTPUT_KEYS:
        np.testing.assert_allclose(jitted[key], eager[key], rtol=1e-5, atol=1e-6)


def test_no_normalize_takes_spectra_as_given(fixture_decomposer):
    flux = random_spectra(3, seed=33)
    window = flux[:, WINDOW]
    normalised = (flux - np.median(window, 1, keepdims=True)) / window.std(1, keepdims=True) / 2.0
    a = fixture_decomposer(flux, np.full(3, 2.0))
    b = fixture_decomposer(normalised, normalize=False)
    np.testing.assert_allclose(a["p_sf"], b["p_sf"], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("flux, mass, message", [
    (np.zeros((2, 2000)), np.ones(2), r"shape \(B, 2208\)"),
    (np.zeros((0, 2208)), np.ones(0), "empty"),
    (np.full((1, 2208), np.nan), np.ones(1), "NaN or inf"),
    (random_spectra(2, 1), None, "mass"),
    (random_spectra(2, 1), np.ones(3), "one mass per spectrum"),
    (random_spectra(2, 1), np.array([1.0, 0.0]), "finite and positive"),
    (random_spectra(2, 1), np.array([1.0, np.nan]), "finite and positive"),
    (np.ones((1, 2208)), np.ones(1), "constant over 4000-7000"),
    (np.array([["a"] * 2208]), np.ones(1), "numeric"),
])
def test_bad_inputs_raise_clear_errors(fixture_decomposer, flux, mass, message):
    with pytest.raises(DDMError, match=message):
        fixture_decomposer(flux, mass)
