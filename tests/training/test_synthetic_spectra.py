"""Synthetic spectra: lines at their rest wavelengths with the requested ratios and S/N,
BPT regions as promised, and composites that conserve flux."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddm_jax.constants import (
    EMISSION_LINES,
    LINE_QUANTITIES,
    N_BINS,
    N_LINE_QUANTITIES,
    SPEED_OF_LIGHT_KMS,
    WAVELENGTH_STEP,
    norm_window_slice,
    wavelength_grid,
)
from ddm_jax.model import bpt
from ddm_jax.training import synthetic

WAVELENGTH = wavelength_grid().astype(np.float64)
WINDOW = norm_window_slice()
RATIO_TOL_DEX = 0.005  # line fluxes integrated over +-4 sigma windows of binned Gaussians
CENTROID_TOL_A = 0.25  # flux-weighted centroid of a line sampled on 2 A bins
SNR_REL_TOL = 0.06  # sd of 2208 noise draws is known to ~1.5%; 4 sigma
BATCH = 32  # the training tests' library size too: one compilation serves both
N_BATCHES = 8
SNR = 30.0

REQUESTED = synthetic.SpectrumParams(
    lines=jnp.array([-0.4, 0.3, -1.2, 0.35, 0.5, 0.1, -0.45, 1.6]),
    sigma_kms=jnp.float32(70.0), age=jnp.float32(0.5), slope=jnp.float32(-0.5))


def _line_flux(emission, centre, sigma_a):
    """Integrated flux of the line at `centre` from an emission-only spectrum (flux per A)."""
    window = np.abs(WAVELENGTH - centre) <= 4 * sigma_a + 1.0
    return float(np.sum(emission[window]) * WAVELENGTH_STEP)


@pytest.fixture(scope="module")
def emission():
    _, emission = synthetic.render_components(REQUESTED)
    return np.asarray(emission, np.float64)


def test_lines_land_at_their_rest_wavelengths(emission):
    isolated = ("hbeta", "oiii_5007", "oi_6300", "nii_6548", "halpha", "nii_6584", "sii_6717", "sii_6731")
    for name in isolated:
        centre = EMISSION_LINES[name]
        window = np.abs(WAVELENGTH - centre) <= 6.0
        centroid = np.sum(WAVELENGTH[window] * emission[window]) / np.sum(emission[window])
        assert abs(centroid - centre) < CENTROID_TOL_A, name


def test_line_fluxes_have_the_requested_ratios(emission):
    sigma = lambda name: EMISSION_LINES[name] * 70.0 / SPEED_OF_LIGHT_KMS  # noqa: E731
    flux = {name: _line_flux(emission, EMISSION_LINES[name], sigma(name))
            for name in ("hbeta", "oiii_5007", "oi_6300", "halpha", "nii_6584", "sii_6717", "sii_6731")}
    lines = np.asarray(REQUESTED.lines)
    measured = {
        0: np.log10(flux["nii_6584"] / flux["halpha"]),
        1: np.log10(flux["oiii_5007"] / flux["hbeta"]),
        2: np.log10(flux["oi_6300"] / flux["halpha"]),
        4: np.log10(flux["halpha"] / flux["hbeta"]),
        5: np.log10(flux["sii_6717"] / flux["sii_6731"]),
        6: np.log10((flux["sii_6717"] + flux["sii_6731"]) / flux["halpha"]),
    }
    for index, value in measured.items():
        assert abs(value - lines[index]) < RATIO_TOL_DEX, LINE_QUANTITIES[index]


def test_halpha_equivalent_width_is_the_requested_one(emission):
    sigma_a = EMISSION_LINES["halpha"] * 70.0 / SPEED_OF_LIGHT_KMS
    continuum = float(synthetic.smooth_continuum(REQUESTED.age, REQUESTED.slope, EMISSION_LINES["halpha"]))
    ew = _line_flux(emission, EMISSION_LINES["halpha"], sigma_a) / continuum
    assert abs(np.log10(ew) - float(REQUESTED.lines[7])) < RATIO_TOL_DEX


def test_noise_has_the_requested_snr():
    key = jax.random.PRNGKey(3)
    clean = synthetic.render_spectrum(REQUESTED, key, jnp.inf)
    snr = 20.0
    noisy = synthetic.render_spectrum(REQUESTED, key, snr)
    assert float(jnp.median(clean[WINDOW])) == pytest.approx(1.0, rel=1e-6)
    measured = 1.0 / float(jnp.std(noisy - clean))
    assert measured == pytest.approx(snr, rel=SNR_REL_TOL)


def _sf(key, spread=1.0):  # called as `synthetic_library` calls it: one compilation for all
    return synthetic.sf_spectra(key, BATCH, SNR, spread)


def _agn(key, spread=1.0):
    return synthetic.agn_spectra(key, BATCH, SNR, spread=spread)


def _draws(draw, seed):
    spectra, lines = zip(*(draw(jax.random.PRNGKey(seed + i)) for i in range(N_BATCHES)))
    return jnp.concatenate(spectra), jnp.concatenate(lines)


def test_drawn_spectra_are_finite_and_in_their_bpt_regions():
    sf, sf_lines = _draws(_sf, 0)
    agn, agn_lines = _draws(_agn, 100)
    n = BATCH * N_BATCHES
    assert sf.shape == agn.shape == (n, N_BINS)
    assert sf_lines.shape == agn_lines.shape == (n, N_LINE_QUANTITIES)
    assert bool(jnp.isfinite(sf).all() & jnp.isfinite(agn).all())
    assert (np.asarray(bpt.classify_nii(sf_lines[:, 0], sf_lines[:, 1])) == bpt.STAR_FORMING).all()
    assert (np.asarray(bpt.classify_sii(sf_lines[:, 6], sf_lines[:, 1])) == bpt.STAR_FORMING).all()
    nii_classes = np.asarray(bpt.classify_nii(agn_lines[:, 0], agn_lines[:, 1]))
    sii_classes = np.asarray(bpt.classify_sii(agn_lines[:, 6], agn_lines[:, 1]))
    assert np.isin(nii_classes, (bpt.SEYFERT, bpt.LINER)).all()
    assert (nii_classes == bpt.SEYFERT).any() and (nii_classes == bpt.LINER).any()
    assert (sii_classes == nii_classes).all()  # Seyferts and LINERs agree across diagrams


def test_spread_narrows_the_parameter_ranges():
    _, full = _sf(jax.random.PRNGKey(0))
    _, narrow = _sf(jax.random.PRNGKey(0), spread=0.25)
    _, middle = _agn(jax.random.PRNGKey(0), spread=0.0)
    linear = [0, 2, 3, 4, 5, 7]  # SF quantities drawn directly (not through a BPT curve)
    np.testing.assert_allclose(jnp.std(narrow[:, linear], axis=0), 0.25 * jnp.std(full[:, linear], axis=0),
                               rtol=1e-3)
    seyferts = np.asarray(bpt.classify_nii(middle[:, 0], middle[:, 1])) == bpt.SEYFERT
    assert float(jnp.ptp(middle[seyferts], axis=0).max()) == 0.0  # every Seyfert at the middle


def test_spectra_are_a_pure_function_of_the_key():
    first, _ = _sf(jax.random.PRNGKey(7))
    again, _ = _sf(jax.random.PRNGKey(7))
    other, _ = _sf(jax.random.PRNGKey(8))
    assert bool((first == again).all()) and not bool((first == other).all(axis=1).any())


def test_composites_conserve_flux():
    sf, _ = _sf(jax.random.PRNGKey(0))
    agn, _ = _agn(jax.random.PRNGKey(1))
    mixed, w, i_sf, i_agn = synthetic.random_composites(jax.random.PRNGKey(2), sf, agn, 16)
    assert mixed.shape == (16, N_BINS) and bool(((w >= 0) & (w <= 1)).all())
    expected = w[:, None] * sf[i_sf] + (1 - w[:, None]) * agn[i_agn]
    np.testing.assert_allclose(mixed, expected, rtol=1e-6)
    total = lambda s: s[:, WINDOW].sum(axis=1)  # noqa: E731
    np.testing.assert_allclose(total(mixed), w * total(sf[i_sf]) + (1 - w) * total(agn[i_agn]), rtol=1e-5)
    np.testing.assert_array_equal(synthetic.composite(sf[0], agn[0], 1.0), sf[0])
    np.testing.assert_array_equal(synthetic.composite(sf[0], agn[0], 0.0), agn[0])


# Standard air wavelengths (Angstrom) of the strong lines, as tabulated for optical spectroscopy.
AIR_WAVELENGTHS = {"hbeta": 4861.33, "oiii_5007": 5006.84, "oi_6300": 6300.30, "nii_6548": 6548.05,
                   "halpha": 6562.80, "nii_6584": 6583.45, "sii_6717": 6716.44, "sii_6731": 6730.82}
AIR_TOL_A = 0.05  # the tabulated air values' rounding; air and vacuum differ by ~1.8 A here


def test_lines_are_at_vacuum_wavelengths():
    """The one line table (which synthesis and `prepare` both read) is in vacuum, as SDSS and MaNGA
    spectra are: taken to air with the refractive index of Morton (2000) it gives the air values."""
    for name, air in AIR_WAVELENGTHS.items():
        vacuum = EMISSION_LINES[name]
        s2 = (1e4 / vacuum) ** 2
        index = 1 + 8.34254e-5 + 2.406147e-2 / (130 - s2) + 1.5998e-4 / (38.9 - s2)
        assert abs(vacuum / index - air) < AIR_TOL_A, name
