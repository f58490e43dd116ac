"""prepare's frame (ddm_jax.prepare.frame) on a simulated rotating MaNGA-like cube: each spaxel is
rebinned at its own velocity and lands on the rest-frame grid; the E(B-V) and resolution are
recorded, in PREPARED and its provenance."""

import json

import numpy as np
import pytest

from ddm_jax.constants import SPEED_OF_LIGHT_KMS, WAVELENGTH_STEP
from ddm_jax.prepare import lines, pipeline
from ddm_jax.spectra import instrument
from spectra_helpers import INSTRUMENT_SIGMA_KMS, cube_header, template_galaxy

fits = pytest.importorskip("astropy.io.fits", reason="writing a cube needs astropy")

Z, EBV, NOISE = 0.03, 0.04, 1.0
NX = NY = 3
# A disc seen at an angle: +-250 km/s across x, a small gradient along y.
VELOCITY = np.array([[250.0 * (i - 1) + 40.0 * (j - 1) for i in range(NX)] for j in range(NY)])  # [j, i]
# "On the grid": Halpha within this fraction of a 2 A bin of its rest bin.
BIN_FRACTION = 0.2
FLOAT32_RTOL = 1e-5  # spaxel_velocity is stored as float32, z as float64
VELOCITY_TOLERANCE = BIN_FRACTION * WAVELENGTH_STEP / lines.LINES["halpha"] * SPEED_OF_LIGHT_KMS


def _rotating_cube(path, seed: int = 3) -> None:
    """A LOGCUBE in the DRP layout whose spaxels are template galaxies (stars and gas) at VELOCITY."""
    rng = np.random.default_rng(seed)
    spectra = {(i, j): template_galaxy(rng, z=Z, v_star=VELOCITY[j, i], v_gas=VELOCITY[j, i], noise=NOISE)
               for j in range(NY) for i in range(NX)}
    wave = spectra[0, 0].wavelength
    flux = np.zeros((wave.size, NY, NX), np.float32)
    for (i, j), spectrum in spectra.items():
        flux[:, j, i] = spectrum.flux
    # the spectra's instrument: a constant velocity width (template_galaxy's), written as DR17's LSFPOST
    lsf = np.broadcast_to((wave * INSTRUMENT_SIGMA_KMS / SPEED_OF_LIGHT_KMS)[:, None, None], flux.shape)
    primary = fits.PrimaryHDU()
    primary.header["EBVGAL"] = EBV
    header = cube_header()
    fits.HDUList([primary, fits.ImageHDU(flux, header, name="FLUX"),
                  fits.ImageHDU(np.full(flux.shape, NOISE**-2, np.float32), header, name="IVAR"),
                  fits.ImageHDU(np.zeros(flux.shape, np.int32), header, name="MASK"), fits.ImageHDU(wave, name="WAVE"),
                  fits.ImageHDU(lsf.astype(np.float32), name="LSFPOST")]).writeto(path)


def test_a_rotating_cube_lands_on_the_rest_grid_spaxel_by_spaxel(tmp_path):
    cube = tmp_path / "manga-8485-1901-LOGCUBE.fits"
    _rotating_cube(cube)
    logged = []
    arrays = pipeline.run([str(cube)], str(tmp_path / "prepared.npz"), z=Z, snr_policy="warn", log=logged.append)
    truth = np.array([VELOCITY[j, i] for i, j in arrays["position"]])
    assert np.ptp(truth) > 2 * 250 - 1  # the test spans the rotation it is about
    np.testing.assert_allclose(arrays["spaxel_velocity"], truth, atol=VELOCITY_TOLERANCE)
    np.testing.assert_allclose(arrays["z"], (1 + Z) * (1 + arrays["spaxel_velocity"] / SPEED_OF_LIGHT_KMS) - 1,
                               rtol=FLOAT32_RTOL)
    # rebinned at its own velocity, each spaxel's lines sit at rest: Halpha within BIN_FRACTION of a bin
    assert np.all(np.abs(arrays["line_velocity"]) < VELOCITY_TOLERANCE), arrays["line_velocity"]
    assert any("rebinned at their own velocity" in line for line in logged)
    # the frame's other records: the cube's EBVGAL corrected for, and its resolution against MaNGA's
    np.testing.assert_allclose(arrays["ebv_galactic"], EBV, rtol=FLOAT32_RTOL)
    assert not any("no Galactic E(B-V)" in line for line in logged)
    np.testing.assert_allclose(arrays["resolution_sigma_kms"],
                               max(INSTRUMENT_SIGMA_KMS, float(instrument.target_sigma_kms(5500.0))), rtol=1e-3)
    provenance = json.loads(str(arrays["provenance"]))
    assert provenance["resolution"] == "manga" and provenance["extinction_law"] == instrument.EXTINCTION_LAW
    assert provenance["ebv_galactic"].startswith(f"{EBV:.4f}-{EBV:.4f}")
