"""The trust tests' networks, library, calibration and spectra (docs/trust.md), shared by the rooms that
test them (model, io, training, evaluation, commands): a pytest plugin (tests/conftest.py's
`pytest_plugins`), so each fixture is computed once per session, as it was once per module when the
trust tests were one file."""

import numpy as np
import pytest

from ddm_jax.config import DDMConfig, RegressorConfig, config_to_dict
from ddm_jax.io.checkpoint import save_checkpoint
from ddm_jax.model.models import DDM, LineRatioRegressor, fresh_params
from ddm_jax.training.calibrate import calibrate_from_library, library_composites
from ddm_jax.training.input_pipeline import synthetic_library

TINY = (DDMConfig.tiny(), RegressorConfig.tiny())
METADATA = {"ddm_config": config_to_dict(TINY[0]), "regressor_config": config_to_dict(TINY[1])}
QUANTILE = 0.9
CALIBRATION_SPECTRA = 1024  # a test quarter of 256: the false-alarm rate's binomial sd is 0.019
BINOMIAL_SIGMAS = 4
SNR = 30.0  # the synthetic library's noise per bin at unit median


@pytest.fixture(scope="session")
def trust_params():
    return fresh_params(DDM(TINY[0]), 3), fresh_params(LineRatioRegressor(TINY[1]), 4)


@pytest.fixture(scope="session")
def trust_library():
    return synthetic_library(11, 64, 64)


def ivar_like(spectra):
    return np.full(np.shape(spectra), SNR**2, np.float32)


@pytest.fixture(scope="session")
def trust_calibration(trust_params, trust_library):
    """Without ivar: `trusted` is the ood_score test alone, whose false-alarm rate is 1 - QUANTILE."""
    return calibrate_from_library(trust_params[0], TINY[0], trust_library, CALIBRATION_SPECTRA, seed=1,
                                  quantile=QUANTILE, components=8)


@pytest.fixture(scope="session")
def trust_spectra(trust_library):
    with_ivar = trust_library._replace(sf_ivar=ivar_like(trust_library.sf), agn_ivar=ivar_like(trust_library.agn))
    flux, mass, ivar = library_composites(with_ivar, 20, seed=9, mass_range=(0.5, 2.0))
    ivar[:, ::7] = 0.0  # bins without data are left out of chi2
    return 3.0 * flux, mass, ivar / 9.0  # any flux scale: ivar scales with it


def trust_checkpoint(path, params, calibration=None, **metadata):
    """A checkpoint of the tiny networks `params`, with `calibration` (or none) and extra metadata."""
    return save_checkpoint(path, *params, {**METADATA, **metadata}, trust=calibration)
