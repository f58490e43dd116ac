"""The networks (model.models) as docs/model.md describes them: exact parameter counts, shapes, Keras 'same'
padding, jit, dropout, the chunked conv stack."""

import chex
import jax
import numpy as np
import pytest

from conftest import random_spectra
from ddm_jax.config import DDMConfig, RegressorConfig, conv_lengths, same_padding
from ddm_jax.model.models import CONV_CHUNK, DDM, LineRatioRegressor, abstract_params, init_params


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


@pytest.fixture(scope="module")
def tiny_ddm_without_any_jit():
    """The tiny DDM's apply, its params and spectra, and its outputs with every jit disabled (computed once)."""
    model = DDM(DDMConfig.tiny())
    params = init_params(model, seed=3)
    x = random_spectra(4, seed=1)
    apply = lambda p, s: model.apply({"params": p}, s)  # noqa: E731
    with jax.disable_jit():
        eager = apply(params, x)
    return apply, params, x, eager


class TestJit(chex.TestCase):
    """chex's variants: the DDM under jax.jit (with_jit) and dispatched op by op (without_jit) both give the
    outputs computed with every jit disabled."""

    @pytest.fixture(autouse=True)
    def _ddm(self, tiny_ddm_without_any_jit):
        self.apply, self.params, self.x, self.eager = tiny_ddm_without_any_jit

    @chex.variants(with_jit=True, without_jit=True)
    def test_jit_matches_disable_jit(self):
        out = self.variant(self.apply)(self.params, self.x)
        chex.assert_trees_all_close(tuple(out), tuple(self.eager), rtol=1e-5, atol=1e-6)


def test_dropout_is_off_by_default_and_on_when_asked():
    model = DDM(DDMConfig.tiny())
    params = init_params(model, seed=3)
    x = random_spectra(2, seed=1)
    a = model.apply({"params": params}, x)
    b = model.apply({"params": params}, x)
    np.testing.assert_array_equal(a.sf_spectrum, b.sf_spectrum)
    c = model.apply({"params": params}, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(0)})
    assert not np.allclose(a.sf_spectrum, c.sf_spectrum)


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
