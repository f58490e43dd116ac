"""Monte-Carlo dropout (`decompose --samples N`): std zero without dropout, positive with it, reproducible."""

import dataclasses

import numpy as np
import pytest

from conftest import random_spectra
from ddm_jax.config import DDMConfig, RegressorConfig
from ddm_jax.errors import DDMError
from ddm_jax.inference.decomposer import Decomposer
from ddm_jax.model.forward import dropout_std
from ddm_jax.model.models import DDM, LineRatioRegressor, init_params
from ddm_jax.schema import STD_KEYS

NO_DROPOUT = dataclasses.replace(DDMConfig.tiny(), trunk_dropout=(0.0, 0.0, 0.0), branch_dropout=0.0, head_dropout=0.0)


def decomposer(config, **kwargs):
    return Decomposer(init_params(DDM(config), 1), init_params(LineRatioRegressor(RegressorConfig.tiny()), 2),
                      config, RegressorConfig.tiny(), **kwargs)


def test_std_is_zero_without_dropout_and_positive_with_it():
    flux, mass = random_spectra(5, seed=61), np.ones(5)
    without = decomposer(NO_DROPOUT, samples=8)(flux, mass)
    with_dropout = decomposer(DDMConfig.tiny(), samples=8)(flux, mass)
    for key in STD_KEYS:
        assert without[key].shape == without[key[:-4]].shape
        np.testing.assert_array_equal(without[key], 0.0)
    for key in STD_KEYS[:-1]:  # sf_fraction_std may be 0 where every pass clips to 0 or 1
        assert np.all(with_dropout[key] > 0), key


def test_std_matches_numpy_over_the_same_passes():
    """Welford's running std equals the plain std of the same dropout passes."""
    import jax

    config = DDMConfig.tiny()
    params = init_params(DDM(config), 1)
    flux, mass = random_spectra(3, seed=62), np.ones(3, np.float32)
    key = jax.random.PRNGKey(5)
    got = dropout_std(params, flux, mass, key, ddm=DDM(config), normalize=True, samples=6)
    from ddm_jax.model.preprocess import normalize_batch

    x = normalize_batch(flux, mass)
    passes = [DDM(config).apply({"params": params}, x, deterministic=False, rngs={"dropout": k}).sf_spectrum
              for k in jax.random.split(key, 6)]
    np.testing.assert_allclose(got["sf_spectrum_std"], np.std(np.stack(passes), axis=0), rtol=1e-4, atol=1e-6)


def test_reproducible_with_the_same_seed():
    flux, mass = random_spectra(9, seed=63), np.ones(9)
    a = decomposer(DDMConfig.tiny(), samples=4, batch_size=4)(flux, mass)
    b = decomposer(DDMConfig.tiny(), samples=4, batch_size=4)(flux, mass)
    np.testing.assert_array_equal(a["p_sf_std"], b["p_sf_std"])
    c = decomposer(DDMConfig.tiny(), samples=4, batch_size=4, seed=1)(flux, mass)
    assert not np.array_equal(a["p_sf_std"], c["p_sf_std"])


def test_one_sample_is_refused():
    with pytest.raises(DDMError, match="at least 2 samples"):
        decomposer(DDMConfig.tiny(), samples=1)
