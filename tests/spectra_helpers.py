"""Spectra for the resample/lines/prepare tests: real SDSS DR18 files that pPXF ships, with
the SDSS pipeline's own line fluxes (SPZLINE table), and synthetic ones with known fluxes;
synthetic MaNGA DRP cubes for the readers' and the FITS catalogue's tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.special import erf

from ddm_jax.constants import DOUBLET_RATIOS, LINE_NAMES, REQUIRED_LINES, SNR_MIN, SPEED_OF_LIGHT_KMS
from ddm_jax.prepare import continuum, lines
from ddm_jax.spectra import resample
from ddm_jax.spectra.spectrum import Spectrum

# SDSS's sampling: log10(lambda) steps of 1e-4 from 3800 A (observed frame).
SDSS_LOGLAM0, SDSS_DLOGLAM, SDSS_NPIX = np.log10(3800.0), 1e-4, 3850
LINE_SIGMA_KMS = 70.0  # narrow lines as SDSS sees them (intrinsic and instrumental)
TROUGH_HWHM = 8.0  # Angstrom; a Lorentzian trough (stellar Balmer wings), not in the fit's Gaussian basis
TRUE_FLUX = {"hbeta": 60.0, "oiii_5007": 150.0, "oi_6300": 30.0, "halpha": 300.0,
             "nii_6548": 120.0 / DOUBLET_RATIOS["nii_6548"][1], "nii_6584": 120.0, "sii_6717": 70.0, "sii_6731": 55.0}
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
    emission = with_weak_doublet_lines(TRUE_FLUX)
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
    return all(flux / err > SNR_MIN for flux, err in (measured[n] for n in REQUIRED_LINES))


def sdss_redshift(path: Path) -> float:
    from astropy.io import fits

    return float(fits.getdata(path, "SPECOBJ")["Z"][0])


# Galaxies built from stellar-population templates that the fit does not have: the held-out
# ages (interpolable from their neighbours, as a real galaxy's populations are from a library).
HELD_OUT_AGES_GYR = (0.286, 2.5)
INSTRUMENT_SIGMA_KMS = continuum.INSTRUMENT_SIGMA_KMS  # the resolution the fit assumes (MaNGA's at 5500 A)


def fit_templates():
    """The template set the fit uses in these tests: BC03 without HELD_OUT_AGES_GYR."""
    from ddm_jax.astro.templates import load_templates

    templates = load_templates()
    return templates.select(~np.isin(np.round(templates.ages_gyr, 3), HELD_OUT_AGES_GYR))


def held_out_stars(young_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Rest wavelength (vacuum) and flux of a solar-metallicity mix of the held-out ages:
    `young_fraction` of the light at 5500 A from 0.286 Gyr (deep Balmer absorption), the rest
    from 2.5 Gyr."""
    from ddm_jax.astro.templates import load_templates

    templates = load_templates()
    pick = lambda age: np.flatnonzero((np.round(templates.ages_gyr, 3) == age)  # noqa: E731
                                      & (templates.metallicities == 0.02))[0]
    flux = (young_fraction * templates.flux[pick(HELD_OUT_AGES_GYR[0])]
            + (1 - young_fraction) * templates.flux[pick(HELD_OUT_AGES_GYR[1])])
    return templates.wavelength, flux.astype(np.float64), templates


def with_weak_doublet_lines(fluxes: dict[str, float]) -> dict[str, float]:
    """Line fluxes plus the weak doublet members the fit ties ([OIII]4959, [OI]6363) at their
    atomic ratios, as nature puts them."""
    weak = {name: fluxes[strong] / ratio for name, (strong, ratio) in DOUBLET_RATIOS.items() if name not in fluxes}
    return {**fluxes, **weak}


def true_fluxes(line_scale: float = 1.0, without: tuple[str, ...] = ()) -> dict[str, float]:
    """The narrow-line fluxes `template_galaxy` puts in (LINE_NAMES order)."""
    return {name: 0.0 if name in without else line_scale * TRUE_FLUX[name] for name in LINE_NAMES}


