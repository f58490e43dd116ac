"""Spectra for the resample/lines/prepare tests: real SDSS DR18 files that pPXF ships, with
the SDSS pipeline's own line fluxes (SPZLINE table), and synthetic ones with known fluxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.special import erf

from ddm_jax.constants import SPEED_OF_LIGHT_KMS
from ddm_jax.prepare import lines, resample
from ddm_jax.prepare.readers import Spectrum

# SDSS's sampling: log10(lambda) steps of 1e-4 from 3800 A (observed frame).
SDSS_LOGLAM0, SDSS_DLOGLAM, SDSS_NPIX = np.log10(3800.0), 1e-4, 3850
LINE_SIGMA_KMS = 70.0  # narrow lines as SDSS sees them (intrinsic and instrumental)
TROUGH_HWHM = 8.0  # Angstrom; a Lorentzian trough (stellar Balmer wings), not in the fit's Gaussian basis
TRUE_FLUX = {"hbeta": 60.0, "oiii_5007": 150.0, "oi_6300": 30.0, "halpha": 300.0, "nii_6548": 40.0,
             "nii_6584": 120.0, "sii_6717": 70.0, "sii_6731": 55.0}
TROUGH_FLUX = {"hbeta": -150.0, "halpha": -100.0}


def _box_mean_gaussian(edges, centre, sigma):
    """Mean over each pixel [edges[i], edges[i+1]] of a unit-flux Gaussian."""
    cdf = 0.5 * erf((edges - centre) / (np.sqrt(2) * sigma))
    return np.diff(cdf) / np.diff(edges)


def _box_mean_lorentzian(edges, centre, hwhm):
    """Mean over each pixel of a unit-flux Lorentzian."""
    cdf = np.arctan((edges - centre) / hwhm) / np.pi
    return np.diff(cdf) / np.diff(edges)


def rest_density(edges_rest):
    """Noise-free rest-frame flux density averaged over each pixel: continuum, troughs, lines."""
    centres = 0.5 * (edges_rest[1:] + edges_rest[:-1])
    density = 100.0 * (centres / 5000.0) ** -0.5
    for name, flux in TROUGH_FLUX.items():
        density += flux * _box_mean_lorentzian(edges_rest, lines.LINES[name], TROUGH_HWHM)
    emission = dict(TRUE_FLUX, oiii_4959=TRUE_FLUX["oiii_5007"] / 3)
    wavelengths = {**lines.LINES, **lines.EXTRA_LINES}
    for name, flux in emission.items():
        centre = wavelengths[name]
        density += flux * _box_mean_gaussian(edges_rest, centre, centre * LINE_SIGMA_KMS / SPEED_OF_LIGHT_KMS)
    return density


def sdss_like(z: float, noise: float, rng: np.random.Generator, spec_id: str = "synthetic") -> Spectrum:
    """An observed-frame spectrum on SDSS's grid: flux = rest density / (1 + z) + N(0, noise)."""
    wavelength = 10 ** (SDSS_LOGLAM0 + SDSS_DLOGLAM * np.arange(SDSS_NPIX))
    edges_rest = resample.pixel_edges(wavelength) / (1 + z)
    flux = rest_density(edges_rest) / (1 + z) + rng.normal(0.0, noise, SDSS_NPIX)
    ivar = np.full(SDSS_NPIX, noise**-2.0)
    return Spectrum(spec_id, f"{spec_id}.npz", wavelength, flux, ivar, np.ones(SDSS_NPIX, bool), z)


# pPXF's SDSS DR18 spectra: a star-forming dwarf with strong lines and an early-type galaxy
# whose Hbeta the SDSS pipeline measures at S/N ~1 (the weak-line case for the S/N gate).
STRONG, WEAK = "NGC3073_SDSS_DR18", "NGC3522_SDSS_DR18"
# Our line names -> SDSS SPZLINE LINENAME.
SDSS_LINE_NAMES = {"hbeta": "H_beta", "oiii_5007": "[O_III] 5007", "oi_6300": "[O_I] 6300",
                   "halpha": "H_alpha", "nii_6548": "[N_II] 6548", "nii_6584": "[N_II] 6583",
                   "sii_6717": "[S_II] 6716", "sii_6731": "[S_II] 6730"}


def ppxf_sdss_path(name: str) -> Path:
    """Path of one of pPXF's SDSS spectra; skips (saying why) without pPXF or astropy."""
    pytest.importorskip("astropy", reason="reading SDSS FITS files needs astropy")
    ppxf = pytest.importorskip("ppxf", reason="the real SDSS spectra ship with pPXF: pip install ppxf")
    return Path(ppxf.__file__).parent / "spectra" / f"{name}.fits"


def sdss_pipeline_lines(path: Path) -> dict[str, tuple[float, float]]:
    """The SDSS pipeline's (flux, error) per line in our naming, from the file's SPZLINE table."""
    from astropy.io import fits

    table = fits.getdata(path, "SPZLINE")
    names = [n.strip() for n in table["LINENAME"]]
    return {ours: (float(table["LINEAREA"][names.index(theirs)]), float(table["LINEAREA_ERR"][names.index(theirs)]))
            for ours, theirs in SDSS_LINE_NAMES.items()}


def sdss_pipeline_meets_snr(path: Path) -> bool:
    """The S/N gate applied to the SDSS pipeline's own fluxes and errors."""
    measured = sdss_pipeline_lines(path)
    return all(flux / err > lines.SNR_MIN for flux, err in (measured[n] for n in lines.REQUIRED_LINES))


def sdss_redshift(path: Path) -> float:
    from astropy.io import fits

    return float(fits.getdata(path, "SPECOBJ")["Z"][0])
