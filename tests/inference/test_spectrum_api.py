"""`Decomposer` on specutils.Spectrum: the same numbers as arrays, any units and frame, Spectrum parts
and an astropy Table out, clear errors."""

import numpy as np
import pytest

from conftest import TINY_DDM_KERAS, TINY_REGRESSOR_KERAS
from ddm_jax.cli import main
from ddm_jax.errors import DDMError
from ddm_jax.evaluation.demo import bundled
from ddm_jax.inference.decomposer import Decomposer
from ddm_jax.io.outputs.files import read_arrays
from ddm_jax.io.outputs.table import catalog_table
from ddm_jax.model.preprocess import normalize_batch

specutils = pytest.importorskip("specutils", reason="the Spectrum API needs specutils: pip install ddm-jax[specutils]")
u = pytest.importorskip("astropy.units")
from astropy.nddata import InverseVariance, StdDevUncertainty, VarianceUncertainty  # noqa: E402
from astropy.table import Table  # noqa: E402

# A spectrum moved to another frame or unit is rebinned back in float64 and cast to float32: the
# network's outputs then agree to float32 rounding carried through the layers.
RESAMPLED_ATOL = 2e-4
F_LAMBDA = u.Unit("1e-17 erg / (s cm2 Angstrom)")
Z = 0.05


