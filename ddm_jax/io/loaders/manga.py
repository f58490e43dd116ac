"""MaNGA files: DRP LOGCUBE (a spectrum per spaxel, with its position and the cube's celestial
WCS), LOGRSS (a spectrum per fibre and exposure) and the DAP's test spectra. The DRP files carry no
redshift (give --z or --z-table). MASK != 0 is bad (MANGA_DRP3PIXMASK); in RSS files any bit but the
informational SMEAR* ones (MANGA_DRP2PIXMASK 10-12).

Resolution (`Spectrum.lsf_sigma`): the DRP's per-spaxel (per-fibre) LSFPOST (DR17) or DISP (DR15),
a Gaussian sigma in Angstrom, else its median SPECRES (R = lambda / FWHM); the DAP test files'
per-spectrum SRES (R). Galactic E(B-V): the DRP's EBVGAL header keyword."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ddm_jax.errors import InputError
from ddm_jax.io.loaders.registry import fits_loader, read_fits
from ddm_jax.spectra.instrument import sigma_from_resolving_power
from ddm_jax.spectra.spectrum import Spectrum, spectrum_id

MANGA_IMAGES = ("FLUX", "IVAR", "MASK", "WAVE")
# MANGA_DRP2PIXMASK bits that describe a fibre without marking its pixels bad.
MANGA_RSS_INFO_BITS = (1 << 10) | (1 << 11) | (1 << 12)  # SMEARIMAGE, SMEARHIGHSN, SMEARMEDSN
# The DRP's LSF images in the order they are preferred: per spaxel / fibre sigma in Angstrom (DR17's
# post-pixellisation LSF, DR15's DISP), then the median resolving power (1-d, lambda / FWHM).
MANGA_LSF_IMAGES, MANGA_RESOLVING_POWER = ("LSFPOST", "DISP"), "SPECRES"


def read_manga(path: str | os.PathLike) -> list[Spectrum]:
    """A MaNGA DRP LOGCUBE or LOGRSS file (`manga-<plate>-<ifu>-LOGCUBE.fits.gz`, ...LOGRSS...).

    Cube: one Spectrum per spaxel with any good pixel, id `<plateifu>#x<i>y<j>`, position (i, j),
    wcs the celestial WCS of the FLUX header. RSS: one per row with any good pixel, id
    `<plateifu>#f<k>`, position (k,). plateifu from the file name as the DAP reads it, else the
    PLATEIFU header keyword, else the file name without suffix. z is None: the DRP files carry
    no redshift (the DAP takes NSA_Z from the DRPall catalogue): give --z or --z-table (a
    z-table row `<plateifu>,z` applies to every spectrum of the file, see `read_many`).
    Raises DDMError naming the file if no spaxel (row) has a good pixel.
    """
    return read_fits(path, expect=("manga-cube", "manga-rss"))


def _manga_name(path: Path, header) -> str:
    match = re.match(r"manga-(\d+-\d+)-", path.name, re.IGNORECASE)
    if match:
        return match.group(1)
    value = str(header.get("PLATEIFU", "")).strip()
    return value or spectrum_id(path)


def _manga_images(path: Path, hdul, ndim: int) -> tuple[np.ndarray, ...]:
    wave = np.asarray(hdul["WAVE"].data, dtype=np.float64)
    flux, ivar, mask = (np.asarray(hdul[name].data) for name in ("FLUX", "IVAR", "MASK"))
    if flux.ndim != ndim or not flux.shape == ivar.shape == mask.shape:
        raise InputError(f"{path}: FLUX {flux.shape}, IVAR {ivar.shape} and MASK {mask.shape} must agree "
                         f"({ndim}-d)")
    n_wave = flux.shape[0] if ndim == 3 else flux.shape[-1]
    if wave.ndim != 1 or wave.size != n_wave:
        raise InputError(f"{path}: WAVE has {wave.size} samples, FLUX {n_wave}")
    return wave, flux, ivar, mask


def _manga_survey_id(name: str) -> str:
    return f"manga:{name}" if re.fullmatch(r"\d+-\d+", name) else ""


def _usable(flux: np.ndarray, ivar: np.ndarray, bad: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return ~bad & (ivar > 0) & np.isfinite(flux) & np.isfinite(ivar)


def _lsf_images(path: Path, hdul, shape: tuple[int, ...], wave: np.ndarray) -> np.ndarray | None:
    """The LSF sigma (Angstrom) of every spectrum, in FLUX's shape, or None if the file has none."""
    for name in MANGA_LSF_IMAGES:
        if name in hdul and hdul[name].data is not None:
            sigma = np.asarray(hdul[name].data, np.float64)
            if sigma.shape != shape:
                raise InputError(f"{path}: {name} has shape {sigma.shape}, FLUX {shape}")
            return sigma
    if MANGA_RESOLVING_POWER in hdul and hdul[MANGA_RESOLVING_POWER].data is not None:
        power = np.asarray(hdul[MANGA_RESOLVING_POWER].data, np.float64)
        if power.shape != wave.shape:
            raise InputError(f"{path}: {MANGA_RESOLVING_POWER} has shape {power.shape}, WAVE {wave.shape}")
        along = (slice(None), None, None) if len(shape) == 3 else (None, slice(None))  # the wavelength axis
        return np.broadcast_to(sigma_from_resolving_power(wave, power)[along], shape)
    return None


