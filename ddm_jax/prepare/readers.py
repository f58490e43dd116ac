"""Readers: SDSS `spec-*.fits` files and plain arrays, each into one `Spectrum` record.

Every reader raises `DDMError` with a message that starts with the file's path, so that a
batch can report the file and carry on with the rest (`read_many`).

Wavelengths are observed-frame vacuum Angstrom (SDSS's convention, and MaNGA's, on which the
DDM was trained); `z` takes them to the rest frame.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np

from ddm_jax.errors import DDMError

FITS_SUFFIXES = (".fits", ".fit", ".fits.gz", ".fit.gz")
ARRAY_SUFFIXES = (".npy", ".npz", ".csv")
COADD_COLUMNS = ("loglam", "flux", "ivar", "and_mask")


@dataclasses.dataclass
class Spectrum:
    """One observed spectrum. Arrays are (N,) float64 (`good` bool); z may be None (not known)."""

    id: str
    source: str
    wavelength: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    good: np.ndarray
    z: float | None


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in FITS_SUFFIXES + ARRAY_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def spectrum_id(path: Path) -> str:
    """File name without its (possibly double, e.g. .fits.gz) suffix."""
    return path.name[: len(path.name) - len(_suffix(path))]


def read_sdss_fits(path: str | os.PathLike) -> Spectrum:
    """An SDSS spec file: COADD table (loglam, flux, ivar, and_mask), z from SPECOBJ if present."""
    from astropy.io import fits  # heavy import: only FITS users pay for it

    path = Path(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with fits.open(path, memmap=False) as hdul:
                coadd = _coadd_columns(path, hdul)
                z = _specobj_z(hdul)
            failure = None
        except (OSError, ValueError, TypeError, IndexError, KeyError) as err:
            failure = err
    # astropy only warns that a file is short; the read may then fail obscurely or not at all.
    truncated = next((w.message for w in caught if "truncated" in str(w.message)), None)
    if truncated is not None:
        raise DDMError(f"{path}: truncated FITS file ({truncated})")
    if failure is not None:
        raise DDMError(f"{path}: unreadable FITS file ({failure})")
    wavelength = 10.0 ** coadd["loglam"]
    good = coadd["and_mask"] == 0
    return Spectrum(spectrum_id(path), str(path), wavelength, coadd["flux"], coadd["ivar"], good, z)


def _coadd_columns(path: Path, hdul) -> dict[str, np.ndarray]:
    if "COADD" in hdul:
        table = hdul["COADD"]
    elif len(hdul) > 1:
        table = hdul[1]  # older spec files leave the first extension unnamed
    else:
        raise DDMError(f"{path}: no COADD table (is this an SDSS spec-*.fits file?)")
    columns = getattr(table, "columns", None)  # an image HDU has none
    names = [n.lower() for n in columns.names] if columns is not None else []
    missing = [c for c in COADD_COLUMNS if c not in names]
    if missing:
        raise DDMError(f"{path}: COADD table lacks column(s) {', '.join(missing)}")
    return {c: np.asarray(table.data[c], dtype=np.float64 if c != "and_mask" else np.int64)
            for c in COADD_COLUMNS}


def _specobj_z(hdul) -> float | None:
    if "SPECOBJ" not in hdul or "Z" not in [n.upper() for n in hdul["SPECOBJ"].columns.names]:
        return None
    return float(np.asarray(hdul["SPECOBJ"].data["Z"]).ravel()[0])


def read_array_file(path: str | os.PathLike) -> list[Spectrum]:
    """Plain arrays: .npz (keys wavelength, flux, ivar; optional mask, z, ids), .npy or .csv.

    .npz `flux`, `ivar`, `mask` may be (N,) or (M, N) for M spectra; `wavelength` (N,) or (M, N).
    .npy: one (N, 3) or (3, N) array of columns wavelength, flux, ivar.
    .csv: columns wavelength, flux, ivar[, mask] with that header, or in that order without one.
    ivar is required: the S/N gate needs errors. A nonzero mask marks a bad pixel.
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
    except (OSError, ValueError, KeyError, IndexError, EOFError, zipfile.BadZipFile) as err:
        raise DDMError(f"{path}: unreadable {suffix} file ({err})") from None


