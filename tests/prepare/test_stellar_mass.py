"""The stellar mass from the continuum fit (ddm_jax.prepare.mass): galaxies built from the BC03
templates with a known mass of each population, put at a known redshift in SDSS's flux units with
astropy's luminosity distance, observed at high S/N and prepared by the real path, come back with
their mass."""

import numpy as np
import pytest
from astropy import constants, cosmology, units

from ddm_jax.astro.templates import load_templates
from ddm_jax.constants import SPEED_OF_LIGHT_KMS
from ddm_jax.prepare import mass, pipeline
from ddm_jax.spectra import resample
from ddm_jax.spectra.spectrum import Spectrum
from spectra_helpers import INSTRUMENT_SIGMA_KMS, SDSS_DLOGLAM, SDSS_LOGLAM0

MASS_TOL_DEX = 0.1  # the requirement for template galaxies at high S/N
MAX_ERROR_DEX = 0.1  # the fit's error at S/N ~ 50 per pixel is a few hundredths of a dex
SNR_AT_5500 = 50.0
SIGMA_STAR_KMS = 150.0
# The error against the scatter over noise realisations (REALISATIONS of each of ERROR_CASES): measured
# 0.76 and 0.96 of it (a sample std of 12 values is itself uncertain by ~20 %).
REALISATIONS, ERROR_CASES = 12, ("old", "mixed")
SCATTER_PER_ERROR = (0.5, 2.0)
# Wavelengths of the observed spectra: SDSS's sampling, kept to what the templates cover at each z.
TEMPLATE_REST_RANGE = (3510.0, 8490.0)
# name -> (z, {(age Gyr, Z): mass formed in M_sun})
GALAXIES = {
    "old": (0.05, {(10.0, 0.02): 2e10}),
    "mixed": (0.08, {(5.0, 0.008): 5e9, (0.64, 0.02): 3e8, (0.025, 0.02): 1e7}),
    "young light": (0.03, {(0.286, 0.02): 1e9, (10.0, 0.05): 3e9}),
}


def luminosity_density(populations: dict) -> tuple[np.ndarray, np.ndarray]:
    """Rest vacuum wavelength (L,) and L_lambda (L,) in L_sun / A of the populations, broadened to
    SIGMA_STAR_KMS as the instrument sees it (BC03 units: `norms` x flux, per M_sun formed)."""
    templates = load_templates()
    total = np.zeros(templates.wavelength.size)
    for (age, metallicity), solar_masses in populations.items():
        i = np.flatnonzero(np.isclose(templates.ages_gyr, age) & np.isclose(templates.metallicities, metallicity))[0]
        total += solar_masses * templates.norms[i] * templates.flux[i]
    template_sigma = templates.fwhm_angstrom / np.sqrt(8 * np.log(2)) / 5500.0 * SPEED_OF_LIGHT_KMS
    extra = np.sqrt(SIGMA_STAR_KMS**2 + INSTRUMENT_SIGMA_KMS**2 - template_sigma**2) / templates.velscale
    offsets = np.arange(-int(6 * extra) - 1, int(6 * extra) + 2)
    kernel = np.exp(-0.5 * (offsets / extra) ** 2)
    return templates.wavelength, np.convolve(total, kernel / kernel.sum(), mode="same")


def observed_galaxy(name: str, rng: np.random.Generator) -> Spectrum:
    """The galaxy in SDSS's observed frame and units (1e-17 erg/s/cm^2/A): f = L / (4 pi D_L^2 (1 + z))."""
    z, populations = GALAXIES[name]
    wavelength, luminosity = luminosity_density(populations)
    loglam = SDSS_LOGLAM0 + SDSS_DLOGLAM * np.arange(6000)
    observed = 10 ** loglam[(10**loglam / (1 + z) > TEMPLATE_REST_RANGE[0])
                            & (10**loglam / (1 + z) < TEMPLATE_REST_RANGE[1])]
    distance = cosmology.Planck18.luminosity_distance(z)
    to_flux = (constants.L_sun / (4 * np.pi * distance**2) / units.AA).to_value(units.erg / units.s / units.cm**2
                                                                                 / units.AA) / 1e-17
    # pixel means of the template's density (flux-conserving), as a spectrograph integrates it
    rest_edges = resample.pixel_edges(observed) / (1 + z)
    template_edges = resample.pixel_edges(wavelength)
    cumulative = np.concatenate([[0.0], np.cumsum(luminosity * np.diff(template_edges))])
    density = np.diff(np.interp(rest_edges, template_edges, cumulative)) / np.diff(rest_edges)
    flux = density * to_flux / (1 + z)
    noise = np.interp(5500.0 * (1 + z), observed, flux) / SNR_AT_5500
    ivar = np.full(observed.size, noise**-2.0)
    return Spectrum(name, f"{name}.npz", observed, flux + rng.normal(0.0, noise, observed.size), ivar,
                    np.ones(observed.size, bool), z)


