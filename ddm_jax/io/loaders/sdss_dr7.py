"""SDSS DR7 spSpec-MJD-PLATE-FIBER.fit files (SDSS-I/II, spectro1d; the DR7 spSpec data model).

The primary HDU is a (4, N) float32 image: row 0 the spectrum, row 1 the continuum-subtracted
spectrum (not read), row 2 its error (standard deviation, 0 where the pixel is bad), row 3 the
mask. Flux in 1e-17 erg/s/cm2/A. Vacuum wavelengths from the header, log10-linear:
lambda_i = 10 ** (COEFF0 + COEFF1 * i). z is the header's Z; the survey id comes from PLATEID, MJD
and FIBERID. Six binary tables of line fits follow (not read); a file whose image lacks the mask row
may carry the mask as a last, 1-d image HDU. ivar = 1 / error**2 where error > 0; a mask bit is bad,
except bit 30 (EMLINE), which spectro1d sets where it found an emission line: informational, and
set exactly on the lines prepare measures.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ddm_jax.errors import InputError
from ddm_jax.io.loaders.registry import fits_loader, read_fits
from ddm_jax.spectra.spectrum import Spectrum, spectrum_id

FLUX_ROW, ERROR_ROW, MASK_ROW = 0, 2, 3  # rows of the primary image (row 1: continuum-subtracted)
WAVELENGTH_KEYS = ("COEFF0", "COEFF1")
ID_KEYS = ("PLATEID", "MJD", "FIBERID")
SPSPEC_KEYS = (*WAVELENGTH_KEYS, "SPEC_CLN")  # SPEC_CLN: spectro1d's classification
EMLINE = 1 << 30  # the DR7 spSpec mask's "emission line detected here" (not a defect of the pixel)


def read_spspec(path: str | os.PathLike) -> Spectrum:
    """An SDSS DR7 spSpec file as one Spectrum (module docstring); DDMError naming the file if it is
    not one, or is damaged."""
    (spectrum,) = read_fits(path, expect=("sdss-dr7",))
    return spectrum


def _is_spspec(names: list[str], hdul) -> bool:
    """A 2-d primary image with any of spectro1d's cards (one missing is then refused by name)."""
    header = hdul[0].header
    return header.get("NAXIS") == 2 and any(key in header for key in SPSPEC_KEYS)


@fits_loader("sdss-dr7", "SDSS DR7 spSpec (primary image: flux, continuum-subtracted, error, mask rows; "
             "COEFF0/COEFF1)", identify=_is_spspec, priority=90)
def _spspec_from_hdul(path: Path, hdul) -> list[Spectrum]:
    header = hdul[0].header
    image = _primary_image(path, hdul[0])
    n_pixels = image.shape[1]
    coeff0, coeff1 = (_header_number(header, key) for key in WAVELENGTH_KEYS)
    if coeff1 is None or coeff0 is None or coeff1 <= 0:
        raise InputError(f"{path}: spSpec header needs numbers COEFF0 and COEFF1 > 0 (log10 wavelength of "
                         f"pixel 0 and its step), got {header.get('COEFF0')!r}, {header.get('COEFF1')!r}")
    wavelength = 10.0 ** (coeff0 + coeff1 * np.arange(n_pixels))
    error = image[ERROR_ROW]
    has_error = np.isfinite(error) & (error > 0)
    ivar = np.where(has_error, 1.0 / np.where(has_error, error, 1.0) ** 2, 0.0)
    mask = _mask(path, hdul, image)
    finite = np.isfinite(mask)
    good = has_error & finite & ((np.where(finite, mask, 0).astype(np.int64) & ~EMLINE) == 0)
    z = _header_number(header, "Z")
    return [Spectrum(spectrum_id(path), str(path), wavelength, image[FLUX_ROW], ivar, good, z,
                     z_note=None if z is not None else "the spSpec header has no number Z",
                     survey_id=_survey_id(header))]


def _primary_image(path: Path, hdu) -> np.ndarray:
    """The primary image as float64, (rows, N); refuses one without the flux and error rows."""
    image = np.asarray(hdu.data if hdu.data is not None else np.empty((0, 0)), dtype=np.float64)
    if image.ndim != 2 or image.shape[0] <= ERROR_ROW or image.shape[1] < 2:
        raise InputError(f"{path}: spSpec primary image is {image.shape}; it needs the flux, "
                         "continuum-subtracted and error rows (at least 3 x 2)")
    return image


def _mask(path: Path, hdul, image: np.ndarray) -> np.ndarray:
    """The mask row, or a last 1-d image HDU of N values; (N,) float64."""
    if image.shape[0] > MASK_ROW:
        return image[MASK_ROW]
    last = hdul[-1]
    data = getattr(last, "data", None) if len(hdul) > 1 and not hasattr(last, "columns") else None
    if data is None or np.ndim(data) != 1 or np.size(data) != image.shape[1]:
        raise InputError(f"{path}: spSpec has no mask (neither a fourth image row nor a last 1-d image HDU "
                         f"of {image.shape[1]} values)")
    return np.asarray(data, dtype=np.float64)


def _header_number(header, key: str) -> float | None:
    """A finite number from the header, or None where the card is missing or not a number."""
    value = header.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _survey_id(header) -> str:
    """'sdss:PLATE-MJD-FIBERID' from the header, '' where a key is missing or not an integer."""
    values = [header.get(key) for key in ID_KEYS]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return ""
    return "sdss:" + "-".join(map(str, values))
