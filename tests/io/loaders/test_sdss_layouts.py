"""SDSS DR7 spSpec and SDSS-IV eBOSS spec files, written after their data models from a real SDSS
DR18 spectrum (pPXF's; tests/sdss_layouts.py), read as the DR8+ reader reads the original file;
damaged ones refused on one line while the batch goes on."""

import dataclasses

import numpy as np
import pytest

from ddm_jax.io.loaders.registry import fits_layout, read_any, read_many
from ddm_jax.io.loaders.sdss_dr7 import read_spspec
from ddm_jax.spectra.resample import rebin_spectra
from ddm_jax.spectra.spectrum import validate
from sdss_layouts import dr8_values, write_eboss, write_spspec
from spectra_helpers import STRONG, ppxf_sdss_path

fits = pytest.importorskip("astropy.io.fits", reason="the survey readers need astropy")

# DR8+ files store log10(lambda) as float32: half a unit in the last place of ~3.9 is 1.2e-7 dex, so
# their wavelengths sit up to 2.7e-7 (relative) off DR7's float64 lattice 10 ** (COEFF0 + COEFF1 i).
WAVELENGTH_RTOL = 3e-7
# The DR7 error row is float32 1 / sqrt(ivar): ivar back from it is off by a few float32 roundings.
IVAR_RTOL = 1e-6
# On the rest-frame grid those wavelengths move pixel edges by up to 0.004 A (2e-3 of a 2 A bin):
# a bin's flux moves by a fraction of that (measured 2.5e-4), its ivar, quadratic in the partial
# overlaps, by a few times more (measured 2.4e-3).
REST_FLUX_RTOL, REST_IVAR_RTOL = 1e-3, 1e-2


@pytest.fixture(scope="module")
def original():
    """pPXF's SDSS DR18 spec file of NGC 3073, its values and its Spectrum."""
    path = ppxf_sdss_path(STRONG)
    (spectrum,) = read_any(path)
    return path, dr8_values(path), spectrum


def _same_observed_spectrum(spectrum, reference, wavelength_rtol=0.0, ivar_rtol=0.0):
    np.testing.assert_allclose(spectrum.wavelength, reference.wavelength, rtol=wavelength_rtol, atol=0)
    np.testing.assert_array_equal(spectrum.flux, reference.flux)
    np.testing.assert_array_equal(spectrum.good, reference.good & (reference.ivar > 0))
    np.testing.assert_allclose(spectrum.ivar[spectrum.good], reference.ivar[spectrum.good], rtol=ivar_rtol, atol=0)
    assert spectrum.z == reference.z and spectrum.survey_id == reference.survey_id


def test_dr7_spspec_reads_as_the_dr8_file_of_the_same_spectrum(tmp_path, original):
    _, values, reference = original
    path = write_spspec(values, tmp_path / "spSpec-52652-0945-470.fit")
    with fits.open(path) as hdul:
        assert fits_layout(hdul) == "sdss-dr7"  # not the SDSS reader, though HDU 1 is an unnamed table
    (spectrum,) = read_any(path)
    assert spectrum.id == "spSpec-52652-0945-470" and spectrum.survey_id == "sdss:945-52652-470"
    assert (~spectrum.good).sum() == np.count_nonzero(values["and_mask"] | (values["ivar"] <= 0)) > 0
    _same_observed_spectrum(spectrum, reference, WAVELENGTH_RTOL, IVAR_RTOL)
    # validate replaces a record's arrays: copies, the module's reference stays as read
    ours, theirs = (rebin_spectra([validate(dataclasses.replace(s))]) for s in (spectrum, reference))
    np.testing.assert_array_equal(ours["mask"], theirs["mask"])
    for key, rtol in (("flux", REST_FLUX_RTOL), ("ivar", REST_IVAR_RTOL)):
        np.testing.assert_allclose(ours[key], theirs[key], rtol=rtol, atol=0, err_msg=key)


