"""The frame the DDM learned (ddm_jax.spectra.instrument): Galactic extinction removed with the
law's own package as the reference, and spectra convolved to MaNGA's resolution matching lines
made at that resolution."""

import numpy as np
import pytest

from conftest import load_tool
from ddm_jax.constants import SPEED_OF_LIGHT_KMS, TARGET_RESOLVING_POWER
from ddm_jax.errors import InputError
from ddm_jax.spectra import instrument
from ddm_jax.spectra.resample import pixel_edges
from ddm_jax.spectra.spectrum import Spectrum
from spectra_helpers import SDSS_DLOGLAM, SDSS_LOGLAM0, SDSS_NPIX, _box_mean_gaussian, held_out_stars

EBV = 0.05  # a typical high-latitude E(B-V)
RECOVERY_RTOL = 1e-12  # reddened then dereddened: float64 rounding only
# A convolved line against the same line made at the target's width, relative to its peak: the
# kernel's width varies across a line by less than this, and its sampling adds less.
PROFILE_RTOL = 2e-3
Z = 0.05
LINE_CENTRES = np.arange(3800.0, 8000.0, 150.0)  # rest Angstrom, far enough apart not to overlap
# DESI's sampling and a typical sigma of its line-spread function (0.9 pixel, R ~ 2500-5000): a sharper
# instrument than MaNGA's, well sampled (a line much narrower than a pixel loses its shape to the
# sampling, and no convolution of the pixels gives it back).
DESI_STEP, DESI_SIGMA = 0.8, 0.72


def _observed_grid() -> np.ndarray:
    return 10 ** (SDSS_LOGLAM0 + SDSS_DLOGLAM * np.arange(SDSS_NPIX))


def _template_spectrum(z: float = Z) -> Spectrum:
    """A stellar population (held-out BC03 ages) seen at z on SDSS's grid, noise-free."""
    rest, stars, _ = held_out_stars(0.3)
    wavelength = _observed_grid()
    flux = np.interp(wavelength / (1 + z), rest, stars)
    n = wavelength.size
    return Spectrum("template", "template.npz", wavelength, flux, np.full(n, 4.0), np.ones(n, bool), z)


def test_extinction_applied_by_the_law_package_is_removed():
    from astropy import units as u
    from dust_extinction.parameter_averages import F99

    clean = _template_spectrum()
    transmission = F99(Rv=3.1).extinguish(clean.wavelength * u.AA, Ebv=EBV)
    assert transmission[0] < transmission[-1] < 1  # reddened: the blue end loses more
    reddened = Spectrum(clean.id, clean.source, clean.wavelength, clean.flux * transmission,
                        clean.ivar / transmission**2, clean.good, clean.z, ebv=EBV)
    recovered = instrument.deredden(reddened, EBV)
    np.testing.assert_allclose(recovered.flux, clean.flux, rtol=RECOVERY_RTOL)
    np.testing.assert_allclose(recovered.ivar, clean.ivar, rtol=RECOVERY_RTOL)  # the S/N is unchanged
    assert instrument.deredden(clean, 0.0).flux is not clean.flux  # a new record; the input is left as it was
    np.testing.assert_array_equal(instrument.deredden(clean, 0.0).flux, clean.flux)


def test_bad_ebv_is_a_clear_error():
    for bad in (-0.01, np.nan):
        with pytest.raises(InputError, match="E\\(B-V\\)"):
            instrument.deredden(_template_spectrum(), bad)


def _lines(wavelength: np.ndarray, sigma_at) -> np.ndarray:
    """Unit-flux Gaussian lines at LINE_CENTRES (observed at Z), pixel means, each of width sigma_at(centre)."""
    edges = pixel_edges(wavelength)
    centres = LINE_CENTRES * (1 + Z)
    return 1.0 + sum(_box_mean_gaussian(edges, c, float(sigma_at(c))) for c in centres)


def test_a_sharper_spectrum_convolved_to_the_target_matches_lines_made_at_the_target():
    wavelength = np.arange(3600.0, 9824.0, DESI_STEP)
    target = instrument.target_sigma(wavelength / (1 + Z)) * (1 + Z)  # observed Angstrom
    sharp = np.full(wavelength.size, DESI_SIGMA)
    assert np.all(sharp < target)
    observed = _lines(wavelength, lambda c: np.interp(c, wavelength, sharp))
    n = wavelength.size
    spectrum = Spectrum("lines", "lines.npz", wavelength, observed, np.ones(n), np.ones(n, bool), Z, lsf_sigma=sharp)
    matched = instrument.match_resolution(spectrum)
    expected = _lines(wavelength, lambda c: np.interp(c, wavelength, target))
    inside = slice(50, n - 50)  # the kernel's reach at the ends
    peak = (expected - 1).max()
    assert np.abs(observed - expected)[inside].max() > 0.2 * peak  # the test can tell the two widths apart
    assert np.abs(matched.flux - expected)[inside].max() < PROFILE_RTOL * peak
    np.testing.assert_array_equal(matched.ivar, spectrum.ivar)
    assert instrument.coarser_fraction(spectrum) == 0.0


def test_a_coarser_spectrum_is_left_as_it_is_and_reported():
    wavelength = _observed_grid()
    coarse = 1.5 * instrument.target_sigma(wavelength / (1 + Z)) * (1 + Z)
    observed = _lines(wavelength, lambda c: np.interp(c, wavelength, coarse))
    n = wavelength.size
    spectrum = Spectrum("lines", "lines.npz", wavelength, observed, np.ones(n), np.ones(n, bool), Z, lsf_sigma=coarse)
    np.testing.assert_array_equal(instrument.match_resolution(spectrum).flux, observed)
    assert instrument.coarser_fraction(spectrum) == 1.0
    at = 5500.0 * (1 + Z)
    expected_kms = np.interp(at, wavelength, coarse) / at * SPEED_OF_LIGHT_KMS
    assert instrument.resolution_kms(spectrum, True, 5500.0) == pytest.approx(expected_kms, rel=1e-9)


def test_masked_pixels_do_not_leak_into_their_neighbours():
    wavelength = _observed_grid()
    target = instrument.target_sigma(wavelength / (1 + Z)) * (1 + Z)
    n = wavelength.size
    flux = np.ones(n)
    good = np.ones(n, bool)
    flux[2000], good[2000] = 1e6, False  # a cosmic ray, flagged
    spectrum = Spectrum("flat", "flat.npz", wavelength, flux, np.ones(n), good, Z, lsf_sigma=0.3 * target)
    matched = instrument.match_resolution(spectrum)
    np.testing.assert_allclose(matched.flux[good], 1.0, rtol=1e-12)


def test_resolution_matrix_sigma_of_gaussian_kernels():
    """A banded matrix of Gaussian rows (DESI's storage) gives back the sigma it was made with."""
    n_diag, n, sigma_pixels, step = 11, 300, 1.1, 0.8
    offsets = n_diag // 2 - np.arange(n_diag)
    kernel = np.exp(-0.5 * (offsets / sigma_pixels) ** 2)
    kernel /= kernel.sum()
    resolution = np.repeat(kernel[None, :, None], n, axis=2)  # every row the same kernel
    wavelength = 3600.0 + step * np.arange(n)
    sigma = instrument.sigma_from_resolution_matrix(resolution, wavelength)
    expected = np.sqrt(np.sum(kernel * offsets**2)) * step  # the kernel's own second moment
    np.testing.assert_allclose(sigma, expected, rtol=1e-12)


def test_the_target_table_is_what_the_committed_manga_spectra_give():
    assert load_tool("make_manga_resolution").manga_resolving_power() == TARGET_RESOLVING_POWER
