"""The `Spectrum` record every loader returns (observed frame, vacuum Angstrom), and the checks
resampling needs (`validate`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ddm_jax.errors import InputError


@dataclasses.dataclass
class Spectrum:
    """One observed spectrum. Arrays are (N,) float64 (`good` bool); z may be None (not known).

    Optional, for spectra from a file that holds many (defaults None):
      position  where in the file: (i, j) = (x, y) 0-based pixel of a cube's spaxel (numpy index
                [:, j, i]; the WCS's pixel coordinates), (k,) the row of an RSS file
      wcs       the file's celestial WCS as a FITS header string (cubes): astropy's
                `WCS(fits.Header.fromstring(wcs)).pixel_to_world(i, j)` puts a spaxel on the sky
      z_note    why z is None (e.g. the redshift catalogue flags it), for the error message
      survey_id the survey's own key: 'sdss:PLATE-MJD-FIBERID', 'desi:TARGETID', 'manga:PLATE-IFU'
                (a spaxel's position completes it), or '' when the file does not say
      lsf_sigma (N,) the instrument's line-spread function per pixel, a Gaussian sigma in observed
                Angstrom (SDSS wdisp, MaNGA LSFPOST / DISP / SPECRES / SRES, DESI's resolution
                matrix); None: not known
      ebv       the Galactic E(B-V) toward the target (mag), where the file or the user gives one
    """

    id: str
    source: str
    wavelength: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    good: np.ndarray
    z: float | None
    position: tuple[int, ...] | None = None
    wcs: str | None = None
    z_note: str | None = None
    survey_id: str = ""
    lsf_sigma: np.ndarray | None = None
    ebv: float | None = None


FITS_SUFFIXES = (".fits", ".fit", ".fits.gz", ".fit.gz")
ARRAY_SUFFIXES = (".npy", ".npz", ".csv")


def file_suffix(path: Path) -> str:
    """A spectrum file's suffix, double ones (.fits.gz) whole."""
    name = path.name.lower()
    for suffix in FITS_SUFFIXES + ARRAY_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def spectrum_id(path: Path) -> str:
    """File name without its (possibly double, e.g. .fits.gz) suffix."""
    return path.name[: len(path.name) - len(file_suffix(path))]


def describe(spectrum: Spectrum) -> str:
    """The file, and the spectrum's id where the file holds several."""
    if spectrum.id == spectrum_id(Path(spectrum.source)):
        return spectrum.source
    return f"{spectrum.source} [{spectrum.id}]"


def validate(spectrum: Spectrum) -> Spectrum:
    """Checks that resampling needs; raises DDMError naming the file. Returns the spectrum."""
    where = describe(spectrum)
    wl = spectrum.wavelength
    if wl.ndim != 1 or wl.size < 2:
        raise InputError(f"{where}: needs at least two wavelength samples")
    if not np.all(np.isfinite(wl)) or not np.all(np.diff(wl) > 0):
        raise InputError(f"{where}: wavelength is not finite and strictly increasing")
    if spectrum.z is None:
        why = f"{spectrum.z_note}; " if spectrum.z_note else ""
        raise InputError(f"{where}: no redshift ({why}give one with --z or --z-table)")
    if not np.isfinite(spectrum.z) or spectrum.z < 0:
        raise InputError(f"{where}: redshift must be finite and >= 0, got {spectrum.z}")
    if spectrum.ebv is not None and not (np.isfinite(spectrum.ebv) and spectrum.ebv >= 0):
        raise InputError(f"{where}: Galactic E(B-V) must be finite and >= 0, got {spectrum.ebv}")
    usable = spectrum.good & (spectrum.ivar > 0) & np.isfinite(spectrum.flux) & np.isfinite(spectrum.ivar)
    if not usable.any():
        raise InputError(f"{where}: every pixel is masked or has ivar 0")
    spectrum.good = usable
    spectrum.lsf_sigma = _checked_lsf(spectrum, where)
    spectrum.flux = np.where(usable, spectrum.flux, 0.0)
    spectrum.ivar = np.where(usable, spectrum.ivar, 0.0)
    return spectrum


def _checked_lsf(spectrum: Spectrum, where: str) -> np.ndarray | None:
    """`lsf_sigma` as float64 with its invalid values (not finite or <= 0, e.g. under a masked
    pixel) interpolated from the valid ones; None where there is none."""
    if spectrum.lsf_sigma is None:
        return None
    lsf = np.asarray(spectrum.lsf_sigma, np.float64)
    if lsf.shape != spectrum.wavelength.shape:
        raise InputError(f"{where}: lsf_sigma has shape {lsf.shape}, the wavelengths {spectrum.wavelength.shape}")
    valid = np.isfinite(lsf) & (lsf > 0)
    if not valid.any():
        return None
    return np.interp(spectrum.wavelength, spectrum.wavelength[valid], lsf[valid])
