"""Architecture facts of docs/model.md: exact parameter counts, shapes, Keras 'same' padding, jit and vmap."""

import jax
import numpy as np
import pytest

from conftest import random_spectra
from ddm_jax.config import DDMConfig, RegressorConfig, conv_lengths, same_padding
from ddm_jax.model.models import CONV_CHUNK, DDM, LineRatioRegressor, abstract_params, init_params
from ddm_jax.model.preprocess import center, center_batch, median, normalize, normalize_batch


def count(params) -> int:
    return sum(leaf.size for leaf in jax.tree.leaves(params))


def test_released_parameter_counts():
    assert count(abstract_params(DDM())) == 12_071_940
    assert count(abstract_params(LineRatioRegressor())) == 11_745_704


def test_conv_lengths_follow_spec_tables():
    assert conv_lengths(2208, DDMConfig().convs) == [1104, 552, 276, 138, 69, 35, 18, 18]
    assert DDMConfig().flat_features == 6336
    assert RegressorConfig().flat_features == 35 * 256


@pytest.mark.parametrize("length, kernel, stride, expected", [
    (2208, 11, 2, (4, 5)),  # total 9: the odd element goes right (PyTorch would put it left)
    (69, 5, 2, (2, 2)),
    (35, 6, 1, (2, 3)),
    (2208, 10, 2, (4, 4)),
])
def test_keras_same_padding(length, kernel, stride, expected):
    assert same_padding(length, kernel, stride) == expected


@pytest.mark.parametrize("config", [DDMConfig(), DDMConfig.tiny()], ids=["released", "tiny"])
def test_ddm_output_shapes(config):
    out = jax.eval_shape(lambda p, x: DDM(config).apply({"params": p}, x), abstract_params(DDM(config)),
                         jax.ShapeDtypeStruct((3, 2208), np.float32))
    assert [o.shape for o in out] == [(3, 2208), (3, 2208), (3,), (3,), (3,)]


def test_regressor_output_shape():
    model = LineRatioRegressor()
    out = jax.eval_shape(lambda p, x: model.apply({"params": p}, x), abstract_params(model),
                         jax.ShapeDtypeStruct((3, 2208), np.float32))
    assert out.shape == (3, 8)


def test_jit_matches_disable_jit():
    model = DDM(DDMConfig.tiny())
    params = init_params(model, seed=3)
    x = random_spectra(4, seed=1)
    apply = lambda p, s: model.apply({"params": p}, s)  # noqa: E731
    jitted = jax.jit(apply)(params, x)
    with jax.disable_jit():
        eager = apply(params, x)
    for a, b in zip(jitted, eager):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_dropout_is_off_by_default_and_on_when_asked():
    model = DDM(DDMConfig.tiny())
    params = init_params(model, seed=3)
    x = random_spectra(2, seed=1)
    a = model.apply({"params": params}, x)
    b = model.apply({"params": params}, x)
    np.testing.assert_array_equal(a.sf_spectrum, b.sf_spectrum)
    c = model.apply({"params": params}, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(0)})
    assert not np.allclose(a.sf_spectrum, c.sf_spectrum)


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


@pytest.mark.parametrize("model_class, config", [(DDM, DDMConfig.tiny()), (LineRatioRegressor, RegressorConfig.tiny())],
                         ids=["ddm", "regressor"])
def test_whole_batch_conv_stack_matches_the_chunked_one(model_class, config):
    """Training's `conv_chunk=None` computes what inference's chunked stack does (same params)."""
    params = init_params(model_class(config), seed=3)
    x = random_spectra(3 * CONV_CHUNK, seed=2)  # a multiple of the chunk: the chunked path runs
    chunked = model_class(config).apply({"params": params}, x)
    assert "scan" in str(jax.make_jaxpr(model_class(config).apply)({"params": params}, x))  # lax.map ran
    whole = model_class(config, conv_chunk=None).apply({"params": params}, x)
    for a, b in zip(jax.tree.leaves(chunked), jax.tree.leaves(whole), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
