"""Rest-frame rebinning: exact flux conservation, ivar propagation, masks, coverage, padding."""

import copy

import numpy as np

from ddm_jax.io.loaders.sdss import read_sdss_fits
from ddm_jax.spectra import resample
from ddm_jax.spectra.spectrum import Spectrum
from spectra_helpers import STRONG, ppxf_sdss_path, rest_density, sdss_like

# float32 sums over ~2200 bins (the total rounds at ~1e-7 of itself; measured 4e-7).
TOTAL_FLUX_RTOL = 1e-5
# float32 wavelengths near 8000 A are quantised to 5e-4 A, i.e. 2.5e-4 of a 2 A bin, and
# that much of a pixel's flux can move between neighbouring bins.
PER_BIN_RTOL = 1e-3
# Pulls of ~2000 rebinned bins: their sample std is 1 within 1/sqrt(2 x 2000) = 1.6 %; 3 sigma.
PULL_STD_TOL = 0.05


def _rebin(spectra):
    batch = resample.pad_batch(spectra)
    out = resample.rebin_batch(*(batch[k] for k in resample.BATCH_KEYS), max_pixels=batch["max_pixels"])
    return [np.asarray(a) for a in out]


def _real_all_good():
    spectrum = read_sdss_fits(ppxf_sdss_path(STRONG))
    spectrum.good[:] = True  # conservation is a statement about the unmasked box model
    return spectrum


def _reference_bins(spectrum):
    """float64 reference: interpolate the cumulative integral of the box model at the grid edges."""
    edges = resample.pixel_edges(spectrum.wavelength) / (1 + spectrum.z)
    density = spectrum.flux * (1 + spectrum.z)
    cumulative = np.concatenate([[0.0], np.cumsum(np.diff(edges) * density)])
    at = np.interp(resample.grid_edges(), edges, cumulative)
    return edges, cumulative, np.diff(at) / np.diff(resample.grid_edges())


def test_flux_conserved_over_covered_range():
    spectrum = _real_all_good()
    flux, _, mask = _rebin([spectrum])
    covered = mask[0] & resample.NO_COVERAGE == 0
    edges, cumulative, _ = _reference_bins(spectrum)
    lo, hi = resample.grid_edges()[:-1][covered][0], resample.grid_edges()[1:][covered][-1]
    expected = np.diff(np.interp([lo, hi], edges, cumulative))[0]
    total = np.sum(flux[0][covered].astype(np.float64) * 2.0)
    assert abs(total / expected - 1) < TOTAL_FLUX_RTOL, (total, expected)


def test_every_covered_bin_matches_float64_reference():
    spectrum = _real_all_good()
    flux, _, mask = _rebin([spectrum])
    covered = mask[0] == 0
    assert covered.sum() > 2000
    reference = _reference_bins(spectrum)[2]
    err = np.abs(flux[0][covered] - reference[covered]) / np.abs(reference[covered])
    assert err.max() < PER_BIN_RTOL, err.max()


def test_ivar_propagation_gives_unit_pulls():
    spectrum = sdss_like(z=0.02, noise=2.0, rng=np.random.default_rng(0))
    truth = copy.deepcopy(spectrum)
    truth.flux = rest_density(resample.pixel_edges(truth.wavelength) / 1.02) / 1.02
    flux, ivar, mask = _rebin([spectrum, truth])
    good = mask[0] == 0
    pulls = (flux[0][good] - flux[1][good]) * np.sqrt(ivar[0][good])
    assert good.sum() > 2000
    assert abs(pulls.std() - 1) < PULL_STD_TOL, pulls.std()


def test_masked_pixels_neither_leak_nor_vanish():
    rng = np.random.default_rng(1)
    spectrum = sdss_like(z=0.02, noise=1.0, rng=rng)
    spectrum.flux[:] = 50.0 / 1.02  # flat rest-frame density 50
    block = slice(1500, 1520)
    spectrum.flux[block], spectrum.good[block] = 1e6, False
    flux, ivar, mask = _rebin([spectrum])
    flux, ivar, mask = flux[0], ivar[0], mask[0]
    inside = mask & resample.NO_COVERAGE == 0
    np.testing.assert_allclose(flux[inside], 50.0, rtol=PER_BIN_RTOL)
    no_data = (mask & resample.NO_DATA) != 0
    assert no_data.sum() >= 5
    # exactly the bins that lie wholly inside the masked pixels' rest-frame span
    pixel = resample.pixel_edges(spectrum.wavelength) / 1.02
    grid = resample.grid_edges()
    np.testing.assert_array_equal(no_data, (grid[:-1] >= pixel[1500]) & (grid[1:] <= pixel[1520]))
    assert np.all(mask[no_data] & resample.FILLED) and np.all(ivar[no_data] == 0)
    # Bins partly masked keep their good part: measured, with less weight than a clean bin.
    edges = np.flatnonzero(no_data)[[0, -1]] + [-1, 1]
    assert np.all(mask[edges] == 0) and np.all(ivar[edges] < np.median(ivar[mask == 0]))


