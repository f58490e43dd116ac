"""`prepare` on the held-out real spectra (ddm_jax/data/real_heldout: no setting was chosen on them),
checked against what each file's own survey pipeline measured on the same photons: the SDSS DR7
spectro1d line fits and emission-line redshift of spSpec-54592-2974-262, and the DR12 SPZLINE line
fits, redshift and velocity dispersion of NGC 4636 (spec-0522-52024-0396). Nothing
here is a number taken from prepare's output; the tolerances are set by the measurements' errors
and the project's allowance between two pipelines (RATIO_TOLERANCE_DEX)."""

import numpy as np
import pytest

from conftest import DATA
from ddm_jax.cli import main
from ddm_jax.constants import EMISSION_LINES, LINE_NAMES, SNR_MIN, SPEED_OF_LIGHT_KMS
from ddm_jax.io.loaders.registry import expand_inputs, read_many
from ddm_jax.io.loaders.sdss_dr7 import EMLINE
from ddm_jax.io.outputs.prepared import load_prepared
from spectra_helpers import sdss_pipeline_lines

fits = pytest.importorskip("astropy.io.fits", reason="the SDSS readers need astropy")

HELD_OUT = DATA / "real_heldout"
DR7, DR12 = "spSpec-54592-2974-262", "spec-0522-52024-0396"
# Forbidden lines lie on smooth continuum, so two fits of the same photons differ by the model of what
# lies under them, not by noise: the project allows 0.1 dex between two pipelines (NGC 3073,
# tests/prepare/test_line_and_continuum_fits.py), plus the lines' 1-sigma errors, a bound on the part
# of the noise the fits do not share. Balmer lines sit in stellar troughs, which spectro1d (a smoothed
# continuum) and SPZLINE model differently: reported, not asserted.
FORBIDDEN = ("oiii_5007", "oi_6300", "nii_6584", "sii_6717", "sii_6731")
RATIO_TOLERANCE_DEX = 0.1
# Velocities: both fit Gaussians to the same lines; 20 km/s is 0.3 of SDSS's 69 km/s pixel, plus 3
# times the pipeline's redshift error. Only spectro1d's emission-line redshift is compared: NGC 4636's
# SPZLINE puts every line at -116 +- 7 km/s from Z with widths of 423 km/s, where prepare finds +4 and
# 188 km/s, and the spectrum's own [NII]6584 peaks at +79 km/s (one 69 km/s pixel): the SPZLINE
# velocity is not one the data bear out, so it is reported (docs/prepare.md), not asserted.
VELOCITY_TOLERANCE_KMS = 20.0
# Stellar dispersion: BC03 against SDSS's own templates; 15 % is what prepare must meet on galaxies
# built from templates it lacks (tests/prepare/test_line_and_continuum_fits.py), plus 3 VDISP errors.
SIGMA_STAR_TOLERANCE = 0.15
SPECTRO1D_MATCH_A = 0.5  # spectro1d lists rest wavelengths to 0.01 A


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("heldout") / "prepared.npz"
    assert main(["prepare", str(HELD_OUT), "-o", str(out), "--coverage", "fill", "--snr-policy", "warn"]) == 0
    arrays = load_prepared(out)
    return {str(i): {key: arrays[key][row] for key in arrays if np.ndim(arrays[key]) and len(arrays[key]) == len(
        arrays["ids"])} for row, i in enumerate(arrays["ids"])}


def spectro1d_lines(path) -> dict[str, tuple[float, float]]:
    """spectro1d's (flux, error) per line in our naming: a Gaussian's height x sigma x sqrt(2 pi) from
    the DR7 spSpec's measured-lines table (HDU 2; sigma in observed Angstrom)."""
    table = fits.getdata(path, 2)
    result = {}
    for name in LINE_NAMES:
        row = int(np.argmin(np.abs(table["restWave"] - EMISSION_LINES[name])))
        assert abs(table["restWave"][row] - EMISSION_LINES[name]) < SPECTRO1D_MATCH_A, name
        height, sigma = float(table["height"][row]), float(table["sigma"][row])
        flux = height * sigma * np.sqrt(2 * np.pi)
        relative = np.hypot(table["heightErr"][row] / height, table["sigmaErr"][row] / sigma) if height > 0 else np.inf
        result[name] = (flux, abs(flux) * float(relative))
    return result