def template_galaxy(rng: np.random.Generator, z: float = 0.05, sigma_star: float = 120.0, v_star: float = 0.0,
                    v_gas: float = 0.0, sigma_gas: float = 70.0, line_scale: float = 1.0,
                    young_fraction: float = 0.3, noise: float = 1.0, broad_halpha: float = 0.0,
                    broad_sigma: float = 2000.0, without: tuple[str, ...] = (),
                    spec_id: str = "template-galaxy") -> Spectrum:
    """An SDSS-like observed spectrum: held-out stellar populations (continuum ~100 at 5500 A),
    broadened and shifted, times a smooth calibration tilt, plus TRUE_FLUX x line_scale narrow
    lines at (v_gas, sigma_gas intrinsic), less the lines named in `without`, and optionally a
    broad Halpha of flux `broad_halpha`; Gaussian noise of sd `noise` per pixel."""
    wavelength, stars, templates = held_out_stars(young_fraction)
    c = SPEED_OF_LIGHT_KMS
    # broaden on the log-uniform grid by what sigma* and the instrument add to the templates' own
    template_sigma = templates.fwhm_angstrom / np.sqrt(8 * np.log(2)) / 5500.0 * c
    extra = np.sqrt(sigma_star**2 + INSTRUMENT_SIGMA_KMS**2 - template_sigma**2) / templates.velscale
    kernel_x = np.arange(-int(6 * extra) - 1, int(6 * extra) + 2)
    kernel = np.exp(-0.5 * (kernel_x / extra) ** 2)
    stars = np.convolve(stars, kernel / kernel.sum(), mode="same") * 100.0
    observed = SDSS_LOGLAM0 + SDSS_DLOGLAM * np.arange(SDSS_NPIX)
    edges = resample.pixel_edges(10**observed)
    rest_edges = edges / (1 + z) / (1 + v_star / c)  # the stars' own rest frame
    template_edges = resample.pixel_edges(wavelength)  # template values are pixel means about their centres
    cumulative = np.concatenate([[0.0], np.cumsum(stars * np.diff(template_edges))])
    density = np.diff(np.interp(rest_edges, template_edges, cumulative)) / np.diff(rest_edges)
    centres = 0.5 * (edges[1:] + edges[:-1])
    density *= 1.0 + 0.1 * (centres - 6000.0) / 3000.0  # flux-calibration tilt
    gas_edges = edges / (1 + z)  # rest frame of the catalogue redshift
    width = np.sqrt(sigma_gas**2 + INSTRUMENT_SIGMA_KMS**2)
    emission = with_weak_doublet_lines(true_fluxes(line_scale, without))
    centres_rest = {**lines.LINES, **lines.EXTRA_LINES}
    for name, flux in emission.items():
        centre = centres_rest[name] * (1 + v_gas / c)
        density += flux * _box_mean_gaussian(gas_edges, centre, centre * width / c)
    if broad_halpha:
        centre = lines.LINES["halpha"] * (1 + v_gas / c)
        density += broad_halpha * _box_mean_gaussian(gas_edges, centre, centre * broad_sigma / c)
    flux = density / (1 + z) + rng.normal(0.0, noise, SDSS_NPIX)
    ivar = np.full(SDSS_NPIX, noise**-2.0)
    return Spectrum(spec_id, f"{spec_id}.npz", 10**observed, flux, ivar, np.ones(SDSS_NPIX, bool), z)


# --- MaNGA DRP cubes (synthetic, in the DRP layout): the readers' and the FITS catalogue's tests ---

N_WAVE, NX, NY = 300, 5, 4
# MANGA_DRP3PIXMASK bits
NOCOV, LOWCOV, FORESTAR, DONOTUSE = 1, 2, 8, 1024
WAVE = np.geomspace(3621.6, 10353.8, N_WAVE)


def cube_header():
    """The header of a DRP cube's FLUX, IVAR and MASK: the sky WCS and the log-wavelength axis."""
    from astropy.io import fits

    header = fits.Header()
    for key, value in (("CTYPE1", "RA---TAN"), ("CTYPE2", "DEC--TAN"), ("CRPIX1", 3.0), ("CRPIX2", 2.5),
                       ("CRVAL1", 180.25), ("CRVAL2", 45.5), ("CD1_1", -0.5 / 3600), ("CD2_2", 0.5 / 3600),
                       ("CUNIT1", "deg"), ("CUNIT2", "deg"), ("CTYPE3", "WAVE-LOG"), ("CRPIX3", 1.0),
                       ("CRVAL3", WAVE[0]), ("CD3_3", WAVE[1] - WAVE[0]), ("CUNIT3", "Angstrom"),
                       ("BUNIT", "1E-17 erg/s/cm^2/Ang/spaxel")):
        header[key] = value
    return header


def write_cube(path: Path, mask: np.ndarray, ivar: np.ndarray | None = None, plateifu: str | None = None,
               seed: int = 0) -> dict[str, np.ndarray]:
    """A LOGCUBE in the DRP layout: FLUX, IVAR, MASK (N_wave, ny, nx) with the WCS, WAVE, SPECRES."""
    from astropy.io import fits

    rng = np.random.default_rng(seed)
    flux = rng.normal(1.0, 0.1, mask.shape).astype(np.float32)
    ivar = np.full(mask.shape, 100.0, np.float32) if ivar is None else ivar
    primary = fits.PrimaryHDU()
    if plateifu:
        primary.header["PLATEIFU"] = plateifu
    header = cube_header()
    hdul = fits.HDUList([primary, fits.ImageHDU(flux, header, name="FLUX"), fits.ImageHDU(ivar, header, name="IVAR"),
                         fits.ImageHDU(mask.astype(np.int32), header, name="MASK"),
                         fits.ImageHDU(WAVE, name="WAVE"), fits.ImageHDU(np.full(N_WAVE, 2000.0), name="SPECRES")])
    hdul.writeto(path)
    return {"flux": flux, "ivar": ivar, "mask": mask}


def cube_masks() -> tuple[np.ndarray, np.ndarray]:
    """A cube's (mask, ivar): a spaxel outside the IFU, one without data, one partly flagged, one low-coverage."""
    mask = np.zeros((N_WAVE, NY, NX), np.int32)
    ivar = np.full(mask.shape, 100.0, np.float32)
    mask[:, 0, 0] = NOCOV | DONOTUSE  # outside the IFU: no spectrum
    ivar[:, 3, 4] = 0.0  # no data: no spectrum
    mask[100:150, 1, 2] = FORESTAR  # partly flagged: a spectrum, those pixels bad
    mask[:150, 2, 1] = LOWCOV | DONOTUSE
    return mask, ivar