def _ebv(header) -> float | None:
    """The DRP's Galactic E(B-V) (EBVGAL), None where the header lacks it."""
    value = header.get("EBVGAL")
    return float(value) if isinstance(value, int | float) and np.isfinite(value) else None


def _celestial_wcs(header, shape: tuple[int, int]) -> str | None:
    """The celestial WCS of a cube with (ny, nx) spaxels, as header cards with NAXIS1/2 (the map size)."""
    from astropy.wcs import WCS

    try:
        wcs = WCS(header, fix=True).celestial
    except (ValueError, KeyError, MemoryError):  # astropy raises several kinds for a bad WCS
        return None
    if not wcs.has_celestial:
        return None
    cards = wcs.to_header()
    cards.insert(0, ("NAXIS2", shape[0], "spaxels along y"))
    cards.insert(0, ("NAXIS1", shape[1], "spaxels along x"))
    return cards.tostring()


def _manga_cube_from_hdul(path: Path, hdul) -> list[Spectrum]:
    wave, flux, ivar, mask = _manga_images(path, hdul, 3)
    usable = _usable(flux, ivar, mask != 0)
    jj, ii = np.nonzero(usable.any(axis=0))  # (y, x) of spaxels with a good pixel
    if not ii.size:
        raise InputError(f"{path}: every spaxel is masked (MASK != 0 or IVAR <= 0 everywhere): no spectrum")
    name = _manga_name(path, hdul[0].header)
    wcs = _celestial_wcs(hdul["FLUX"].header, flux.shape[1:])
    lsf = _lsf_images(path, hdul, flux.shape, wave)
    images = (("flux", flux, np.float64), ("ivar", ivar, np.float64), ("good", usable, bool))
    images += (("lsf", lsf, np.float64),) if lsf is not None else ()
    rows = {k: np.ascontiguousarray(a[:, jj, ii].T, dtype=dt) for k, a, dt in images}
    ebv = _ebv(hdul[0].header)
    return [Spectrum(f"{name}#x{i}y{j}", str(path), wave, rows["flux"][s], rows["ivar"][s], rows["good"][s], None,
                     position=(int(i), int(j)), wcs=wcs, survey_id=_manga_survey_id(name),
                     lsf_sigma=rows["lsf"][s] if lsf is not None else None, ebv=ebv)
            for s, (i, j) in enumerate(zip(ii, jj))]


def _manga_rss_from_hdul(path: Path, hdul) -> list[Spectrum]:
    wave, flux, ivar, mask = _manga_images(path, hdul, 2)
    usable = _usable(flux, ivar, (mask.astype(np.int64) & ~MANGA_RSS_INFO_BITS) != 0)
    (rows,) = np.nonzero(usable.any(axis=1))
    if not rows.size:
        raise InputError(f"{path}: every row is masked (MASK bad or IVAR <= 0 everywhere): no spectrum")
    name = _manga_name(path, hdul[0].header)
    lsf, ebv = _lsf_images(path, hdul, flux.shape, wave), _ebv(hdul[0].header)
    return [Spectrum(f"{name}#f{k}", str(path), wave, flux[k].astype(np.float64), ivar[k].astype(np.float64),
                     usable[k], None, position=(int(k),), survey_id=_manga_survey_id(name),
                     lsf_sigma=lsf[k] if lsf is not None else None, ebv=ebv)
            for k in rows]


def _manga_dap_test_from_hdul(path: Path, hdul) -> list[Spectrum]:
    wave, flux, ivar, mask = _manga_images(path, hdul, 2)
    z = np.asarray(hdul["Z"].data, dtype=np.float64).ravel()
    if z.size != flux.shape[0]:
        raise InputError(f"{path}: Z has {z.size} values for {flux.shape[0]} spectra")
    stem = spectrum_id(path)
    lsf = None
    if "SRES" in hdul:
        power = np.asarray(hdul["SRES"].data, np.float64)
        if power.shape != flux.shape:
            raise InputError(f"{path}: SRES has shape {power.shape}, FLUX {flux.shape}")
        lsf = sigma_from_resolving_power(wave, power)
    return [Spectrum(f"{stem}#{k}", str(path), wave, flux[k].astype(np.float64), ivar[k].astype(np.float64),
                     mask[k] == 0, float(z[k]) if np.isfinite(z[k]) else None,
                     lsf_sigma=lsf[k] if lsf is not None else None)
            for k in range(flux.shape[0])]


def _flux_dimensions(names: list[str], hdul) -> int | None:
    return hdul["FLUX"].header.get("NAXIS") if set(MANGA_IMAGES) <= set(names) else None


fits_loader("manga-dap-test", "MaNGA DAP test spectra (WAVE, FLUX, IVAR, MASK and Z)", priority=30,
            identify=lambda names, hdul: _flux_dimensions(names, hdul) == 2 and "Z" in names)(_manga_dap_test_from_hdul)
fits_loader("manga-rss", "MaNGA LOGRSS (2-d FLUX, IVAR, MASK and WAVE)", priority=40,
            identify=lambda names, hdul: _flux_dimensions(names, hdul) == 2)(_manga_rss_from_hdul)
fits_loader("manga-cube", "MaNGA LOGCUBE (3-d FLUX, IVAR, MASK and WAVE)", priority=50,
            identify=lambda names, hdul: _flux_dimensions(names, hdul) == 3)(_manga_cube_from_hdul)
