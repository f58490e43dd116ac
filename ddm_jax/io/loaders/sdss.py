"""SDSS spec-*.fits files (DR8 and later): the COADD table (loglam, flux, ivar, and_mask; wdisp, the
resolution, where present); z and the survey id PLATE-MJD-FIBERID from the object's metadata table,
named SPECOBJ for SDSS-I/II spectra and SPALL for BOSS and eBOSS (SDSS-III/IV) ones. and_mask != 0
marks a bad pixel."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ddm_jax.errors import InputError
from ddm_jax.io.fits import column_names, read_fits_guarded
from ddm_jax.io.loaders.registry import fits_loader
from ddm_jax.spectra.instrument import sigma_from_wdisp
from ddm_jax.spectra.spectrum import Spectrum, spectrum_id

COADD_COLUMNS = ("loglam", "flux", "ivar", "and_mask")
# The one-row metadata table: a copy of the specObj row (SDSS-I/II) or of the spAll row (BOSS, eBOSS).
METADATA_TABLES = ("SPECOBJ", "SPALL")


def read_sdss_fits(path: str | os.PathLike) -> Spectrum:
    """An SDSS spec file: COADD table (loglam, flux, ivar, and_mask), z from SPECOBJ or SPALL if present."""
    path = Path(path)
    return read_fits_guarded(path, lambda hdul: _sdss_from_hdul(path, hdul)[0])


def _is_sdss(names: list[str], hdul) -> bool:
    from astropy.io import fits

    # older spec files leave the first extension unnamed
    return "COADD" in names or (len(hdul) > 1 and isinstance(hdul[1], fits.BinTableHDU) and not hdul[1].name)


@fits_loader("sdss", "SDSS spec, DR8 and later (COADD table)", identify=_is_sdss, priority=100)
def _sdss_from_hdul(path: Path, hdul) -> list[Spectrum]:
    coadd = _coadd_columns(path, hdul)
    z = _metadata_z(hdul)
    wavelength = 10.0 ** coadd["loglam"]
    good = coadd["and_mask"] == 0
    return [Spectrum(spectrum_id(path), str(path), wavelength, coadd["flux"], coadd["ivar"], good, z,
                     survey_id=_sdss_survey_id(path, hdul), lsf_sigma=_wdisp_sigma(hdul, wavelength))]


def _wdisp_sigma(hdul, wavelength: np.ndarray) -> np.ndarray | None:
    """The LSF sigma (Angstrom) from the COADD table's wdisp column, None without one."""
    table = hdul["COADD"] if "COADD" in hdul else hdul[1]
    if "wdisp" not in [n.lower() for n in column_names(table)]:
        return None
    return sigma_from_wdisp(wavelength, np.asarray(table.data["wdisp"], np.float64))


def _sdss_survey_id(path: Path, hdul) -> str:
    """'sdss:PLATE-MJD-FIBERID' from SPECOBJ or SPALL, the primary header, or an spec-PPPP-MMMMM-FFFF name."""
    keys = ("PLATE", "MJD", "FIBERID")
    table = _metadata_table(hdul, keys)
    if table is not None:
        values = [int(np.asarray(table.data[k]).ravel()[0]) for k in keys]
    elif all(k in hdul[0].header for k in ("PLATEID", "MJD", "FIBERID")):
        values = [int(hdul[0].header[k]) for k in ("PLATEID", "MJD", "FIBERID")]
    elif match := re.match(r"spec-(\d+)-(\d+)-(\d+)$", spectrum_id(path)):
        values = [int(v) for v in match.groups()]
    else:
        return ""
    return "sdss:" + "-".join(map(str, values))


def _coadd_columns(path: Path, hdul) -> dict[str, np.ndarray]:
    if "COADD" in hdul:
        table = hdul["COADD"]
    elif len(hdul) > 1:
        table = hdul[1]  # older spec files leave the first extension unnamed
    else:
        raise InputError(f"{path}: no COADD table (is this an SDSS spec-*.fits file?)")
    names = [n.lower() for n in column_names(table)]
    missing = [c for c in COADD_COLUMNS if c not in names]
    if missing:
        raise InputError(f"{path}: COADD table lacks column(s) {', '.join(missing)}")
    return {c: np.asarray(table.data[c], dtype=np.float64 if c != "and_mask" else np.int64)
            for c in COADD_COLUMNS}


def _metadata_table(hdul, columns: tuple[str, ...]):
    """The first of SPECOBJ, SPALL that has every one of `columns` (and a row), or None."""
    for name in METADATA_TABLES:
        table = hdul[name] if name in hdul else None
        if table is not None and all(c in column_names(table) for c in columns) and table.data is not None \
                and len(table.data):
            return table
    return None


def _metadata_z(hdul) -> float | None:
    table = _metadata_table(hdul, ("Z",))
    return None if table is None else float(np.asarray(table.data["Z"]).ravel()[0])