def _read_npy(path: Path) -> dict[str, np.ndarray]:
    array = np.load(path, allow_pickle=False)
    if array.ndim == 2 and array.shape[0] == 3 and array.shape[1] != 3:
        array = array.T
    if array.ndim != 2 or array.shape[1] != 3:
        raise DDMError(f"{path}: expected an (N, 3) array of wavelength, flux, ivar; got shape {array.shape}")
    return dict(zip(("wavelength", "flux", "ivar"), array.T.astype(np.float64)))


def _read_csv(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="") as handle:
        rows = [r for r in csv.reader(handle) if r and not r[0].lstrip().startswith("#")]
    if not rows:
        raise DDMError(f"{path}: empty CSV file")
    try:
        float(rows[0][0])
        header = ["wavelength", "flux", "ivar", "mask"][: len(rows[0])]  # no header: this order
    except ValueError:
        header, rows = [h.strip().lower() for h in rows[0]], rows[1:]
    values = np.array(rows, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != len(header):
        raise DDMError(f"{path}: the header names {len(header)} columns, the rows have {values.shape[-1]}")
    return {name: values[:, i] for i, name in enumerate(header)}


def _read_npz(path: Path) -> list[Spectrum]:
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    if "format" in arrays:  # e.g. PREPARED.npz: rest frame already; de-redshifting again would be wrong
        raise DDMError(f"{path}: is a {arrays['format']} file, already on the rest-frame grid: give it to "
                       "`ddm-jax decompose`, not to `prepare`")
    missing = [k for k in ("wavelength", "flux", "ivar") if k not in arrays]
    if missing:
        raise DDMError(f"{path}: lacks {', '.join(missing)} (has {', '.join(sorted(arrays))})")
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
        raise DDMError(f"{where}: no redshift (give one with --z or --z-table)")
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
    """Files as given, and the readable files of each directory (sorted, not recursive)."""
    paths = []
    for item in map(Path, inputs):
        if item.is_dir():
            paths.extend(sorted(p for p in item.iterdir()
                                if p.is_file() and _suffix(p) in FITS_SUFFIXES + ARRAY_SUFFIXES))
        else:
            paths.append(item)
    return paths


def read_any(path: Path) -> list[Spectrum]:
    """Dispatch on the suffix; raises DDMError naming the file."""
    if not path.exists():
        raise DDMError(f"{path}: no such file")
    suffix = _suffix(path)
    if suffix in FITS_SUFFIXES:
        return [read_sdss_fits(path)]
    if suffix in ARRAY_SUFFIXES:
        return read_array_file(path)
    raise DDMError(f"{path}: unknown file type {suffix!r} (want {', '.join(FITS_SUFFIXES + ARRAY_SUFFIXES)})")


def read_many(paths: list[Path], z_override: dict[str, float] | None = None,
              z_all: float | None = None) -> tuple[list[Spectrum], list[str]]:
    """Read and validate every file; a bad one adds its message to `errors` and is skipped.

    z_all, if given, replaces every redshift; z_override maps spectrum id to redshift.
    Returns (spectra, errors).
    """
    spectra, errors = [], []
    for path in paths:
        try:
            for spectrum in read_any(path):
                if z_all is not None:
                    spectrum.z = z_all
                elif z_override and spectrum.id in z_override:
                    spectrum.z = z_override[spectrum.id]
                try:
                    spectra.append(validate(spectrum))
                except DDMError as err:
                    errors.append(str(err))
        except DDMError as err:
            errors.append(str(err))
    return spectra, errors


def read_z_table(path: str | os.PathLike) -> dict[str, float]:
    """CSV with header `id,z`: redshift per spectrum id."""
    path = Path(path)
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or not {"id", "z"} <= {f.strip() for f in reader.fieldnames}:
                raise DDMError(f"{path}: redshift table needs a header with columns id,z")
            return {row["id"].strip(): float(row["z"]) for row in reader}
    except OSError as err:
        raise DDMError(f"{path}: cannot read redshift table ({err.strerror})") from None
    except (ValueError, TypeError) as err:
        raise DDMError(f"{path}: bad redshift table ({err})") from None