def pipeline_lines(spectrum_id: str) -> dict[str, tuple[float, float]]:
    if spectrum_id == DR7:
        return spectro1d_lines(HELD_OUT / f"{DR7}.fits.gz")
    return sdss_pipeline_lines(HELD_OUT / f"{DR12}.fits.gz")


def spectro1d_line_velocity() -> tuple[float, float]:
    """spectro1d's emission-line velocity relative to the spSpec's redshift Z, and its error (km/s)."""
    path = HELD_OUT / f"{DR7}.fits.gz"
    z, z_lines = fits.getheader(path)["Z"], fits.getdata(path, 3)  # HDU 3: the emission-line redshift
    return (SPEED_OF_LIGHT_KMS * (z_lines["z"][0] - z) / (1 + z),
            SPEED_OF_LIGHT_KMS * float(z_lines["zErr"][0]) / (1 + z))


def test_every_held_out_file_is_read_with_its_own_redshift_and_id():
    spectra, errors = read_many(expand_inputs([HELD_OUT]))
    assert not errors
    by_id = {s.id: s for s in spectra}
    assert set(by_id) == {DR7, DR12}
    assert by_id[DR7].z == fits.getheader(HELD_OUT / f"{DR7}.fits.gz")["Z"]
    assert by_id[DR12].z == pytest.approx(float(fits.getdata(HELD_OUT / f"{DR12}.fits.gz", "SPECOBJ")["Z"][0]))
    assert (by_id[DR7].survey_id, by_id[DR12].survey_id) == ("sdss:2974-54592-262", "sdss:522-52024-396")


def test_dr7_pixels_flagged_only_as_emission_lines_stay_good():
    (spectrum,), _ = read_many([HELD_OUT / f"{DR7}.fits.gz"])
    image = fits.getdata(HELD_OUT / f"{DR7}.fits.gz", 0)
    mask, error = image[3].astype(np.int64), image[2]
    assert np.count_nonzero(mask == EMLINE) > 50  # spectro1d flagged this galaxy's lines
    np.testing.assert_array_equal(spectrum.good, (error > 0) & ((mask & ~EMLINE) == 0))


def test_forbidden_line_fluxes_agree_with_the_survey_pipelines(prepared):
    compared = 0
    for spectrum_id, row in prepared.items():
        theirs = pipeline_lines(spectrum_id)
        for name in FORBIDDEN:
            their_flux, their_error = theirs[name]
            if not their_flux > SNR_MIN * their_error:
                continue
            column = LINE_NAMES.index(name)
            flux, error = float(row["line_flux"][column]), float(row["line_flux_err"][column])
            assert flux > SNR_MIN * error, (spectrum_id, name)  # the same photons: detected by both
            compared += 1
            allowed = RATIO_TOLERANCE_DEX + np.log10(np.e) * np.hypot(error / flux, their_error / their_flux)
            assert abs(np.log10(flux / their_flux)) < allowed, (spectrum_id, name, flux, their_flux)
    assert compared >= 4  # the pipelines' own S/N > 8: [NII]6584 in both, [SII] in the DR7 galaxy, NGC 4636's [OIII]


def test_emission_line_velocity_agrees_with_spectro1d(prepared):
    velocity, error = spectro1d_line_velocity()
    assert abs(float(prepared[DR7]["line_velocity"]) - velocity) < VELOCITY_TOLERANCE_KMS + 3 * error


def test_ngc4636_stars_agree_with_the_sdss_redshift_and_dispersion(prepared):
    row = prepared[DR12]
    specobj = fits.getdata(HELD_OUT / f"{DR12}.fits.gz", "SPECOBJ")
    z_error_kms = SPEED_OF_LIGHT_KMS * float(specobj["Z_ERR"][0])
    # Z is SDSS's galaxy-template fit, the stars' in this weak-lined elliptical
    assert abs(float(row["stellar_velocity"])) < VELOCITY_TOLERANCE_KMS + 3 * z_error_kms
    vdisp, vdisp_error = float(specobj["VDISP"][0]), float(specobj["VDISP_ERR"][0])
    assert abs(float(row["stellar_sigma"]) / vdisp - 1) < SIGMA_STAR_TOLERANCE + 3 * vdisp_error / vdisp
