"""The out-of-domain test inputs (evaluation.ood) are unit-median spectra with ivar, of the grid's length."""


import numpy as np

from ddm_jax.constants import N_BINS, norm_window_slice
from ddm_jax.evaluation import ood


def test_ood_kinds_are_unit_median_spectra_with_ivar(trust_library):
    window = norm_window_slice(N_BINS)
    for kind, (flux, ivar) in ood.ood_sets(trust_library, 4, seed=3).items():
        assert flux.shape == ivar.shape == (4, N_BINS) and flux.dtype == np.float32, kind
        assert np.isfinite(flux).all() and (ivar > 0).all(), kind
        assert np.allclose(np.median(flux[:, window], axis=1), 1.0, atol=0.3), kind