@pytest.fixture(scope="module")
def decomposer(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "ckpt"
    assert main(["convert", str(TINY_DDM_KERAS), str(TINY_REGRESSOR_KERAS), "-o", str(path)]) == 0
    return Decomposer.from_checkpoint(path)


@pytest.fixture(scope="module")
def example():
    spectra = np.load(bundled("example_spectra.npz"))
    return spectra["flux"].astype(np.float64), spectra["mass"]


def observed(flux_row, z=Z):
    """One rest-frame grid spectrum seen at redshift z: every pixel moves to (1 + z) lambda, the
    flux density falls by (1 + z). Two pixels more at each end (as a real spectrum reaches beyond
    the grid), so that rounding in (1 + z) lambda / (1 + z) leaves no end bin short."""
    wavelength = (3700.0 + 2.0 * np.arange(-2, 2210)) * (1 + z)
    return wavelength * u.AA, np.pad(flux_row, 2, mode="edge") / (1 + z) * F_LAMBDA


def test_spectrum_on_the_grid_gives_the_array_numbers_exactly(decomposer, example):
    flux, mass = example
    ivar = np.full_like(flux, 4.0)
    arrays = decomposer(flux, mass, ivar=ivar)
    spectrum = specutils.Spectrum(flux=flux * F_LAMBDA, spectral_axis=decomposer.wavelength * u.AA,
                                  uncertainty=StdDevUncertainty(np.full_like(flux, 0.5)))
    result = decomposer(spectrum, mass)
    for key, value in arrays.items():
        np.testing.assert_array_equal(result.arrays[key], value, err_msg=key)
    assert np.isfinite(result.arrays["reconstruction_chi2"]).all()  # the uncertainty reached the trust outputs


def test_parts_are_spectra_and_numbers_a_table(decomposer, example, tmp_path):
    flux, mass = example
    result = decomposer(specutils.Spectrum(flux=flux * F_LAMBDA, spectral_axis=decomposer.wavelength * u.AA), mass)
    for key in ("sf_spectrum", "agn_spectrum", "residual"):
        part = getattr(result, key)
        assert isinstance(part, specutils.Spectrum) and part.flux.shape == flux.shape
        np.testing.assert_array_equal(part.flux.value, result.arrays[key])
        np.testing.assert_allclose(part.spectral_axis.to_value(u.AA), decomposer.wavelength)
        assert part.meta["frame"] == "rest"
    w = result.arrays["sf_fraction"][:, None]
    recomposed = w * result.sf_spectrum.flux.value + (1 - w) * result.agn_spectrum.flux.value
    np.testing.assert_allclose(recomposed - result.residual.flux.value, result.input.flux.value, atol=1e-6)
    # and the input is the normalised spectrum, computed here independently of the parts
    np.testing.assert_allclose(result.input.flux.value, normalize_batch(flux.astype(np.float32), mass), atol=1e-5)
    assert isinstance(result.table, Table) and len(result.table) == flux.shape[0]
    np.testing.assert_array_equal(result.table["sf_fraction"], result.arrays["sf_fraction"])
    np.testing.assert_array_equal(result.table["agn_log_nii_ha"], result.arrays["line_ratios"][:, 2, 0])
    assert result.table.colnames == catalog_table(result.arrays).colnames
    result.write(tmp_path / "out.fits")  # the table is the one a FITS reader sees
    assert result.table.colnames == Table.read(tmp_path / "out.fits").colnames


def test_observed_frame_with_redshift_matches_the_rest_frame_arrays(decomposer, example):
    flux, mass = example
    arrays = decomposer(flux, mass)
    spectra = []
    for row in flux:
        wavelength, density = observed(row)
        spectra.append(specutils.Spectrum(flux=density, spectral_axis=wavelength, redshift=Z))
    result = decomposer(spectra, mass)
    for key in ("p_sf", "p_agn", "sf_fraction", "sf_spectrum", "agn_spectrum", "line_ratios"):
        np.testing.assert_allclose(result.arrays[key], arrays[key], rtol=0, atol=RESAMPLED_ATOL, err_msg=key)
    np.testing.assert_allclose(result.arrays["z"], np.full(len(flux), Z), rtol=1e-12)  # specutils keeps z as a velocity
    # without a redshift the spectrum is taken as rest frame (and misses the grid's blue end); z= gives one
    wavelength, density = observed(flux[0])
    bare = specutils.Spectrum(flux=density, spectral_axis=wavelength)
    with pytest.raises(DDMError, match="rest-frame bins not covered"):
        decomposer(bare, mass[:1])
    np.testing.assert_allclose(decomposer(bare, mass[:1], z=Z).arrays["p_sf"], arrays["p_sf"][:1], atol=RESAMPLED_ATOL)


@pytest.mark.parametrize("axis_unit", ["GHz", "keV", "1/cm", "nm"])
def test_frequency_energy_wavenumber_axes_and_f_nu(decomposer, example, axis_unit):
    flux, mass = example
    wavelength, density = observed(flux[0])
    f_nu = density.to(u.mJy, equivalencies=u.spectral_density(wavelength))
    axis = wavelength.to(axis_unit, equivalencies=u.spectral())
    order = np.argsort(axis.value)  # frequency, energy and wavenumber run opposite to wavelength
    spectrum = specutils.Spectrum(flux=f_nu[order], spectral_axis=axis[order], redshift=Z)
    result = decomposer(spectrum, mass[:1])
    for key in ("p_sf", "sf_spectrum", "line_ratios"):
        np.testing.assert_allclose(result.arrays[key][0], decomposer(flux[:1], mass[:1])[key][0], rtol=0,
                                   atol=RESAMPLED_ATOL, err_msg=key)


def test_uncertainty_as_std_variance_or_ivar_is_the_same(decomposer, example):
    flux, mass = example
    std = np.full_like(flux[0], 0.5)
    chi2 = []
    for uncertainty in (StdDevUncertainty(std), VarianceUncertainty(std ** 2), InverseVariance(1 / std ** 2)):
        spectrum = specutils.Spectrum(flux=flux[0] * F_LAMBDA, spectral_axis=decomposer.wavelength * u.AA,
                                      uncertainty=uncertainty)
        chi2.append(decomposer(spectrum, mass[:1]).arrays["reconstruction_chi2"][0])
    assert np.isfinite(chi2[0]) and chi2[0] == chi2[1] == chi2[2]
    wavelength, density = observed(flux[0])
    masked = specutils.Spectrum(flux=density, spectral_axis=wavelength, uncertainty=StdDevUncertainty(np.pad(std, 2)),
                                mask=np.arange(2212) % 7 == 0, redshift=Z)
    assert np.isfinite(decomposer(masked, mass[:1]).arrays["reconstruction_chi2"][0])


def test_masked_pixels_on_the_grid_are_filled_not_passed_on(decomposer, example):
    flux, mass = example
    values = flux[0].copy()
    values[500:510] = np.nan  # masked pixels whose values are not numbers
    spectrum = specutils.Spectrum(flux=values * F_LAMBDA, spectral_axis=decomposer.wavelength * u.AA,
                                  mask=np.isnan(values))
    result = decomposer(spectrum, mass[:1], coverage="fill")
    assert np.isfinite(result.arrays["p_sf"]).all()
    mask = result.arrays["resample_mask"][0]
    assert (mask[500:510] != 0).all() and (mask[:400] == 0).all()


def test_a_2d_spectrum_is_a_batch(decomposer, example):
    flux, mass = example
    wavelength = decomposer.wavelength * u.AA
    batch = decomposer(specutils.Spectrum(flux=flux * F_LAMBDA, spectral_axis=wavelength), mass)
    listed = decomposer([specutils.Spectrum(flux=row * F_LAMBDA, spectral_axis=wavelength) for row in flux], mass)
    np.testing.assert_array_equal(batch.arrays["p_sf"], listed.arrays["p_sf"])
    single = decomposer(specutils.Spectrum(flux=flux[0] * F_LAMBDA, spectral_axis=wavelength), mass[:1])
    assert single.sf_spectrum.flux.shape == (2208,)


def test_result_writes_a_fits_catalogue(decomposer, example, tmp_path):
    flux, mass = example
    result = decomposer(specutils.Spectrum(flux=flux * F_LAMBDA, spectral_axis=decomposer.wavelength * u.AA), mass)
    result.write(tmp_path / "out.fits")
    back = read_arrays(tmp_path / "out.fits")
    np.testing.assert_array_equal(back["sf_spectrum"], result.arrays["sf_spectrum"])
    assert Table.read(tmp_path / "out.fits").colnames == result.table.colnames


def test_bad_spectrum_inputs_are_clear(decomposer, example):
    flux, mass = example
    wavelength = decomposer.wavelength * u.AA
    spectrum = specutils.Spectrum(flux=flux * F_LAMBDA, spectral_axis=wavelength)
    with pytest.raises(DDMError, match="carries its own uncertainty"):
        decomposer(spectrum, mass, ivar=np.ones_like(flux))
    with pytest.raises(DDMError, match="one redshift per spectrum"):
        decomposer(spectrum, mass, z=[0.0, 0.1])
    with pytest.raises(DDMError, match="finite and >= 0"):
        decomposer(spectrum, mass, z=-0.5)
    with pytest.raises(DDMError, match="z applies to specutils.Spectrum inputs"):
        decomposer(flux, mass, z=0.1)
    with pytest.raises(DDMError, match="coverage must be one of"):
        decomposer(spectrum, mass, coverage="stretch")
    short = specutils.Spectrum(flux=flux[0, :1000] * F_LAMBDA, spectral_axis=wavelength[:1000])
    with pytest.raises(DDMError, match="1208 of 2208 rest-frame bins not covered"):
        decomposer(short, mass[:1])
    filled = decomposer(short, mass[:1], coverage="fill")
    assert (filled.arrays["resample_mask"][0, 1000:] != 0).all()