def test_uncovered_bins_reported_and_filled_from_the_edge():
    spectrum = read_sdss_fits(ppxf_sdss_path(STRONG))
    flux, ivar, mask = _rebin([spectrum])
    edges = resample.pixel_edges(spectrum.wavelength) / (1 + spectrum.z)
    grid = resample.grid_edges()
    expected = (grid[:-1] < edges[0]) | (grid[1:] > edges[-1])
    assert expected.any()  # SDSS legacy spectra start at 3800 A: z = 0.004 misses 3700-3780 A
    np.testing.assert_array_equal((mask[0] & resample.NO_COVERAGE) != 0, expected)
    count, ranges = resample.coverage_report(mask[0])
    assert count == expected.sum() and ranges.startswith("3700-")
    first_good = np.flatnonzero(mask[0] == 0)[0]
    np.testing.assert_array_equal(flux[0][expected], flux[0][first_good])
    assert np.all(ivar[0][expected] == 0)


def test_padding_and_batching_do_not_change_a_spectrum():
    long = read_sdss_fits(ppxf_sdss_path(STRONG))
    short = read_sdss_fits(ppxf_sdss_path(STRONG))
    for key in ("wavelength", "flux", "ivar", "good"):
        setattr(short, key, getattr(short, key)[300:2300])
    together = _rebin([long, short])
    for row, spectrum in enumerate([long, short]):
        alone = _rebin([spectrum])
        for a, b in zip(alone, together):
            np.testing.assert_array_equal(a[0], b[row])


def _fine_spectrum(step: float, z: float) -> Spectrum:
    """A spectrum of `step`-Angstrom pixels covering the grid at z: many pixels per output bin."""
    wavelength = np.arange(3690 * (1 + z), 8130 * (1 + z), step)
    edges = resample.pixel_edges(wavelength) / (1 + z)
    flux = rest_density(edges) / (1 + z)
    return Spectrum("fine", "fine.npz", wavelength, flux, np.full(flux.size, 4.0), np.ones(flux.size, bool), z)


def test_a_spectrum_rebins_to_the_same_bits_alone_and_among_others():
    """Issue 20: 0.6 A pixels at z = 1 put up to 7 pixel edges in a bin; rebinned in one batch with
    them, this SDSS spectrum's flux moved by 1.1e-4 of its peak (the batch-wide max_pixels changed
    the compiled program, and XLA's float32 division by 1 + z with it)."""
    spectrum = read_sdss_fits(ppxf_sdss_path(STRONG))
    fine = _fine_spectrum(0.6, 1.0)
    assert resample.max_pixels(fine) >= 2 * resample.max_pixels(spectrum)
    alone = resample.rebin_spectra([spectrum])
    mixed = resample.rebin_spectra([fine, spectrum] + [spectrum] * 40)  # two rebin keys, 64-row batches
    fine_alone = resample.rebin_spectra([fine])
    for key in ("flux", "ivar", "mask"):
        for row in range(1, 42):
            np.testing.assert_array_equal(mixed[key][row], alone[key][0], err_msg=f"{key}, row {row}")
        np.testing.assert_array_equal(mixed[key][0], fine_alone[key][0], err_msg=key)


def test_the_kernel_does_not_depend_on_max_pixels_beyond_what_a_spectrum_needs():
    spectrum = read_sdss_fits(ppxf_sdss_path(STRONG))
    batch = resample.pad_batch([spectrum])
    arrays = [batch[k] for k in resample.BATCH_KEYS]
    own = resample.rebin_batch(*arrays, max_pixels=batch["max_pixels"])
    for larger in (batch["max_pixels"] + 3, 40):
        for a, b in zip(own, resample.rebin_batch(*arrays, max_pixels=larger)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
