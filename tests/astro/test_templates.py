"""The bundled BC03 template set (ddm_jax/data/templates_bc03.npz) and its API: the grid, the
normalisation, physics that a wrong build would break (the 4000 A break, Balmer lines, vacuum
wavelengths), and `select`, `mix`, `load_templates`."""

import numpy as np
import pytest

from ddm_jax.astro import templates as templates_module
from ddm_jax.astro.templates import TemplateSet, load_templates, mix
from ddm_jax.constants import SPEED_OF_LIGHT_KMS
from ddm_jax.errors import DDMError

AGES_GYR = [0.005, 0.025, 0.101, 0.286, 0.640, 0.904, 1.434, 2.5, 5.0, 10.0]
METALLICITIES = [0.004, 0.008, 0.02, 0.05]
VELSCALE = 30.0
HALPHA_VACUUM, HALPHA_AIR = 6564.61, 6562.80


@pytest.fixture(scope="module")
def ssp() -> TemplateSet:
    return load_templates("bc03")


def band_mean(ssp, lo, hi):
    """(N,) mean flux of every template in lo..hi Angstrom."""
    window = (ssp.wavelength >= lo) & (ssp.wavelength <= hi)
    return ssp.flux[:, window].astype(np.float64).mean(axis=1)


def d4000(ssp):
    """The narrow 4000 A break (Balogh et al. 1999): mean flux 4000-4100 A over 3850-3950 A."""
    return band_mean(ssp, 4000, 4100) / band_mean(ssp, 3850, 3950)


def hdelta_ew(ssp):
    """(N,) Hdelta_A equivalent width in Angstrom (Worthey & Ottaviani 1997 bands, converted to
    vacuum): positive is absorption."""
    blue, line, red = (4042.74, 4080.90), (4084.65, 4123.41), (4129.66, 4162.17)
    window = (ssp.wavelength >= line[0]) & (ssp.wavelength <= line[1])
    b, r = band_mean(ssp, *blue), band_mean(ssp, *red)
    cb, cr = np.mean(blue), np.mean(red)
    continuum = b[:, None] + (r - b)[:, None] * (ssp.wavelength[window] - cb) / (cr - cb)
    step = np.gradient(ssp.wavelength)[window]
    return ((1.0 - ssp.flux[:, window] / continuum) * step).sum(axis=1)


def grid_of(ssp, values):
    """(4, 10) metallicity x age table of per-template values (templates are sorted that way)."""
    return np.asarray(values).reshape(len(METALLICITIES), len(AGES_GYR))


# ----------------------------------------------------------------------------- contents and grid

def test_forty_templates_sorted_by_metallicity_then_age(ssp):
    assert ssp.name == "bc03" and ssp.n_templates == 40
    assert ssp.flux.shape == (40, ssp.wavelength.size) and ssp.flux.dtype == np.float32
    np.testing.assert_allclose(grid_of(ssp, ssp.metallicities), np.repeat([METALLICITIES], 10, axis=0).T)
    np.testing.assert_allclose(grid_of(ssp, ssp.ages_gyr), np.repeat([AGES_GYR], 4, axis=0), atol=5e-4)
    assert ssp.fwhm_angstrom == 2.3 and ssp.velscale == VELSCALE
    assert ssp.norms.shape == (40,) and np.all(ssp.norms > 0)


def test_grid_is_log_uniform_vacuum_at_velscale(ssp):
    wl = ssp.wavelength
    assert wl.dtype == np.float64
    step_kms = np.diff(ssp.log_wavelength) * SPEED_OF_LIGHT_KMS
    np.testing.assert_allclose(step_kms, VELSCALE, rtol=1e-8)
    np.testing.assert_allclose(ssp.log_wavelength, np.log(wl))
    assert wl[0] <= 3500.0 and wl[-1] >= 8500.0
    assert wl[0] > 3499.0 and wl[-1] < 8501.0, "the grid should cover 3500-8500 A, not more"