@pytest.fixture(scope="module")
def prepared():
    rng = np.random.default_rng(11)
    spectra = [observed_galaxy(name, rng) for name in GALAXIES]
    return pipeline.prepare_spectra(spectra, snr_policy="warn", log=lambda message: None)  # no lines: kept


def test_template_galaxies_come_back_with_their_mass(prepared):
    for i, (name, (_, populations)) in enumerate(GALAXIES.items()):
        true = np.log10(sum(populations.values()))
        found, error = prepared["log_stellar_mass"][i], prepared["log_stellar_mass_err"][i]
        assert abs(found - true) < MASS_TOL_DEX, f"{name}: log M {found:.3f}, true {true:.3f}"
        assert 0 < error < MAX_ERROR_DEX, f"{name}: error {error} dex"
    assert prepared["log_stellar_mass"].dtype == np.float32 and prepared["log_stellar_mass"].shape == (len(GALAXIES),)


def test_mass_scales_with_the_luminosity_distance():
    """The same fit at twice the distance is four times the mass: log M rises by 2 log10(D_L ratio)."""
    z = np.array([0.05, 0.2])
    ratio = (cosmology.Planck18.luminosity_distance(z[1]) / cosmology.Planck18.luminosity_distance(z[0])).value
    out = mass.stellar_mass(np.ones(2), np.full(2, 0.1), z, np.ones(2))
    assert out["log_stellar_mass"][1] - out["log_stellar_mass"][0] == pytest.approx(2 * np.log10(ratio), abs=1e-5)
    assert out["log_stellar_mass_err"] == pytest.approx(0.1 / np.log(10), rel=1e-5)


def test_no_mass_without_a_distance_or_stellar_light():
    out = mass.stellar_mass(np.array([1.0, 1.0, 0.0]), np.array([0.1, 0.1, np.nan]), np.array([0.0, -0.001, 0.1]),
                            np.ones(3))
    assert np.isnan(out["log_stellar_mass"]).all() and np.isnan(out["log_stellar_mass_err"]).all()


def test_template_mismatch_widens_the_error():
    """A continuum rchi2 of 4 doubles the formal error; below 1 it is left as it is."""
    out = mass.stellar_mass(np.ones(2), np.full(2, 0.1), np.full(2, 0.1), np.array([4.0, 0.5]))
    assert out["log_stellar_mass_err"][0] == pytest.approx(2 * 0.1 / np.log(10), rel=1e-5)
    assert out["log_stellar_mass_err"][1] == pytest.approx(0.1 / np.log(10), rel=1e-5)


def test_the_error_matches_the_scatter_over_noise_realisations():
    rng = np.random.default_rng(5)
    names = [name for name in ERROR_CASES for _ in range(REALISATIONS)]
    out = pipeline.prepare_spectra([observed_galaxy(name, rng) for name in names], snr_policy="warn",
                                   log=lambda message: None)
    for k, name in enumerate(ERROR_CASES):
        rows = slice(k * REALISATIONS, (k + 1) * REALISATIONS)
        ratio = np.std(out["log_stellar_mass"][rows], ddof=1) / np.median(out["log_stellar_mass_err"][rows])
        assert SCATTER_PER_ERROR[0] < ratio < SCATTER_PER_ERROR[1], f"{name}: scatter / error {ratio:.2f}"
