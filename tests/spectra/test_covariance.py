"""The rebin's variance inflation against Monte Carlo through the real rebin, on pPXF's SDSS
spectrum (its own log grid and ivar), and exactly 1 where input pixels are the output bins."""

import dataclasses

import numpy as np

from ddm_jax.constants import EMISSION_LINES, N_BINS, wavelength_grid
from ddm_jax.io.loaders.sdss import read_sdss_fits
from ddm_jax.spectra.covariance import variance_inflation
from ddm_jax.spectra.resample import rebin_spectra
from ddm_jax.spectra.spectrum import Spectrum, validate
from spectra_helpers import STRONG, ppxf_sdss_path

REALISATIONS = 1024
SUM_BINS = 20  # a line's width: ~+-20 A
# sd of a variance estimated from 1024 Gaussian draws: sqrt(2 / 1024) = 4.4 %; 3 of them
VARIANCE_RTOL = 3 * np.sqrt(2 / REALISATIONS)


def test_inflation_of_a_line_sum_matches_monte_carlo_through_the_rebin():
    real = validate(read_sdss_fits(ppxf_sdss_path(STRONG)))
    sigma = 1 / np.sqrt(np.where(real.good, real.ivar, np.inf))
    rng = np.random.default_rng(5)
    grid = rebin_spectra([dataclasses.replace(real, flux=rng.normal(0, 1, sigma.size) * sigma)
                          for _ in range(REALISATIONS)])
    inflation = variance_inflation(real)
    for line in ("hbeta", "halpha"):
        centre = int(np.argmin(np.abs(wavelength_grid() - EMISSION_LINES[line])))
        bins = slice(centre - SUM_BINS // 2, centre + SUM_BINS // 2)
        variance = 1 / grid["ivar"][0, bins]  # what the bins' own ivar says
        predicted = np.sum(inflation[bins] * variance) / variance.sum()
        measured = grid["flux"][:, bins].sum(axis=1).var() / variance.sum()
        assert predicted > 1.2  # SDSS's 1.5 A pixels on 2 A bins: neighbours share a pixel
        np.testing.assert_allclose(measured, predicted, rtol=VARIANCE_RTOL, err_msg=line)


def test_no_inflation_where_each_pixel_is_one_bin():
    wavelength = wavelength_grid().astype(np.float64)
    rng = np.random.default_rng(0)
    spectrum = Spectrum("aligned", "aligned.npz", wavelength, rng.normal(size=N_BINS),
                        rng.uniform(0.5, 2.0, N_BINS), np.ones(N_BINS, bool), 0.0)
    np.testing.assert_array_equal(variance_inflation(spectrum), np.ones(N_BINS, np.float32))