def test_flux_finite_positive_unit_median(ssp):
    assert np.all(np.isfinite(ssp.flux)) and np.all(ssp.flux > 0)
    window = (ssp.wavelength >= 5300) & (ssp.wavelength <= 5700)
    np.testing.assert_allclose(np.median(ssp.flux[:, window], axis=1), 1.0, rtol=1e-5)


def test_arrays_are_read_only(ssp):
    with pytest.raises(ValueError):
        ssp.flux[0, 0] = 0.0
    assert load_templates("bc03") is load_templates("bc03")  # cached: safe only because read-only


# ----------------------------------------------------------------------------- physics

def test_4000_break_grows_with_age(ssp):
    # Measured: D4000 rises monotonically with age at every Z, from 0.93-0.94 at 5 Myr to
    # 1.59 (Z=0.004), 1.74, 1.97 (solar) and 2.13 (Z=0.05) at 10 Gyr.
    table = grid_of(ssp, d4000(ssp))
    assert np.all(np.diff(table, axis=1) > 0), f"D4000 not increasing with age:\n{table.round(3)}"
    solar = METALLICITIES.index(0.02)
    assert table[solar, -1] > 1.85, f"10 Gyr solar D4000 {table[solar, -1]:.3f}"
    assert np.all(table[:, 0] < 1.0), f"5 Myr D4000 {table[:, 0].round(3)}"
    assert np.all(table[:, -1] > 1.5)
    # at fixed (old) age, metal-rich populations have the stronger break
    assert np.all(np.diff(table[:, -1]) > 0)


def test_balmer_absorption_deepest_at_intermediate_ages(ssp):
    # Measured Hdelta_A: peaks at 0.29-0.64 Gyr (8.8-10.8 A) at every Z; at 10 Gyr 0.3 to -3.7 A.
    table = grid_of(ssp, hdelta_ew(ssp))
    ages = np.array(AGES_GYR)
    peak_age = ages[np.argmax(table, axis=1)]
    assert np.all((peak_age >= 0.25) & (peak_age <= 1.0)), f"Hdelta_A peaks at {peak_age} Gyr:\n{table.round(2)}"
    intermediate = (ages >= 0.25) & (ages <= 1.0)
    assert np.all(table[:, intermediate].max(axis=1) > table[:, -1] + 5.0), table.round(2)
    assert np.all(table[:, intermediate].max(axis=1) > 8.0), table.round(2)


def line_minimum(wavelength, flux, guess, half_width=4.0):
    """Wavelength of the flux minimum within guess +- half_width, refined by a parabola through
    the lowest pixel and its neighbours (in ln lambda, where the grid is uniform)."""
    index = np.flatnonzero(np.abs(wavelength - guess) < half_width)
    j = index[np.argmin(flux[index])]
    y0, y1, y2 = flux[j - 1 : j + 2].astype(np.float64)
    offset = 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2)
    return float(np.exp(np.log(wavelength[j]) + offset * np.diff(np.log(wavelength[:2]))[0]))


def test_halpha_is_at_its_vacuum_wavelength(ssp):
    # The source is on air wavelengths; the build converts them. Measured: 6564.25 A for the
    # 0.64 Gyr solar SSP, 6564.0-6564.4 over 0.29-0.9 Gyr (the source's own line centres sit
    # 0.2-0.5 A off the laboratory value, before any conversion); air would be ~6562.4.
    solar_640 = np.flatnonzero((ssp.metallicities == 0.02) & np.isclose(ssp.ages_gyr, 0.64))[0]
    centre = line_minimum(ssp.wavelength, ssp.flux[solar_640], HALPHA_VACUUM)
    assert abs(centre - HALPHA_VACUUM) < 0.5, f"Halpha at {centre:.2f} A"
    assert centre - HALPHA_AIR > 1.0, f"Halpha at {centre:.2f} A: air wavelengths?"
    intermediate = np.flatnonzero((ssp.ages_gyr >= 0.25) & (ssp.ages_gyr <= 1.0))
    centres = [line_minimum(ssp.wavelength, ssp.flux[i], HALPHA_VACUUM) for i in intermediate]
    assert abs(np.median(centres) - HALPHA_VACUUM) < 0.5, np.round(centres, 2)