def test_dr7_mask_in_a_last_image_hdu(tmp_path, original):
    _, values, reference = original
    values = dict(values, and_mask=values["and_mask"].copy())
    values["and_mask"][1000:1010] = 1 << 23  # BRIGHTSKY
    spectrum = read_spspec(write_spspec(values, tmp_path / "three-rows.fit", mask_row=False))
    assert not spectrum.good[1000:1010].any()
    assert spectrum.good.sum() == reference.good.sum() - np.count_nonzero(reference.good[1000:1010])


def test_dr7_emission_line_bit_alone_leaves_the_pixel_good(tmp_path, original):
    # spectro1d sets bit 30 (EMLINE) on the pixels of every line it detects: read as bad, a DR7
    # galaxy lost its Halpha, [NII] and [SII] (the held-out spSpec, tests/evaluation/test_real_heldout.py)
    _, values, reference = original
    values = dict(values, and_mask=values["and_mask"].copy())
    emline, brightsky = 1 << 30, 1 << 23
    good = np.flatnonzero(reference.good)
    values["and_mask"][good[100:110]] = emline
    values["and_mask"][good[200:210]] = emline | brightsky
    spectrum = read_spspec(write_spspec(values, tmp_path / "spSpec-emline.fit"))
    assert spectrum.good[good[100:110]].all() and not spectrum.good[good[200:210]].any()
    assert spectrum.good.sum() == reference.good.sum() - 10


def test_eboss_spec_file_redshift_and_ids_from_spall(tmp_path, original):
    _, values, reference = original
    path = write_eboss(values, tmp_path / "eboss-galaxy.fits")  # no spec-PLATE-MJD-FIBER name to fall back on
    with fits.open(path) as hdul:
        assert "SPECOBJ" not in hdul and fits_layout(hdul) == "sdss"
    (spectrum,) = read_any(path)
    assert spectrum.z == values["z"] and spectrum.survey_id == "sdss:945-52652-470"
    _same_observed_spectrum(spectrum, reference)


def test_eboss_spall_without_z_is_a_redshift_to_give(tmp_path, original):
    _, values, _ = original
    spall = {k: v for k, v in values["specobj"].items() if k != "Z"}
    path = write_eboss(values, tmp_path / "spec-0945-52652-0470.fits", spall=spall)
    spectra, errors = read_many([path])
    assert not spectra and errors == [f"{path}: no redshift (give one with --z or --z-table)"]
    spectra, errors = read_many([path], z_all=0.1)
    assert not errors and spectra[0].z == 0.1 and spectra[0].survey_id == "sdss:945-52652-470"


def _without(path, key):
    with fits.open(path) as hdul:
        del hdul[0].header[key]
        hdul.writeto(path.with_name(f"no-{key}.fit"))
    return path.with_name(f"no-{key}.fit")


def _image_rows(path, rows):
    with fits.open(path) as hdul:
        hdul[0].data = hdul[0].data[:rows]
        hdul.writeto(path.with_name(f"rows-{rows}.fit"))
    return path.with_name(f"rows-{rows}.fit")


def test_damaged_dr7_and_eboss_files_one_line_each_and_the_batch_goes_on(tmp_path, original):
    source, values, _ = original
    dr7 = write_spspec(values, tmp_path / "spSpec-52652-0945-470.fit")
    eboss = write_eboss(values, tmp_path / "eboss.fits")
    truncated = {}
    for good in (dr7, eboss):
        cut = tmp_path / f"cut-{good.name}"
        cut.write_bytes(good.read_bytes()[: good.stat().st_size * 2 // 3])
        truncated[cut] = "truncated FITS file"
    expected = {**truncated, _without(dr7, "COEFF1"): "spSpec header needs numbers COEFF0 and COEFF1",
                _without(dr7, "Z"): "no redshift (the spSpec header has no number Z;",
                _image_rows(dr7, 3): "spSpec has no mask (neither a fourth image row nor a last 1-d image HDU",
                _image_rows(dr7, 2): "spSpec primary image is (2, 3848); it needs the flux"}
    spectra, errors = read_many([*expected, source])
    assert [s.source for s in spectra] == [str(source)]
    assert len(errors) == len(expected)
    for path, reason in expected.items():
        (mention,) = [e for e in errors if e.startswith(f"{path}: ") or e.startswith(f"{path} ")]
        assert "\n" not in mention and reason in mention, (path, mention)
