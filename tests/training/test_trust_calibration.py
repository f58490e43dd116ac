"""The trust calibration (training.calibrate, docs/trust.md): its thresholds are quantiles of held-out
spectra, with the false-alarm rate they promise, and far outliers score higher."""


import numpy as np

from ddm_jax.evaluation import ood
from ddm_jax.inference.decomposer import Decomposer
from ddm_jax.training.calibrate import library_composites
from trust_fixtures import BINOMIAL_SIGMAS, QUANTILE, TINY


def test_thresholds_are_quantiles_and_far_outliers_score_higher(trust_params, trust_calibration, trust_library):
    fit, thresholds, test = trust_calibration.counts
    assert (fit, thresholds, test) == (512, 256, 256)
    band = BINOMIAL_SIGMAS * np.sqrt(QUANTILE * (1 - QUANTILE) / test)
    assert abs(float(trust_calibration.false_alarm_rate) - (1 - QUANTILE)) <= band
    assert np.isnan(trust_calibration.chi2_threshold)
    decomposer = Decomposer(*trust_params, *TINY, trust=trust_calibration)
    sky, _ = ood.sky(32, seed=2)
    in_domain = decomposer(*library_composites(trust_library, 64, seed=5)[:2])["ood_score"]
    outside = decomposer(sky, np.ones(len(sky)))["ood_score"]
    assert np.median(outside) > max(np.max(in_domain), float(trust_calibration.ood_threshold))