def test_sigma_kms(ssp):
    # FWHM 2.3 A is 2.3 / 2.3548 / 5000 * c = 58.6 km/s at 5000 A
    assert ssp.sigma_kms(5000.0) == pytest.approx(SPEED_OF_LIGHT_KMS * 2.3 / 2.354820 / 5000.0, rel=1e-6)
    assert ssp.sigma_kms(5000.0) == pytest.approx(58.56, abs=0.01)
    sigma = ssp.sigma_kms(ssp.wavelength)
    assert sigma.shape == ssp.wavelength.shape and np.all(np.diff(sigma) < 0)
    with pytest.raises(DDMError):
        ssp.sigma_kms(-1.0)


# ----------------------------------------------------------------------------- select and mix

def test_select(ssp):
    held_out = np.isclose(ssp.ages_gyr, 0.64)
    train = ssp.select(~held_out)
    assert train.n_templates == 36 and not np.any(np.isclose(train.ages_gyr, 0.64))
    np.testing.assert_array_equal(train.flux, ssp.flux[~held_out])
    np.testing.assert_array_equal(train.norms, ssp.norms[~held_out])
    assert train.wavelength is not ssp.wavelength and np.array_equal(train.wavelength, ssp.wavelength)
    assert (train.name, train.fwhm_angstrom, train.velscale) == (ssp.name, ssp.fwhm_angstrom, ssp.velscale)
    picked = ssp.select([3, 0])
    np.testing.assert_array_equal(picked.ages_gyr, ssp.ages_gyr[[3, 0]])
    for bad in (np.zeros(40, bool), np.ones(39, bool), [40], [0.5]):
        with pytest.raises(DDMError):
            ssp.select(bad)


def test_mix(ssp):
    one_hot = np.zeros(ssp.n_templates)
    one_hot[17] = 1.0
    spectrum = mix(ssp, one_hot)
    assert spectrum.shape == ssp.wavelength.shape
    np.testing.assert_array_equal(spectrum, ssp.flux[17].astype(np.float64))
    weights = np.random.default_rng(0).random(ssp.n_templates)
    np.testing.assert_allclose(mix(ssp, weights), (weights[:, None] * ssp.flux).sum(axis=0), rtol=1e-6)
    batch = np.stack([one_hot, weights])
    np.testing.assert_allclose(mix(ssp, batch), np.stack([spectrum, mix(ssp, weights)]))
    # light fractions summing to 1 keep the unit median in the window, to within the mix's shape change
    window = (ssp.wavelength >= 5300) & (ssp.wavelength <= 5700)
    assert np.median(mix(ssp, weights / weights.sum())[window]) == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("bad", [
    np.full(40, -0.1), np.r_[np.ones(39), np.nan], np.r_[np.ones(39), np.inf], np.ones(39), np.float64(1.0),
])
def test_mix_refuses_bad_weights(ssp, bad):
    with pytest.raises(DDMError):
        mix(ssp, bad)


# ----------------------------------------------------------------------------- loading errors

@pytest.mark.parametrize("name", ["no_such_set", "../templates_bc03", ""])
def test_load_missing_or_bad_name(name):
    with pytest.raises(DDMError):
        load_templates(name)


def test_load_damaged_file(tmp_path, monkeypatch, ssp):
    monkeypatch.setattr(templates_module, "data_dir", lambda: tmp_path)
    templates_module._load.cache_clear()
    try:
        (tmp_path / "templates_truncated.npz").write_bytes(b"PK\x03\x04 not really a zip")
        np.savez(tmp_path / "templates_nokeys.npz", flux=np.ones((2, 3)))
        np.savez(tmp_path / "templates_mismatch.npz", wavelength=np.arange(4.0), flux=np.ones((2, 3)),
                 ages_gyr=np.ones(2), metallicities=np.ones(2), norms=np.ones(2), fwhm_angstrom=2.3, velscale=30.0)
        for name in ("truncated", "nokeys", "mismatch"):
            with pytest.raises(DDMError, match=name):
                load_templates(name)
    finally:
        templates_module._load.cache_clear()
