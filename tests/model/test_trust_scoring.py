"""The trust outputs (model.scoring, model.forward, docs/trust.md): the chi2 formula, NaN scores and nothing
trusted without a calibration, a calibration that leaves the decomposition alone, the sown features, jit."""

import chex
import jax
import numpy as np
import pytest

from ddm_jax.constants import N_BINS, norm_window_slice
from ddm_jax.inference.decomposer import Decomposer
from ddm_jax.model.forward import ddm_views
from ddm_jax.model.models import DDM
from ddm_jax.model.scoring import score, scoring_arrays
from ddm_jax.schema import OUTPUT_KEYS, TRUST_KEYS
from trust_fixtures import TINY


def test_chi2_is_the_mean_of_residual_squared_times_normalised_ivar(trust_params, trust_spectra):
    flux, mass, ivar = trust_spectra
    result = Decomposer(*trust_params, *TINY)(flux, mass, ivar=ivar)
    window = flux[:, norm_window_slice(N_BINS)].astype(np.float64)
    ivar_n = ivar * (window.std(axis=1) * mass)[:, None] ** 2  # x_n = (x - m) / (s mass): sigma_n = sigma / (s mass)
    used = ivar > 0
    expected = np.sum(np.where(used, result["residual"].astype(np.float64) ** 2 * ivar_n, 0), 1) / used.sum(1)
    np.testing.assert_allclose(result["reconstruction_chi2"], expected, rtol=1e-4)


def test_without_calibration_scores_are_nan_and_nothing_is_trusted(trust_params, trust_spectra):
    flux, mass, _ = trust_spectra
    result = Decomposer(*trust_params, *TINY)(flux, mass)
    assert list(result) == list(OUTPUT_KEYS + TRUST_KEYS)
    assert np.isnan(result["ood_score"]).all() and np.isnan(result["reconstruction_chi2"]).all()
    assert result["trusted"].dtype == bool and not result["trusted"].any()


def test_calibration_does_not_change_the_decomposition(trust_params, trust_calibration, trust_spectra):
    flux, mass, ivar = trust_spectra
    plain = Decomposer(*trust_params, *TINY)(flux, mass)
    scored = Decomposer(*trust_params, *TINY, trust=trust_calibration, samples=2)(flux, mass, ivar=ivar)
    for key in OUTPUT_KEYS:
        np.testing.assert_array_equal(scored[key], plain[key], err_msg=key)
    assert np.isfinite(scored["ood_score"]).all() and np.isfinite(scored["reconstruction_chi2"]).all()
    assert "sf_fraction_std" in scored and scored["trusted"].any()


def test_the_sow_leaves_the_outputs_and_params_alone(trust_params, trust_spectra):
    ddm = DDM(TINY[0])
    x = np.asarray(ddm_views(trust_params[0], trust_spectra[0], trust_spectra[1], None, ddm=ddm)[0])
    plain = ddm.apply({"params": trust_params[0]}, x)
    sown, state = ddm.apply({"params": trust_params[0]}, x, mutable=["intermediates"])
    for a, b in zip(plain, sown):
        np.testing.assert_array_equal(a, b)
    assert state["intermediates"]["features"][0].shape == (len(x), TINY[0].trunk_units[-1])
    assert set(jax.eval_shape(ddm.init, jax.random.PRNGKey(0), x[:1])) == {"params"}


@pytest.fixture(scope="module")
def scoring_without_any_jit(trust_params, trust_calibration, trust_spectra):
    """`score`'s inputs, without and with ivar, and its TRUST_KEYS with every jit disabled (computed once)."""
    flux, mass, ivar = trust_spectra
    views = ddm_views(trust_params[0], flux, mass, ivar, ddm=DDM(TINY[0]))
    x, features, residual, finite, ivar_n = (np.asarray(v) for v in views)
    arrays = scoring_arrays(trust_calibration)
    cases = []
    for with_ivar in (None, ivar_n):
        inputs = (arrays, x, features, residual, finite, with_ivar)
        with jax.disable_jit():
            eager = score(*inputs)
        cases.append((inputs, {key: np.asarray(eager[key], float) for key in TRUST_KEYS}))
    return cases


class TestScoringJit(chex.TestCase):
    """chex's variants: `score` under jax.jit (with_jit) and dispatched op by op (without_jit) both give the
    trust outputs computed with every jit disabled, without ivar and with it."""

    @pytest.fixture(autouse=True)
    def _cases(self, scoring_without_any_jit):
        self.cases = scoring_without_any_jit

    @chex.variants(with_jit=True, without_jit=True)
    def test_scoring_jit_matches_disable_jit(self):
        scored = self.variant(score)
        for inputs, eager in self.cases:
            out = scored(*inputs)
            chex.assert_trees_all_close({key: np.asarray(out[key], float) for key in TRUST_KEYS}, eager, rtol=1e-5)


