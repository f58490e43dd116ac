"""Plain arrays as spectra (.npz, .npy, .csv), and the redshift table (`read_z_table`, CSV id,z; its
optional ebv column: `read_ebv_table`)."""

from __future__ import annotations

import csv
import os
import zipfile
from pathlib import Path

import numpy as np

from ddm_jax.errors import DDMError, InputError, first_line
from ddm_jax.io.loaders.registry import array_loader
from ddm_jax.io.safe import NpyArray, load_npz
from ddm_jax.schema import SPECTRA_CSV_COLUMNS, SPECTRA_NPZ_KEYS
from ddm_jax.spectra.spectrum import Spectrum, file_suffix, spectrum_id


@array_loader(".npy", ".npz", ".csv")
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
    suffix = file_suffix(path)
    try:
        if suffix == ".npz":
            return _read_npz(path)
        columns = _read_npy(path) if suffix == ".npy" else _read_csv(path)
        return [_from_columns(path, spectrum_id(path), columns, z=None)]
    except DDMError:
        raise
    except (OSError, ValueError, KeyError, IndexError, EOFError, csv.Error, zipfile.BadZipFile) as err:
        raise InputError(f"{path}: unreadable {suffix} file ({first_line(err)})"
                         ) from None


def _read_npy(path: Path) -> dict[str, np.ndarray]:
    array = NpyArray(path, "spectrum", kinds="fiu")
    shape = array.shape
    if len(shape) != 2 or 3 not in shape:
        raise InputError(f"{path}: expected an (N, 3) array of wavelength, flux, ivar; got shape {shape}")
    values = array.read(0, array.rows).astype(np.float64)
    if shape[1] != 3:  # (3, N)
        values = values.T
    return dict(zip(("wavelength", "flux", "ivar"), values.T))




MAX_CSV_ROWS = 1_000_000  # pixels of one spectrum; survey spectra have 4,000-8,000
MAX_CSV_LINE = 4096  # characters: four numbers need far fewer


def _csv_lines(path: Path, handle):
    """The file's lines, refusing one longer than MAX_CSV_LINE before it is held whole."""
    for number, line in enumerate(iter(lambda: handle.readline(MAX_CSV_LINE + 1), ""), start=1):
        if len(line) > MAX_CSV_LINE:
            raise InputError(f"{path}: line {number} is longer than {MAX_CSV_LINE} characters")
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
                    header = list(SPECTRA_CSV_COLUMNS[: len(fields)])  # no header: this order
                except ValueError:
                    header = [h.strip().lower() for h in fields]
                    if len(header) > len(SPECTRA_CSV_COLUMNS) or len(set(header)) != len(header):
                        raise InputError(f"{path}: header names {len(header)} columns ({', '.join(header[:6])}); "
                                         f"expected at most {', '.join(SPECTRA_CSV_COLUMNS)}, each once") from None
                    continue
            if len(fields) != len(header):
                raise InputError(f"{path}: the header names {len(header)} columns, row {rows + 1} has {len(fields)}")
            rows += 1
            if rows > MAX_CSV_ROWS:
                raise InputError(f"{path}: more than {MAX_CSV_ROWS} rows; one spectrum per CSV file is expected")
            block.append([float(v) for v in fields])
            if len(block) == 65536:  # lists of floats cost ~10x an array: convert as it streams
                columns.append(np.array(block, np.float64))
                block = []
    if header is None or rows == 0:
        raise InputError(f"{path}: empty CSV file")
    values = np.concatenate(columns + [np.array(block, np.float64).reshape(-1, len(header))])
    return {name: values[:, i] for i, name in enumerate(header)}




def _check_npz(path: Path, declared: dict) -> None:
    """The shapes an .npz of spectra declares, before its data are read."""
    if "format" in declared:  # e.g. PREPARED.npz: rest frame already; de-redshifting again would be wrong
        raise InputError(f"{path}: is a prepared file (it has a 'format' entry), already on the rest-frame grid: "
                         "give it to `ddm-jax decompose`, not to `prepare`")
    missing = [k for k in ("wavelength", "flux", "ivar") if k not in declared]
    if missing:
        raise InputError(f"{path}: lacks {', '.join(missing)} (has {', '.join(sorted(declared))})")
    flux = declared["flux"].shape
    if len(flux) not in (1, 2):
        raise InputError(f"{path}: flux has shape {flux}; expected (N,) or (M, N)")
    count, n = (1, flux[0]) if len(flux) == 1 else flux
    allowed = {"wavelength": ((n,), (count, n)), "ivar": (flux,), "mask": (flux,), "z": ((), (count,)),
               "ids": ((count,),)}
    for key, shapes in allowed.items():
        if key in declared and declared[key].shape not in shapes:
            raise InputError(f"{path}: {key} has shape {declared[key].shape}; with flux {flux} expected "
                             f"{' or '.join(map(str, shapes))}")
    for key in ("wavelength", "flux", "ivar", "mask", "z"):  # a mask may be boolean, nothing else
        if key in declared and declared[key].dtype.kind not in ("fiub" if key == "mask" else "fiu"):
            raise InputError(f"{path}: {key} is not numeric (dtype {declared[key].dtype})")


def _read_npz(path: Path) -> list[Spectrum]:
    arrays = load_npz(path, ".npz file", check=lambda declared: _check_npz(path, declared), keys=SPECTRA_NPZ_KEYS)
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
        raise InputError(f"{path}: lacks {', '.join(missing)} (has {', '.join(sorted(columns))})")
    wavelength = np.asarray(columns["wavelength"], dtype=np.float64)
    flux = np.asarray(columns["flux"], dtype=np.float64)
    ivar = np.asarray(columns["ivar"], dtype=np.float64)
    if not wavelength.shape == flux.shape == ivar.shape:
        raise InputError(f"{path}: wavelength, flux and ivar differ in length")
    mask = np.asarray(columns.get("mask", np.zeros_like(flux)))
    return Spectrum(spec_id, str(path), wavelength, flux, ivar, mask == 0, z)


def read_z_table(path: str | os.PathLike) -> dict[str, float]:
    """CSV with header `id,z` (other columns allowed): redshift per spectrum id."""
    return _read_id_table(path, "z")


def read_ebv_table(path: str | os.PathLike) -> dict[str, float]:
    """The optional `ebv` column of a redshift table: Galactic E(B-V) per spectrum id ({} if the
    table has no such column; an empty cell leaves that id out)."""
    return _read_id_table(path, "ebv", required=False)


def _read_id_table(path: str | os.PathLike, column: str, required: bool = True) -> dict[str, float]:
    """One numeric column of a CSV table with an `id` column, by id."""
    path = Path(path)
    try:
        with open(path, newline="") as handle:
            rows = csv.reader(_csv_lines(path, handle))
            header = [name.strip() for name in next(rows, [])]
            if "id" not in header or "z" not in header:
                raise InputError(f"{path}: redshift table needs a header with columns id,z")
            if column not in header:
                return {}
            at_id, at_value = header.index("id"), header.index(column)
            table = {}
            for number, fields in enumerate(rows, start=2):
                if not fields:
                    continue
                if len(fields) != len(header):
                    raise InputError(f"{path}: line {number} has {len(fields)} fields, the header {len(header)}")
                if fields[at_value].strip() or required:
                    table[fields[at_id].strip()] = float(fields[at_value])
            return table
    except OSError as err:
        raise InputError(f"{path}: cannot read redshift table ({err.strerror})") from None
    except (ValueError, csv.Error) as err:
        raise InputError(f"{path}: bad redshift table ({err})") from None
