"""DESI coadd-*.fits (or spectra-*) files: one spectrum per FIBERMAP target, the B, R and Z
cameras merged onto one grid (`merge_arms`), z from the redrock-*.fits (or zbest-*) catalogue next
to the coadd; the survey id is the TARGETID. MASK != 0 marks a bad pixel. Each camera's RESOLUTION
matrices give the line-spread function (`Spectrum.lsf_sigma`, merged as the flux is), FIBERMAP's
EBV the Galactic E(B-V)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ddm_jax.errors import InputError
from ddm_jax.io.fits import column_names, hdu_names, read_fits_guarded
from ddm_jax.io.loaders.registry import companion_file, fits_loader, read_fits
from ddm_jax.spectra.instrument import sigma_from_resolution_matrix
from ddm_jax.spectra.spectrum import FITS_SUFFIXES, Spectrum, spectrum_id

# DESI: the redshift catalogue of `coadd-X.fits` is `redrock-X.fits` (HDU REDSHIFTS), or in
# older productions `zbest-X.fits` (HDU ZBEST), in the same folder.
DESI_COADD_PREFIX = "coadd-"
DESI_REDSHIFT_FILES = (("redrock-", "REDSHIFTS"), ("zbest-", "ZBEST"))
DESI_CHUNK = 256  # targets merged at a time


def _desi_arms(names: list[str]) -> list[str]:
    """Cameras with a wavelength and a flux image: ['B', 'R', 'Z'] for a DESI coadd."""
    suffix = "_WAVELENGTH"
    return [n[: -len(suffix)] for n in names if n.endswith(suffix) and f"{n[: -len(suffix)]}_FLUX" in names]


def read_desi_coadd(path: str | os.PathLike) -> list[Spectrum]:
    """A DESI coadd (or spectra) file: one Spectrum per FIBERMAP target, id `<file stem>#<TARGETID>`,
    the cameras merged by `merge_arms`, z from `desi_redshift_file` (None, with a z_note, where
    there is no such file, the target is not in it or its ZWARN is not 0)."""
    return read_fits(path, expect=("desi-coadd",))


def _desi_from_hdul(path: Path, hdul) -> list[Spectrum]:
    names = hdu_names(hdul)
    arms = _desi_arms(names)
    fibermap = hdul["FIBERMAP"]
    if "TARGETID" not in column_names(fibermap):
        raise InputError(f"{path}: FIBERMAP lacks column TARGETID")
    targets = np.asarray(fibermap.data["TARGETID"]).astype(np.int64)
    ebv = (np.asarray(fibermap.data["EBV"], np.float64) if "EBV" in column_names(fibermap)
           else np.full(len(targets), np.nan))
    wavelengths, fluxes, ivars, goods, lsfs = [], [], [], [], []
    for arm in arms:
        if f"{arm}_IVAR" not in names:
            raise InputError(f"{path}: lacks {arm}_IVAR (has {', '.join(names)})")
        wavelength = np.asarray(hdul[f"{arm}_WAVELENGTH"].data, dtype=np.float64)
        flux = np.atleast_2d(np.asarray(hdul[f"{arm}_FLUX"].data, dtype=np.float64))
        ivar = np.atleast_2d(np.asarray(hdul[f"{arm}_IVAR"].data, dtype=np.float64))
        mask = (np.atleast_2d(np.asarray(hdul[f"{arm}_MASK"].data)) if f"{arm}_MASK" in names
                else np.zeros(flux.shape, np.int32))
        if not (flux.shape == ivar.shape == mask.shape == (len(targets), wavelength.size)):
            raise InputError(f"{path}: camera {arm}: FLUX {flux.shape}, IVAR {ivar.shape}, MASK {mask.shape} "
                             f"disagree with {len(targets)} FIBERMAP targets x {wavelength.size} wavelengths")
        if wavelength.size < 2 or not np.all(np.diff(wavelength) > 0):
            raise InputError(f"{path}: {arm}_WAVELENGTH is not strictly increasing")
        wavelengths.append(wavelength)
        fluxes.append(flux)
        ivars.append(ivar)
        goods.append(mask == 0)
        lsfs.append(_desi_lsf(path, hdul, arm, names, wavelength, flux.shape))
    stem, spectra = spectrum_id(path), []
    for start in range(0, len(targets), DESI_CHUNK):  # bounds merge_arms' temporaries
        rows = slice(start, start + DESI_CHUNK)
        wavelength, flux, ivar, good = merge_arms(wavelengths, [f[rows] for f in fluxes], [v[rows] for v in ivars],
                                                  [g[rows] for g in goods])
        lsf = (merge_arms(wavelengths, [sigma[rows] for sigma in lsfs], [v[rows] for v in ivars],
                          [g[rows] for g in goods])[1] if all(sigma is not None for sigma in lsfs) else None)
        spectra += [Spectrum(f"{stem}#{t}", str(path), wavelength, flux[k], ivar[k], good[k], None,
                             survey_id=f"desi:{t}", lsf_sigma=lsf[k] if lsf is not None else None,
                             ebv=float(ebv[start + k]) if np.isfinite(ebv[start + k]) else None)
                    for k, t in enumerate(targets[rows])]
    return spectra


def _desi_lsf(path: Path, hdul, arm: str, names: list[str], wavelength: np.ndarray,
              shape: tuple[int, int]) -> np.ndarray | None:
    """A camera's LSF sigma (Angstrom), (n_targets, N), from its RESOLUTION HDU; None without one."""
    if f"{arm}_RESOLUTION" not in names:
        return None
    resolution = np.asarray(hdul[f"{arm}_RESOLUTION"].data, np.float64)
    if resolution.ndim == 2:
        resolution = resolution[None]
    if resolution.ndim != 3 or (resolution.shape[0], resolution.shape[2]) != shape:
        raise InputError(f"{path}: {arm}_RESOLUTION has shape {resolution.shape}, expected "
                         f"({shape[0]}, n_diagonals, {shape[1]})")
    return sigma_from_resolution_matrix(resolution, wavelength)


