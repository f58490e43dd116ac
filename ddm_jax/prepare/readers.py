"""Readers: survey spectrum files and plain arrays into `Spectrum` records.

`read_any` recognises a FITS file by its content (HDU names), not by its name:

  SDSS spec-*.fits        COADD table (loglam, flux, ivar, and_mask); z from SPECOBJ.
  DESI coadd-*.fits       <ARM>_WAVELENGTH/_FLUX/_IVAR/_MASK per camera (B, R, Z) and FIBERMAP:
                          one spectrum per target, id `<file stem>#<TARGETID>`, the cameras merged
                          onto one grid (`merge_arms`); z from the redrock file next to it
                          (`desi_redshift_file`).
  MaNGA DRP LOGCUBE       FLUX/IVAR/MASK (N_wave, ny, nx) and WAVE: one spectrum per spaxel with any
                          good pixel, id `<plateifu>#x<i>y<j>`, `position` (i, j), `wcs` the cube's
                          celestial WCS. No redshift in the file: give --z or --z-table.
  MaNGA DRP LOGRSS        FLUX/IVAR/MASK (n_rows, N_wave) and WAVE: one spectrum per row (fibre and
                          exposure) with any good pixel, id `<plateifu>#f<k>`, `position` (k,).
  MaNGA DAP test spectra  WAVE, FLUX/IVAR/MASK (n, N) and Z (n) (sdss-mangadap's test files): one
                          spectrum per row, id `<file stem>#<row>`, z from Z.

Every reader raises `DDMError` with a message that starts with the file's path, so that a
batch can report the file and carry on with the rest (`read_many`). Errors about one spectrum
of a file (no redshift, every pixel masked) name the file and the spectrum's id (`describe`).

Wavelengths are observed-frame vacuum Angstrom (SDSS's, DESI's and MaNGA's convention; the DDM
was trained on MaNGA); `z` takes them to the rest frame. Flux is per Angstrom (all three surveys
write 1e-17 erg/s/cm2/A; prepare does not depend on the unit).

Masks. SDSS: and_mask != 0 is bad. DESI: MASK != 0 is bad. MaNGA cubes and the DAP test spectra
(MANGA_DRP3PIXMASK): MASK != 0 is bad, i.e. any of NOCOV, LOWCOV, DEADFIBER, FORESTAR, DONOTUSE,
the only bits defined (stricter than the DAP, which drops DONOTUSE and FORESTAR only). MaNGA RSS
(MANGA_DRP2PIXMASK): any bit but the informational SMEARIMAGE, SMEARHIGHSN, SMEARMEDSN (10-12) is
bad. Everywhere a pixel with ivar <= 0 or a non-finite value is bad as well (`validate`).
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import math
import os
import re
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ddm_jax.errors import DDMError, first_line
from ddm_jax.io import NpyArray, load_npz, refuse_beyond_memory

FITS_SUFFIXES = (".fits", ".fit", ".fits.gz", ".fit.gz")
ARRAY_SUFFIXES = (".npy", ".npz", ".csv")
COADD_COLUMNS = ("loglam", "flux", "ivar", "and_mask")

# DESI: the redshift catalogue of `coadd-X.fits` is `redrock-X.fits` (HDU REDSHIFTS), or in
# older productions `zbest-X.fits` (HDU ZBEST), in the same folder.
DESI_COADD_PREFIX = "coadd-"
DESI_REDSHIFT_FILES = (("redrock-", "REDSHIFTS"), ("zbest-", "ZBEST"))
DESI_CHUNK = 256  # targets merged at a time
MANGA_IMAGES = ("FLUX", "IVAR", "MASK", "WAVE")
# MANGA_DRP2PIXMASK bits that describe a fibre without marking its pixels bad.
MANGA_RSS_INFO_BITS = (1 << 10) | (1 << 11) | (1 << 12)  # SMEARIMAGE, SMEARHIGHSN, SMEARMEDSN

LAYOUTS = {
    "sdss": "SDSS spec (COADD table)",
    "desi-coadd": "DESI coadd (B/R/Z_WAVELENGTH, _FLUX, _IVAR, _MASK and FIBERMAP)",
    "manga-cube": "MaNGA LOGCUBE (3-d FLUX, IVAR, MASK and WAVE)",
    "manga-rss": "MaNGA LOGRSS (2-d FLUX, IVAR, MASK and WAVE)",
    "manga-dap-test": "MaNGA DAP test spectra (WAVE, FLUX, IVAR, MASK and Z)",
}


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


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in FITS_SUFFIXES + ARRAY_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def spectrum_id(path: Path) -> str:
    """File name without its (possibly double, e.g. .fits.gz) suffix."""
    return path.name[: len(path.name) - len(_suffix(path))]


# --- FITS files: one guarded open, a layout found by content --------------------------------------

FITS_BLOCK = 2880  # bytes: FITS pads every header and data unit to a multiple of this
_COMPRESSED = {b"BZh": "bzip2", b"PK\x03\x04": "zip"}  # astropy would decompress these too


def read_fits_guarded(path: str | os.PathLike, parse: Callable):
    """`parse(hdul)` on the open FITS file, every failure a DDMError naming the file.

    What the file declares is checked before astropy parses it (`check_fits_structure`): every
    header, and where its data lie, against the file's length (the decompressed stream, for a
    gzipped file), and the file must fit in the memory available.
    astropy only warns that a file is short; the read may then fail obscurely or not at all:
    a truncation warning (or a compressed stream that ends early) wins over any other failure.
    `parse` must read all the data it needs before it returns (the file is closed after).
    """
    from astropy.io import fits  # heavy import: only FITS users pay for it

    path = Path(path)
    refuse_beyond_memory(path, check_fits_structure(path))
    result, failure = None, None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with fits.open(path, memmap=False) as hdul:
                _check_hdu_kinds(path, hdul)
                result = parse(hdul)
        except DDMError as err:
            failure = err
        except EOFError as err:  # a .gz file cut short inside an HDU that was read
            raise DDMError(f"{path}: truncated FITS file ({err})") from None
        except (OSError, ValueError, TypeError, IndexError, KeyError, zlib.error, fits.VerifyError) as err:
            failure = err
    truncated = next((w.message for w in caught if "truncated" in str(w.message)), None)
    if truncated is not None:
        raise DDMError(f"{path}: truncated FITS file ({truncated})")
    if isinstance(failure, DDMError):
        raise failure
    if failure is not None:
        raise DDMError(f"{path}: unreadable FITS file ({first_line(failure)})")
    return result


def _check_hdu_kinds(path: Path, hdul) -> None:
    """Every HDU one astropy understands: it reads a damaged header as a bare unit without data."""
    from astropy.io import fits

    kinds = (fits.PrimaryHDU, fits.ImageHDU, fits.BinTableHDU, fits.TableHDU, fits.CompImageHDU, fits.GroupsHDU)
    for index, hdu in enumerate(hdul):
        if not isinstance(hdu, kinds):
            raise DDMError(f"{path}: HDU {index} ({hdu.name or 'unnamed'}) is not a standard FITS unit (a damaged "
                           "header)")


MAX_HEADER_BLOCKS = 1000  # 2.9 MB of header: survey files use a few dozen blocks
FITS_BITPIX = (8, 16, 32, 64, -32, -64)
STRUCTURAL_CARDS = r"BITPIX|NAXIS\d*|PCOUNT|GCOUNT|TFIELDS|GROUPS"


def check_fits_structure(path: Path) -> int:
    """Walk the FITS file's headers, skipping their data unread (a gzipped stream is decompressed
    block by block, holding none of it), and refuse, before astropy parses anything, a header
    that never ends, structural cards out of the standard's range (NAXIS and TFIELDS at most 999,
    a known BITPIX, no negative size), data that would lie past the end of the file, and a
    compressed stream that ends early (astropy would take its end for the end of the file).
    Returns the file's (decompressed) length."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as err:
        raise DDMError(f"{path}: cannot read ({err.strerror or err})") from None
    for magic, name in _COMPRESSED.items():
        if head.startswith(magic):
            raise DDMError(f"{path}: a {name}-compressed file; FITS files are read plain or gzipped")
    zipped = head.startswith(b"\x1f\x8b")
    try:
        with gzip.open(path) if zipped else open(path, "rb") as stream:
            length = path.stat().st_size if not zipped else None
            index = 0
            while True:
                cards = _read_header(path, stream, index)
                if cards is None:
                    break
                size = _declared_data_size(path, cards, index)
                padded = -(-size // FITS_BLOCK) * FITS_BLOCK
                data_start = stream.tell()
                stream.seek(min(padded, 1 << 62), os.SEEK_CUR)  # past the end at most: seek offsets are 64-bit
                end = stream.tell() if zipped else min(data_start + padded, length)
                if data_start + padded - end >= FITS_BLOCK:  # the last block's padding may be missing
                    name = cards.get("EXTNAME", f"#{index}").strip("' ") or f"#{index}"
                    axes = " x ".join(cards.get(f"NAXIS{i}", "?") for i in range(1, int(cards.get("NAXIS", 0)) + 1))
                    raise DDMError(f"{path}: truncated FITS file: HDU {name} declares {padded} bytes of data (NAXIS "
                                   f"{axes or 'none'}, BITPIX {cards.get('BITPIX')}) from byte {data_start}, but the "
                                   f"file holds {end if zipped else length} bytes")
                index += 1
            if zipped:
                while stream.read(1 << 22):  # to the end: a stream cut short raises EOFError
                    pass
                length = stream.tell()
    except EOFError as err:
        raise DDMError(f"{path}: truncated FITS file ({err})") from None
    except (OSError, zlib.error) as err:
        raise DDMError(f"{path}: {'corrupt gzip stream' if zipped else 'cannot read'} ({err})") from None
    return length


def _read_header(path: Path, stream, index: int) -> dict[str, str] | None:
    """The next header's cards (keyword: value text), or None at the end of the HDUs (the end of
    the file, or what follows the last HDU not being an extension header)."""
    cards: dict[str, str] = {}
    for block_number in range(MAX_HEADER_BLOCKS):
        block = stream.read(FITS_BLOCK)
        if block_number == 0 and (not block.strip(b"\0") or not block.startswith(b"SIMPLE" if index == 0
                                                                                 else b"XTENSION")):
            if index == 0:
                raise DDMError(f"{path}: not a FITS file (it does not start with a SIMPLE card)")
            return None  # padding or other bytes after the last HDU: astropy ignores them too
        if len(block) < FITS_BLOCK:
            raise DDMError(f"{path}: truncated FITS file: header {index} ends at byte {stream.tell()}")
        for at in range(0, FITS_BLOCK, 80):
            card = block[at:at + 80].decode("ascii", "replace")
            key = card[:8].strip()
            if key == "END":
                return cards
            if card[8:10] != "= ":
                continue
            if key in cards and re.fullmatch(STRUCTURAL_CARDS, key):  # which one would astropy believe?
                raise DDMError(f"{path}: header {index} has two {key} cards")
            cards.setdefault(key, card[10:].split("/", 1)[0].strip())
    raise DDMError(f"{path}: header {index} has no END card within {MAX_HEADER_BLOCKS} blocks")


def _declared_data_size(path: Path, cards: dict[str, str], index: int) -> int:
    """Bytes of data a header declares: |BITPIX| / 8 x GCOUNT x (PCOUNT + NAXIS1 x ... x NAXISn)."""

    def integer(key: str, default: int | None, low: int, high: int | None = None) -> int:
        text = cards.get(key)
        if text is None and default is not None:
            return default
        try:
            value = int(text)
        except (TypeError, ValueError):
            raise DDMError(f"{path}: header {index}: {key} is {'missing' if text is None else repr(text)}, "
                           "not an integer") from None
        if value < low or (high is not None and value > high):
            raise DDMError(f"{path}: header {index}: {key} = {value} is outside the FITS standard's range")
        return value

    bitpix = integer("BITPIX", None, -64, 64)
    if bitpix not in FITS_BITPIX:
        raise DDMError(f"{path}: header {index}: BITPIX = {bitpix} is not one of {FITS_BITPIX}")
    naxis = integer("NAXIS", None, 0, 999)
    integer("TFIELDS", 0, 0, 999)
    axes = [integer(f"NAXIS{i}", None, 0) for i in range(1, naxis + 1)]
    if index == 0 and cards.get("GROUPS") == "T" and axes and axes[0] == 0:
        axes = axes[1:]  # random groups: NAXIS1 = 0 is not a dimension
    if not axes:
        return 0
    return abs(bitpix) // 8 * integer("GCOUNT", 1, 0) * (integer("PCOUNT", 0, 0) + math.prod(axes))


def _hdu_names(hdul) -> list[str]:
    return [h.name.upper() or f"#{i} (unnamed)" for i, h in enumerate(hdul)]


def _desi_arms(names: list[str]) -> list[str]:
    """Cameras with a wavelength and a flux image: ['B', 'R', 'Z'] for a DESI coadd."""
    suffix = "_WAVELENGTH"
    return [n[: -len(suffix)] for n in names if n.endswith(suffix) and f"{n[: -len(suffix)]}_FLUX" in names]


def fits_layout(hdul) -> str | None:
    """Which reader an open FITS file needs (a key of LAYOUTS), 'desi-redshifts' for a redrock
    or zbest catalogue, or None: decided by the HDU names and the FLUX image's dimensions."""
    from astropy.io import fits

    names = _hdu_names(hdul)
    if _desi_arms(names) and "FIBERMAP" in names:
        return "desi-coadd"
    if any(hdu in names for _, hdu in DESI_REDSHIFT_FILES):
        return "desi-redshifts"
    if set(MANGA_IMAGES) <= set(names):
        naxis = hdul["FLUX"].header.get("NAXIS")
        if naxis == 2 and "Z" in names:
            return "manga-dap-test"
        if naxis in (2, 3):
            return "manga-rss" if naxis == 2 else "manga-cube"
    if "COADD" in names or (len(hdul) > 1 and isinstance(hdul[1], fits.BinTableHDU) and not hdul[1].name):
        return "sdss"  # older spec files leave the first extension unnamed
    return None


def read_fits(path: str | os.PathLike, expect: str | None = None) -> list[Spectrum]:
    """Any FITS layout of LAYOUTS, found by content; `expect` (a LAYOUTS key) refuses the others.

    DESI coadds get their redshifts from the redrock file next to them (`desi_redshift_file`).
    """
    path = Path(path)

    def parse(hdul):
        layout = fits_layout(hdul)
        if layout == "desi-redshifts":
            raise DDMError(f"{path}: is a DESI redshift catalogue, not spectra: give the coadd-*.fits file "
                           "(its redshifts are read from here)")
        if layout is None or (expect is not None and layout != expect):
            wanted = [LAYOUTS[expect]] if expect else list(LAYOUTS.values())
            raise DDMError(f"{path}: not a FITS layout ddm-jax reads (HDUs: {', '.join(_hdu_names(hdul))}); "
                           f"it reads {'; '.join(wanted)}")
        return layout, _PARSERS[layout](path, hdul)

    layout, spectra = read_fits_guarded(path, parse)
    if layout == "desi-coadd":
        _attach_desi_redshifts(path, spectra)
    return spectra


# --- SDSS -----------------------------------------------------------------------------------------

def read_sdss_fits(path: str | os.PathLike) -> Spectrum:
    """An SDSS spec file: COADD table (loglam, flux, ivar, and_mask), z from SPECOBJ if present."""
    path = Path(path)
    return read_fits_guarded(path, lambda hdul: _sdss_from_hdul(path, hdul)[0])


def _sdss_from_hdul(path: Path, hdul) -> list[Spectrum]:
    coadd = _coadd_columns(path, hdul)
    z = _specobj_z(hdul)
    wavelength = 10.0 ** coadd["loglam"]
    good = coadd["and_mask"] == 0
    return [Spectrum(spectrum_id(path), str(path), wavelength, coadd["flux"], coadd["ivar"], good, z,
                     survey_id=_sdss_survey_id(path, hdul))]


def _sdss_survey_id(path: Path, hdul) -> str:
    """'sdss:PLATE-MJD-FIBERID' from SPECOBJ, the primary header, or an spec-PPPP-MMMMM-FFFF name."""
    keys = ("PLATE", "MJD", "FIBERID")
    if "SPECOBJ" in hdul and all(k in _column_names(hdul["SPECOBJ"]) for k in keys):
        values = [int(np.asarray(hdul["SPECOBJ"].data[k]).ravel()[0]) for k in keys]
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
        raise DDMError(f"{path}: no COADD table (is this an SDSS spec-*.fits file?)")
    names = [n.lower() for n in _column_names(table)]
    missing = [c for c in COADD_COLUMNS if c not in names]
    if missing:
        raise DDMError(f"{path}: COADD table lacks column(s) {', '.join(missing)}")
    return {c: np.asarray(table.data[c], dtype=np.float64 if c != "and_mask" else np.int64)
            for c in COADD_COLUMNS}


def _column_names(hdu) -> list[str]:
    """A table's column names, upper case; none for an image (where a damaged file has one), and
    none for a column whose TTYPE card is missing (astropy names it None)."""
    columns = getattr(hdu, "columns", None)
    return [name.upper() for name in columns.names if name] if columns is not None else []


def _specobj_z(hdul) -> float | None:
    if "SPECOBJ" not in hdul or "Z" not in _column_names(hdul["SPECOBJ"]):
        return None
    return float(np.asarray(hdul["SPECOBJ"].data["Z"]).ravel()[0])


# --- DESI -----------------------------------------------------------------------------------------

def read_desi_coadd(path: str | os.PathLike) -> list[Spectrum]:
    """A DESI coadd (or spectra) file: one Spectrum per FIBERMAP target, id `<file stem>#<TARGETID>`,
    the cameras merged by `merge_arms`, z from `desi_redshift_file` (None, with a z_note, where
    there is no such file, the target is not in it or its ZWARN is not 0)."""
    return read_fits(path, expect="desi-coadd")


def _desi_from_hdul(path: Path, hdul) -> list[Spectrum]:
    names = _hdu_names(hdul)
    arms = _desi_arms(names)
    fibermap = hdul["FIBERMAP"]
    if "TARGETID" not in _column_names(fibermap):
        raise DDMError(f"{path}: FIBERMAP lacks column TARGETID")
    targets = np.asarray(fibermap.data["TARGETID"]).astype(np.int64)
    wavelengths, fluxes, ivars, goods = [], [], [], []
    for arm in arms:
        if f"{arm}_IVAR" not in names:
            raise DDMError(f"{path}: lacks {arm}_IVAR (has {', '.join(names)})")
        wavelength = np.asarray(hdul[f"{arm}_WAVELENGTH"].data, dtype=np.float64)
        flux = np.atleast_2d(np.asarray(hdul[f"{arm}_FLUX"].data, dtype=np.float64))
        ivar = np.atleast_2d(np.asarray(hdul[f"{arm}_IVAR"].data, dtype=np.float64))
        mask = (np.atleast_2d(np.asarray(hdul[f"{arm}_MASK"].data)) if f"{arm}_MASK" in names
                else np.zeros(flux.shape, np.int32))
        if not (flux.shape == ivar.shape == mask.shape == (len(targets), wavelength.size)):
            raise DDMError(f"{path}: camera {arm}: FLUX {flux.shape}, IVAR {ivar.shape}, MASK {mask.shape} "
                           f"disagree with {len(targets)} FIBERMAP targets x {wavelength.size} wavelengths")
        if wavelength.size < 2 or not np.all(np.diff(wavelength) > 0):
            raise DDMError(f"{path}: {arm}_WAVELENGTH is not strictly increasing")
        wavelengths.append(wavelength)
        fluxes.append(flux)
        ivars.append(ivar)
        goods.append(mask == 0)
    stem, spectra = spectrum_id(path), []
    for start in range(0, len(targets), DESI_CHUNK):  # bounds merge_arms' temporaries
        rows = slice(start, start + DESI_CHUNK)
        wavelength, flux, ivar, good = merge_arms(wavelengths, [f[rows] for f in fluxes], [v[rows] for v in ivars],
                                                  [g[rows] for g in goods])
        spectra += [Spectrum(f"{stem}#{t}", str(path), wavelength, flux[k], ivar[k], good[k], None,
                             survey_id=f"desi:{t}") for k, t in enumerate(targets[rows])]
    return spectra


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
            raise DDMError(f"{path}: no REDSHIFTS or ZBEST table (HDUs: {', '.join(_hdu_names(hdul))})")
        columns = _column_names(hdul[hdu])
        missing = [c for c in ("TARGETID", "Z") if c not in columns]
        if missing:
            raise DDMError(f"{path}: {hdu} table lacks column(s) {', '.join(missing)}")
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


# --- MaNGA ----------------------------------------------------------------------------------------

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
    path = Path(path)

    def parse(hdul):
        layout = fits_layout(hdul)
        if layout not in ("manga-cube", "manga-rss"):
            raise DDMError(f"{path}: not a MaNGA LOGCUBE or LOGRSS file (HDUs: {', '.join(_hdu_names(hdul))})")
        return _PARSERS[layout](path, hdul)

    return read_fits_guarded(path, parse)


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
        raise DDMError(f"{path}: FLUX {flux.shape}, IVAR {ivar.shape} and MASK {mask.shape} must agree "
                       f"({ndim}-d)")
    n_wave = flux.shape[0] if ndim == 3 else flux.shape[-1]
    if wave.ndim != 1 or wave.size != n_wave:
        raise DDMError(f"{path}: WAVE has {wave.size} samples, FLUX {n_wave}")
    return wave, flux, ivar, mask


def _manga_survey_id(name: str) -> str:
    return f"manga:{name}" if re.fullmatch(r"\d+-\d+", name) else ""


def _usable(flux: np.ndarray, ivar: np.ndarray, bad: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return ~bad & (ivar > 0) & np.isfinite(flux) & np.isfinite(ivar)


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
        raise DDMError(f"{path}: every spaxel is masked (MASK != 0 or IVAR <= 0 everywhere): no spectrum")
    name = _manga_name(path, hdul[0].header)
    wcs = _celestial_wcs(hdul["FLUX"].header, flux.shape[1:])
    rows = {k: np.ascontiguousarray(a[:, jj, ii].T, dtype=dt)
            for k, a, dt in (("flux", flux, np.float64), ("ivar", ivar, np.float64), ("good", usable, bool))}
    return [Spectrum(f"{name}#x{i}y{j}", str(path), wave, rows["flux"][s], rows["ivar"][s], rows["good"][s], None,
                     position=(int(i), int(j)), wcs=wcs, survey_id=_manga_survey_id(name))
            for s, (i, j) in enumerate(zip(ii, jj))]


def _manga_rss_from_hdul(path: Path, hdul) -> list[Spectrum]:
    wave, flux, ivar, mask = _manga_images(path, hdul, 2)
    usable = _usable(flux, ivar, (mask.astype(np.int64) & ~MANGA_RSS_INFO_BITS) != 0)
    (rows,) = np.nonzero(usable.any(axis=1))
    if not rows.size:
        raise DDMError(f"{path}: every row is masked (MASK bad or IVAR <= 0 everywhere): no spectrum")
    name = _manga_name(path, hdul[0].header)
    return [Spectrum(f"{name}#f{k}", str(path), wave, flux[k].astype(np.float64), ivar[k].astype(np.float64),
                     usable[k], None, position=(int(k),), survey_id=_manga_survey_id(name))
            for k in rows]


def _manga_dap_test_from_hdul(path: Path, hdul) -> list[Spectrum]:
    wave, flux, ivar, mask = _manga_images(path, hdul, 2)
    z = np.asarray(hdul["Z"].data, dtype=np.float64).ravel()
    if z.size != flux.shape[0]:
        raise DDMError(f"{path}: Z has {z.size} values for {flux.shape[0]} spectra")
    stem = spectrum_id(path)
    return [Spectrum(f"{stem}#{k}", str(path), wave, flux[k].astype(np.float64), ivar[k].astype(np.float64),
                     mask[k] == 0, float(z[k]) if np.isfinite(z[k]) else None)
            for k in range(flux.shape[0])]


_PARSERS = {
    "sdss": _sdss_from_hdul,
    "desi-coadd": _desi_from_hdul,
    "manga-cube": _manga_cube_from_hdul,
    "manga-rss": _manga_rss_from_hdul,
    "manga-dap-test": _manga_dap_test_from_hdul,
}


# --- plain arrays ---------------------------------------------------------------------------------

def read_array_file(path: str | os.PathLike) -> list[Spectrum]:
    """Plain arrays: .npz (keys wavelength, flux, ivar; optional mask, z, ids), .npy or .csv.

    .npz `flux`, `ivar`, `mask` may be (N,) or (M, N) for M spectra; `wavelength` (N,) or (M, N).
    .npy: one (N, 3) or (3, N) array of columns wavelength, flux, ivar.
    .csv: columns wavelength, flux, ivar[, mask] with that header, or in that order without one.
    ivar is required: the S/N gate needs errors. A nonzero mask marks a bad pixel. Shapes are
    checked as the file declares them (.npy/.npz headers) or as it streams (CSV) before the data
    are held in memory; any numeric dtype, byte order or memory order is converted to float64.
    """
    path = Path(path)
    suffix = _suffix(path)
    try:
        if suffix == ".npz":
            return _read_npz(path)
        columns = _read_npy(path) if suffix == ".npy" else _read_csv(path)
        return [_from_columns(path, spectrum_id(path), columns, z=None)]
    except DDMError:
        raise
    except (OSError, ValueError, KeyError, IndexError, EOFError, csv.Error, zipfile.BadZipFile) as err:
        raise DDMError(f"{path}: unreadable {suffix} file ({first_line(err)})"
                       ) from None


def _read_npy(path: Path) -> dict[str, np.ndarray]:
    array = NpyArray(path, "spectrum", kinds="fiu")
    shape = array.shape
    if len(shape) != 2 or 3 not in shape:
        raise DDMError(f"{path}: expected an (N, 3) array of wavelength, flux, ivar; got shape {shape}")
    values = array.read(0, array.rows).astype(np.float64)
    if shape[1] != 3:  # (3, N)
        values = values.T
    return dict(zip(("wavelength", "flux", "ivar"), values.T))


CSV_COLUMNS = ("wavelength", "flux", "ivar", "mask")
MAX_CSV_ROWS = 1_000_000  # pixels of one spectrum; survey spectra have 4,000-8,000
MAX_CSV_LINE = 4096  # characters: four numbers need far fewer


def _csv_lines(path: Path, handle):
    """The file's lines, refusing one longer than MAX_CSV_LINE before it is held whole."""
    for number, line in enumerate(iter(lambda: handle.readline(MAX_CSV_LINE + 1), ""), start=1):
        if len(line) > MAX_CSV_LINE:
            raise DDMError(f"{path}: line {number} is longer than {MAX_CSV_LINE} characters")
        yield line


def _read_csv(path: Path) -> dict[str, np.ndarray]:
    header, columns, rows = None, [], 0
    block: list[list[float]] = []
    with open(path, newline="") as handle:
        for fields in csv.reader(_csv_lines(path, handle)):
            if not fields or fields[0].lstrip().startswith("#"):
                continue
            if header is None:
                try:
                    float(fields[0])
                    header = list(CSV_COLUMNS[: len(fields)])  # no header: this order
                except ValueError:
                    header = [h.strip().lower() for h in fields]
                    if len(header) > len(CSV_COLUMNS) or len(set(header)) != len(header):
                        raise DDMError(f"{path}: header names {len(header)} columns ({', '.join(header[:6])}); "
                                       f"expected at most {', '.join(CSV_COLUMNS)}, each once") from None
                    continue
            if len(fields) != len(header):
                raise DDMError(f"{path}: the header names {len(header)} columns, row {rows + 1} has {len(fields)}")
            rows += 1
            if rows > MAX_CSV_ROWS:
                raise DDMError(f"{path}: more than {MAX_CSV_ROWS} rows; one spectrum per CSV file is expected")
            block.append([float(v) for v in fields])
            if len(block) == 65536:  # lists of floats cost ~10x an array: convert as it streams
                columns.append(np.array(block, np.float64))
                block = []
    if header is None or rows == 0:
        raise DDMError(f"{path}: empty CSV file")
    values = np.concatenate(columns + [np.array(block, np.float64).reshape(-1, len(header))])
    return {name: values[:, i] for i, name in enumerate(header)}


NPZ_KEYS = ("wavelength", "flux", "ivar", "mask", "z", "ids")


def _check_npz(path: Path, declared: dict) -> None:
    """The shapes an .npz of spectra declares, before its data are read."""
    if "format" in declared:  # e.g. PREPARED.npz: rest frame already; de-redshifting again would be wrong
        raise DDMError(f"{path}: is a prepared file (it has a 'format' entry), already on the rest-frame grid: "
                       "give it to `ddm-jax decompose`, not to `prepare`")
    missing = [k for k in ("wavelength", "flux", "ivar") if k not in declared]
    if missing:
        raise DDMError(f"{path}: lacks {', '.join(missing)} (has {', '.join(sorted(declared))})")
    flux = declared["flux"].shape
    if len(flux) not in (1, 2):
        raise DDMError(f"{path}: flux has shape {flux}; expected (N,) or (M, N)")
    count, n = (1, flux[0]) if len(flux) == 1 else flux
    allowed = {"wavelength": ((n,), (count, n)), "ivar": (flux,), "mask": (flux,), "z": ((), (count,)),
               "ids": ((count,),)}
    for key, shapes in allowed.items():
        if key in declared and declared[key].shape not in shapes:
            raise DDMError(f"{path}: {key} has shape {declared[key].shape}; with flux {flux} expected "
                           f"{' or '.join(map(str, shapes))}")
    for key in ("wavelength", "flux", "ivar", "mask", "z"):  # a mask may be boolean, nothing else
        if key in declared and declared[key].dtype.kind not in ("fiub" if key == "mask" else "fiu"):
            raise DDMError(f"{path}: {key} is not numeric (dtype {declared[key].dtype})")


def _read_npz(path: Path) -> list[Spectrum]:
    arrays = load_npz(path, ".npz file", check=lambda declared: _check_npz(path, declared), keys=NPZ_KEYS)
    flux, wavelength = arrays["flux"], arrays["wavelength"]
    flux2 = np.atleast_2d(flux)
    ids = arrays.get("ids")
    if ids is None:
        ids = [spectrum_id(path)] if flux.ndim == 1 else [f"{spectrum_id(path)}#{i}" for i in range(len(flux2))]
    z = np.broadcast_to(np.asarray(arrays.get("z", np.nan), dtype=np.float64), (len(flux2),))
    spectra = []
    for i, row in enumerate(flux2):
        columns = {"flux": row, "wavelength": _row(wavelength, i), "ivar": _row(arrays["ivar"], i)}
        if "mask" in arrays:
            columns["mask"] = _row(arrays["mask"], i)
        spectra.append(_from_columns(path, str(ids[i]), columns, None if np.isnan(z[i]) else float(z[i])))
    return spectra


def _row(array: np.ndarray, i: int) -> np.ndarray:
    return array if array.ndim == 1 else array[i]


def _from_columns(path: Path, spec_id: str, columns: dict, z: float | None) -> Spectrum:
    missing = [k for k in ("wavelength", "flux", "ivar") if k not in columns]
    if missing:
        raise DDMError(f"{path}: lacks {', '.join(missing)} (has {', '.join(sorted(columns))})")
    wavelength = np.asarray(columns["wavelength"], dtype=np.float64)
    flux = np.asarray(columns["flux"], dtype=np.float64)
    ivar = np.asarray(columns["ivar"], dtype=np.float64)
    if not wavelength.shape == flux.shape == ivar.shape:
        raise DDMError(f"{path}: wavelength, flux and ivar differ in length")
    mask = np.asarray(columns.get("mask", np.zeros_like(flux)))
    return Spectrum(spec_id, str(path), wavelength, flux, ivar, mask == 0, z)


# --- batches --------------------------------------------------------------------------------------

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
        raise DDMError(f"{where}: needs at least two wavelength samples")
    if not np.all(np.isfinite(wl)) or not np.all(np.diff(wl) > 0):
        raise DDMError(f"{where}: wavelength is not finite and strictly increasing")
    if spectrum.z is None:
        why = f"{spectrum.z_note}; " if spectrum.z_note else ""
        raise DDMError(f"{where}: no redshift ({why}give one with --z or --z-table)")
    if not np.isfinite(spectrum.z) or spectrum.z < 0:
        raise DDMError(f"{where}: redshift must be finite and >= 0, got {spectrum.z}")
    usable = spectrum.good & (spectrum.ivar > 0) & np.isfinite(spectrum.flux) & np.isfinite(spectrum.ivar)
    if not usable.any():
        raise DDMError(f"{where}: every pixel is masked or has ivar 0")
    spectrum.good = usable
    spectrum.flux = np.where(usable, spectrum.flux, 0.0)
    spectrum.ivar = np.where(usable, spectrum.ivar, 0.0)
    return spectrum


def expand_inputs(inputs: list[str | os.PathLike]) -> list[Path]:
    """Files as given, and the readable files of each directory (sorted, not recursive).

    In a directory, a DESI redshift catalogue (`redrock-X.*`, `zbest-X.*`) next to its coadd
    (`coadd-X.*`) is the coadd's companion, not an input, and is left out.
    """
    paths = []
    for item in map(Path, inputs):
        if item.is_dir():
            files = sorted(p for p in item.iterdir() if p.is_file() and _suffix(p) in FITS_SUFFIXES + ARRAY_SUFFIXES)
            companions = {desi_redshift_file(p) for p in files if p.name.startswith(DESI_COADD_PREFIX)}
            paths.extend(p for p in files if p not in companions)
        else:
            paths.append(item)
    return paths


def read_any(path: Path) -> list[Spectrum]:
    """FITS files by content (`read_fits`), arrays by suffix; raises DDMError naming the file."""
    path = Path(path)
    if not path.exists():
        raise DDMError(f"{path}: no such file")
    suffix = _suffix(path)
    if suffix in FITS_SUFFIXES:
        return read_fits(path)
    if suffix in ARRAY_SUFFIXES:
        return read_array_file(path)
    raise DDMError(f"{path}: unknown file type {suffix!r} (want {', '.join(FITS_SUFFIXES + ARRAY_SUFFIXES)})")


def read_many(paths: list[Path], z_override: dict[str, float] | None = None,
              z_all: float | None = None) -> tuple[list[Spectrum], list[str]]:
    """Read and validate every file; a bad one adds its message to `errors` and is skipped, and
    so does a bad spectrum of a file that holds several (the others go on).

    z_all, if given, replaces every redshift; z_override maps spectrum id to redshift, and for
    an id `<name>#<part>` (one of several spectra in a file) not in it, `<name>` (e.g. a MaNGA
    plateifu, or the file name of an .npz) gives the redshift of all of them.
    Returns (spectra, errors).
    """
    spectra, errors = [], []
    for path in paths:
        try:
            found = read_any(path)
        except DDMError as err:
            errors.append(str(err))
            continue
        for spectrum in found:
            if z_all is not None:
                spectrum.z = z_all
            elif z_override:
                group = spectrum.id.split("#", 1)[0]
                z = z_override.get(spectrum.id, z_override.get(group) if "#" in spectrum.id else None)
                if z is not None:
                    spectrum.z = z
        if len(found) > 1 and all(s.z is None for s in found):  # e.g. a MaNGA cube without --z: one line
            notes = {s.z_note for s in found}
            why = f"{notes.pop()}; " if len(notes) == 1 and None not in notes else ""
            named = ", ".join(s.id for s in found[:3]) + (", ..." if len(found) > 3 else "")
            errors.append(f"{path}: no redshift for any of its {len(found)} spectra ({named}; {why}give one "
                          "with --z or --z-table, by spectrum id or by the part of the id before '#')")
            continue
        for spectrum in found:
            try:
                spectra.append(validate(spectrum))
            except DDMError as err:
                errors.append(str(err))
    return spectra, errors


def read_z_table(path: str | os.PathLike) -> dict[str, float]:
    """CSV with header `id,z`: redshift per spectrum id."""
    path = Path(path)
    try:
        with open(path, newline="") as handle:
            rows = csv.reader(_csv_lines(path, handle))
            header = [name.strip() for name in next(rows, [])]
            if "id" not in header or "z" not in header:
                raise DDMError(f"{path}: redshift table needs a header with columns id,z")
            at_id, at_z = header.index("id"), header.index("z")
            table = {}
            for number, fields in enumerate(rows, start=2):
                if not fields:
                    continue
                if len(fields) != len(header):
                    raise DDMError(f"{path}: line {number} has {len(fields)} fields, the header {len(header)}")
                table[fields[at_id].strip()] = float(fields[at_z])
            return table
    except OSError as err:
        raise DDMError(f"{path}: cannot read redshift table ({err.strerror})") from None
    except (ValueError, csv.Error) as err:
        raise DDMError(f"{path}: bad redshift table ({err})") from None