def merge_arms(wavelengths: list[np.ndarray], fluxes: list[np.ndarray], ivars: list[np.ndarray],
               goods: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Spectrograph cameras onto one strictly increasing wavelength array, inverse-variance
    weighted where they overlap.

    wavelengths[a] (N_a,) increasing; fluxes/ivars/goods[a] (n, N_a) for n spectra.
    The grid is the bluest camera's pixels, then each redder camera's pixels beyond the grid's
    end (half a pixel's tolerance), so that DESI's cameras, which share one 0.8 A lattice, give
    that lattice. Each camera goes onto the grid pixels inside its range: unchanged where its
    pixels coincide with the grid's (to 1e-6 of a pixel), else by linear interpolation with the
    variance propagated (a value is usable only if both pixels it comes from are). On every grid
    pixel the usable cameras combine as sum(ivar f) / sum(ivar), ivar sum(ivar); a pixel no
    camera has usable data for gets flux 0, ivar 0, good False.
    Returns wavelength (M,), flux (n, M), ivar (n, M), good (n, M) bool.
    """
    order = np.argsort([w[0] for w in wavelengths])
    grid = wavelengths[order[0]]
    for a in order[1:]:
        w = wavelengths[a]
        half_pixel = 0.5 * (w[1] - w[0])
        grid = np.concatenate([grid, w[w > grid[-1] + half_pixel]])
    n = fluxes[0].shape[0]
    weight_sum = np.zeros((n, grid.size))
    weighted_flux = np.zeros((n, grid.size))
    for w, f, iv, g in zip(wavelengths, fluxes, ivars, goods):
        usable = g & (iv > 0) & np.isfinite(f) & np.isfinite(iv)
        f = np.where(usable, f, 0.0)
        iv = np.where(usable, iv, 0.0)
        var = np.where(usable, 1.0 / np.where(usable, iv, 1.0), 0.0)
        tol = 1e-6 * np.min(np.diff(w))
        inside = (grid >= w[0] - tol) & (grid <= w[-1] + tol)
        x = np.clip(grid[inside], w[0], w[-1])
        j = np.clip(np.searchsorted(w, x, side="right") - 1, 0, w.size - 2)
        step = w[j + 1] - w[j]
        t = np.where(x - w[j] <= tol, 0.0, np.where(w[j + 1] - x <= tol, 1.0, (x - w[j]) / step))
        ok = ((t == 1) | usable[:, j]) & ((t == 0) | usable[:, j + 1])
        value = (1 - t) * f[:, j] + t * f[:, j + 1]
        variance = (1 - t) ** 2 * var[:, j] + t**2 * var[:, j + 1]
        interpolated = 1.0 / np.where(variance > 0, variance, np.inf)
        arm_ivar = np.where(t == 0, iv[:, j], np.where(t == 1, iv[:, j + 1], interpolated))
        arm_ivar = np.where(ok, arm_ivar, 0.0)
        weight_sum[:, inside] += arm_ivar
        weighted_flux[:, inside] += arm_ivar * value
    good = weight_sum > 0
    flux = np.where(good, weighted_flux / np.where(good, weight_sum, 1.0), 0.0)
    return grid, flux, weight_sum, good


def desi_redshift_file(coadd: str | os.PathLike) -> Path | None:
    """The redshift catalogue of a DESI coadd: `coadd-X.fits` -> `redrock-X.fits`, else
    `zbest-X.fits` (older productions), in the same folder, with any FITS suffix (.fits,
    .fits.gz, ...). None if the name does not start with `coadd-` or no such file exists."""
    coadd = Path(coadd)
    if not coadd.name.startswith(DESI_COADD_PREFIX):
        return None
    stem = spectrum_id(coadd)[len(DESI_COADD_PREFIX):]
    for prefix, _ in DESI_REDSHIFT_FILES:
        for suffix in FITS_SUFFIXES:
            candidate = coadd.with_name(prefix + stem + suffix)
            if candidate.is_file():
                return candidate
    return None


def read_desi_redshifts(path: str | os.PathLike) -> dict[int, tuple[float, int]]:
    """A redrock (REDSHIFTS) or zbest (ZBEST) table: TARGETID -> (Z, ZWARN); ZWARN 0 if absent."""
    path = Path(path)

    def parse(hdul):
        hdu = next((name for _, name in DESI_REDSHIFT_FILES if name in hdul), None)
        if hdu is None:
            raise InputError(f"{path}: no REDSHIFTS or ZBEST table (HDUs: {', '.join(hdu_names(hdul))})")
        columns = column_names(hdul[hdu])
        missing = [c for c in ("TARGETID", "Z") if c not in columns]
        if missing:
            raise InputError(f"{path}: {hdu} table lacks column(s) {', '.join(missing)}")
        data = hdul[hdu].data
        zwarn = data["ZWARN"] if "ZWARN" in columns else np.zeros(len(data), np.int64)
        return {int(t): (float(z), int(w)) for t, z, w in zip(data["TARGETID"], data["Z"], zwarn)}

    return read_fits_guarded(path, parse)


def _attach_desi_redshifts(path: Path, spectra: list[Spectrum]) -> None:
    catalogue = desi_redshift_file(path)
    if catalogue is None:
        stem = spectrum_id(path)[len(DESI_COADD_PREFIX):] if path.name.startswith(DESI_COADD_PREFIX) else None
        note = (f"no redrock-{stem}.fits or zbest-{stem}.fits next to the coadd" if stem is not None
                else "no redshift catalogue found: only coadd-X.fits files are paired with redrock-X.fits")
        for spectrum in spectra:
            spectrum.z_note = note
        return
    redshifts = read_desi_redshifts(catalogue)
    for spectrum in spectra:
        target = int(spectrum.id.rsplit("#", 1)[1])
        if target not in redshifts:
            spectrum.z_note = f"TARGETID {target} is not in {catalogue.name}"
        elif redshifts[target][1] != 0:
            spectrum.z_note = f"{catalogue.name} flags its redshift (ZWARN={redshifts[target][1]})"
        else:
            spectrum.z = redshifts[target][0]


def _is_coadd(names: list[str], hdul) -> bool:
    return bool(_desi_arms(names)) and "FIBERMAP" in names


def _is_redshift_catalogue(names: list[str], hdul) -> bool:
    return any(hdu in names for _, hdu in DESI_REDSHIFT_FILES)


def _refuse_redshift_catalogue(path: Path, hdul) -> list[Spectrum]:
    raise InputError(f"{path}: is a DESI redshift catalogue, not spectra: give the coadd-*.fits file "
                     "(its redshifts are read from here)")


@companion_file
def _coadd_companion(path: Path) -> Path | None:
    return desi_redshift_file(path) if path.name.startswith(DESI_COADD_PREFIX) else None


fits_loader("desi-coadd", "DESI coadd (B/R/Z_WAVELENGTH, _FLUX, _IVAR, _MASK and FIBERMAP)", identify=_is_coadd,
            priority=10, finish=_attach_desi_redshifts)(_desi_from_hdul)
fits_loader("desi-redshifts", None, identify=_is_redshift_catalogue, priority=20)(_refuse_redshift_catalogue)
