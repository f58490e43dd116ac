"""Outputs as astronomers' files: FITS catalogues written a block of rows at a time, read back
into the arrays of an `.npz`, and astropy Tables (docs/fits.md).

Every output of `decompose` (an `.npz`, a folder, a `.fits` catalogue) and of `prepare` opens
with `open_output` as one reader: `rows`, `keys`, `shape(key)`, `read(key, start, stop)`,
`wavelength`, `provenance`. `write_fits(path, reader)` turns any of them into a FITS file:

  HDU 0 PRIMARY   provenance cards, the BPT class coding, the layout (how to read the arrays back)
  HDU 1 CATALOG   a binary table, one row per spectrum: survey ids, numbers and flags, units
  images          one per spectrum-shaped array (SF_SPECTRUM, AGN_SPECTRUM, RESIDUAL, ...):
                  (rows, 2208) with a linear rest-frame wavelength WCS on axis 1
  maps            per MaNGA cube: <plateifu>_SF_FRACTION and <plateifu>_BPT on the cube's
                  celestial WCS
  SOURCES         the input files and their celestial WCS headers (where the input had any)

so that `astropy.table.Table.read(OUT.fits)` is the catalogue and `read_arrays(OUT.fits)` the
`.npz`'s arrays, bit for bit.
"""

from __future__ import annotations

import datetime
import io
import json
import math
import re
import warnings
from pathlib import Path

import numpy as np

from ddm_jax import __version__
from ddm_jax.bpt import CLASS_NAMES, UNDEFINED
from ddm_jax.constants import LINE_QUANTITIES, WAVELENGTH_STEP, wavelength_grid
from ddm_jax.errors import DDMError, first_line
from ddm_jax.io import Declared, NpyArray, load_npz, refuse_beyond_memory, write_atomic
from ddm_jax.prepare import readers

FORMAT = "ddm-jax-catalog/1"
CATALOG, SOURCES = "CATALOG", "SOURCES"
FITS_NAMES = (".fits", ".fit", ".fts")  # what a catalogue's name ends in (uncompressed: it is memory-mapped)
PARTS = ("composite", "sf", "agn")  # axis 1 of line_ratios and bpt_class
PART_LABELS = {"composite": "input spectrum", "sf": "SF part", "agn": "AGN part"}
BLOCK_ROWS = 8192  # catalogue rows read and written at a time
BLOCK_BYTES = 16 << 20  # and at most this much of an image: memory stays flat however many rows
# Keys that are not per spectrum: the wavelength goes into each image's WCS, the rest into the layout.
SHARED_KEYS = ("wavelength", "line_names", "format", "provenance")

# What the columns mean (TTYPE comments) and their units (TUNIT) where there is one. Ratios are
# log10 of flux ratios; spectra are in the DDM's normalised units (docs/model.md#preprocessing).
DESCRIPTIONS = {
    "ids": "spectrum id (file name, or name#row)", "z": "redshift used to reach the rest frame",
    "survey_id": "survey key as prepare read it", "survey": "sdss, desi, manga or ''",
    "plate": "SDSS plate (or MaNGA plate)", "mjd": "SDSS MJD", "fiberid": "SDSS fiber",
    "targetid": "DESI TARGETID", "plateifu": "MaNGA plate-IFU", "spaxel_x": "MaNGA cube spaxel x (0-based)",
    "spaxel_y": "MaNGA cube spaxel y (0-based)",
    "p_sf": "DDM SF probability", "p_agn": "DDM AGN probability", "p_total": "DDM p_sf + p_agn",
    "sf_fraction": "SF share of the spectrum, clip(p_sf, 0, 1)",
    "reconstruction_chi2": "reduced chi2 of the reconstruction (needs ivar)",
    "ood_score": "distance from the training data (docs/trust.md)", "trusted": "in domain and well fitted",
    "meets_snr": "S/N > 8 in the BPT lines", "line_fit_ok": "the line fit describes the data",
    "broad_balmer": "broad Halpha found (type-1 AGN)", "passes_gate": "meets_snr, line_fit_ok, no broad lines",
    "position": "cube spaxel (x, y) or RSS row (k, -1); (-1, -1) elsewhere", "source": "input file",
    "bpt_nii": "[NII] BPT class of the measured ratios", "bpt_sii": "[SII] BPT class of the measured ratios",
}
UNITS = {"line_velocity": "km/s", "line_sigma": "km/s", "stellar_velocity": "km/s", "stellar_sigma": "km/s"}
# Spectrum-shaped arrays: their image HDU's BUNIT comment.
SPECTRUM_UNITS = {"flux": "rest-frame flux density as the survey gives it", "ivar": "inverse variance of flux",
                  "mask": "resample bits: 0 measured", "continuum": "fitted stellar continuum, flux units",
                  "line_model": "fitted narrow lines, flux units",
                  "resample_mask": "resample bits: 0 measured"}
SPLIT_BY_LINE = ("line_flux", "line_flux_err", "line_snr")  # PREPARED (B, n_lines) -> one per line
# Provenance items and their header keywords (8 characters, FITS standard).
PROVENANCE_CARDS = {
    "ddm_jax_version": ("DDMVERS", "ddm-jax version that wrote the results"),
    "created": ("DATE", "when the results were made (UTC)"), "command": ("DDMCMD", "ddm-jax command"),
    "input": ("INPUT", "spectra decomposed or prepared"), "mass": ("MASSFILE", "masses used to normalise"),
    "ivar": ("IVARFILE", "inverse variances used"), "normalize": ("NORMALIZ", "spectra normalised by mass"),
    "checkpoint": ("CHECKPT", "checkpoint folder"), "checkpoint_sources": ("CKPTSRC", "what the checkpoint holds"),
    "params_sha256": ("CKPTSHA", "SHA-256 of the params and trust calibration"),
    "bpt_scheme": ("BPTSCHEM", "[NII] BPT scheme (docs/model.md)"), "precision": ("PRECISN", "compute precision"),
    "mc_samples": ("MCSAMPLE", "Monte-Carlo dropout passes (0: off)"), "mc_seed": ("MCSEED", "dropout seed"),
    "coverage": ("COVERAGE", "prepare coverage policy"), "snr_policy": ("SNRPOL", "prepare gate policy"),
}


def output_arrays(decomposer, result: dict, carried: dict | None = None, **provenance) -> dict[str, np.ndarray]:
    """What `decompose` writes: the grid, the Decomposer's `result`, the input's `carried` keys and the
    provenance (`provenance_now` of the decomposer's and the given items), as a JSON string."""
    made = provenance_now(**provenance, **decomposer.provenance())
    return {"wavelength": decomposer.wavelength, **result, **(carried or {}), "provenance": np.array(json.dumps(made))}


def provenance_now(**items) -> dict:
    """A provenance dict: this version, the time now, and `items` (PROVENANCE_CARDS keys)."""
    unknown = set(items) - set(PROVENANCE_CARDS)
    if unknown:
        raise ValueError(f"unknown provenance items {sorted(unknown)}")
    return {"ddm_jax_version": __version__,
            "created": datetime.datetime.now(datetime.UTC).replace(tzinfo=None).isoformat(timespec="seconds"),
            **{k: v for k, v in items.items() if v is not None}}


# ----------------------------------------------------------------------------- readers

class OutputReader:
    """Rows of one output's arrays, a block at a time (the base of the three kinds of file)."""

    path: Path
    rows: int
    keys: tuple[str, ...]  # per-spectrum arrays, rows first
    shared: dict  # line_names, format (PREPARED)
    provenance: dict
    wavelength: np.ndarray

    def shape(self, key: str) -> tuple[int, ...]:
        raise NotImplementedError

    def dtype(self, key: str) -> np.dtype:
        raise NotImplementedError

    def read(self, key: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        """Release the file (a FITS catalogue's memory map)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def declared(self) -> dict[str, Declared]:
        """Shape and dtype of every array `arrays` would return, known without reading them."""
        shared = {"wavelength": self.wavelength, **{k: np.asarray(v) for k, v in self.shared.items()}}
        return {**{k: Declared(self.shape(k), self.dtype(k), False) for k in self.keys},
                **{k: Declared(v.shape, v.dtype, False) for k, v in shared.items()}}

    def arrays(self) -> dict[str, np.ndarray]:
        """Everything, in memory: the `.npz`'s dict (refused, before reading, if it cannot fit)."""
        refuse_beyond_memory(self.path, sum(math.prod(self.shape(k)) * self.dtype(k).itemsize for k in self.keys))
        out = {"wavelength": self.wavelength, **{k: self.read(k) for k in self.keys}}
        out.update({k: np.asarray(v) for k, v in self.shared.items()})
        if self.provenance:
            out["provenance"] = np.array(json.dumps(self.provenance))
        return out


class ArraysOutput(OutputReader):
    """An output held in memory (an `.npz`, or what `Decomposer`/`prepare` just returned)."""

    def __init__(self, arrays: dict[str, np.ndarray], path="<arrays>"):
        self.path = Path(path)
        if "sf_fraction" not in arrays and "flux" not in arrays:
            raise DDMError(f"{path}: not a decompose or prepare output (no sf_fraction, no flux)")
        per_row = {k: np.asarray(v) for k, v in arrays.items() if k not in SHARED_KEYS}
        if not per_row:
            raise DDMError(f"{path}: holds no per-spectrum arrays")
        counts = {k: v.shape[0] if v.ndim else None for k, v in per_row.items()}
        self.rows = counts.get("sf_fraction", counts.get("flux"))
        wrong = [f"{k} {v.shape}" for k, v in per_row.items() if counts[k] != self.rows]
        if wrong:
            raise DDMError(f"{path}: {', '.join(wrong)}: expected {self.rows} rows like the others")
        self._arrays, self.keys = per_row, tuple(per_row)
        self.wavelength = np.asarray(arrays.get("wavelength", wavelength_grid()), np.float32)
        self.shared = {k: np.asarray(arrays[k]) for k in ("line_names", "format") if k in arrays}
        self.provenance = _provenance_of(arrays.get("provenance"), path)

    def shape(self, key):
        return self._arrays[key].shape

    def dtype(self, key):
        return self._arrays[key].dtype

    def read(self, key, start=0, stop=None):
        return self._arrays[key][start:stop]


def _provenance_of(value, path) -> dict:
    if value is None:
        return {}
    try:
        provenance = json.loads(str(np.asarray(value)))
    except json.JSONDecodeError as err:
        raise DDMError(f"{path}: its provenance is not JSON ({err})") from None
    if not isinstance(provenance, dict):
        raise DDMError(f"{path}: its provenance is not a JSON object")
    return provenance


class FolderOutput(OutputReader):
    """A `decompose` folder (one `.npy` per key and `manifest.json`), read with `pread`."""

    def __init__(self, path):
        self.path = Path(path)
        manifest_file = self.path / "manifest.json"
        if not manifest_file.is_file():
            raise DDMError(f"{path}: not a finished decompose output folder (no manifest.json)")
        try:
            manifest = json.loads(manifest_file.read_text())
            keys = manifest["keys"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DDMError(f"{manifest_file}: unreadable manifest ({err})") from None
        self._arrays = {key: NpyArray(self.path / f"{key}.npy", key) for key in keys}
        self.keys = tuple(keys)
        self.rows = self._arrays[self.keys[0]].rows
        wrong = [k for k, a in self._arrays.items() if a.rows != self.rows]
        if wrong:
            raise DDMError(f"{path}: {', '.join(wrong)} do not have {self.rows} rows like {self.keys[0]}")
        wavelength = NpyArray(self.path / "wavelength.npy", "wavelength")
        wavelength.as_one_row()
        self.wavelength = wavelength.read(0, 1).reshape(-1)
        self.shared = {}
        self.provenance = manifest.get("provenance") or _folder_provenance(manifest)

    def shape(self, key):
        return (self.rows,) + self._arrays[key].row_shape

    def dtype(self, key):
        return self._arrays[key].dtype

    def read(self, key, start=0, stop=None):
        return self._arrays[key].read(start, self.rows if stop is None else min(stop, self.rows))


class ConcatenatedOutput(OutputReader):
    """Several outputs of the same keys one after another (a multi-host run's shares, in row order)."""

    def __init__(self, parts: list[OutputReader]):
        first = parts[0]
        if any(set(p.keys) != set(first.keys) or any(p.shape(k)[1:] != first.shape(k)[1:] for k in first.keys)
               for p in parts):
            raise DDMError(f"{', '.join(str(p.path) for p in parts)}: the parts hold different arrays")
        self.parts, self.path, self.keys = parts, first.path, first.keys
        self.starts = np.cumsum([0] + [p.rows for p in parts])
        self.rows = int(self.starts[-1])
        self.wavelength, self.shared, self.provenance = first.wavelength, first.shared, first.provenance

    def shape(self, key):
        return (self.rows,) + self.parts[0].shape(key)[1:]

    def dtype(self, key):
        return self.parts[0].dtype(key)

    def read(self, key, start=0, stop=None):
        stop = self.rows if stop is None else min(stop, self.rows)
        bounds = zip(self.parts, self.starts[:-1], self.starts[1:])
        pieces = [part.read(key, max(start, lo) - lo, min(stop, hi) - lo)
                  for part, lo, hi in bounds if max(start, lo) < min(stop, hi)]
        return np.concatenate(pieces) if pieces else self.parts[0].read(key, 0, 0)


def _folder_provenance(manifest: dict) -> dict:
    """What a folder made before provenance was recorded tells of itself."""
    described = manifest.get("decomposer", {})
    return {k: v for k, v in {
        "ddm_jax_version": manifest.get("ddm_jax_version"), "created": manifest.get("completed"),
        "params_sha256": described.get("params_sha256"), "bpt_scheme": described.get("bpt_scheme"),
        "precision": described.get("precision"), "normalize": manifest.get("normalize")}.items() if v is not None}


class FitsOutput(OutputReader):
    """A catalogue written by `write_fits`, memory-mapped: rows are read as they are asked for."""

    def __init__(self, path):
        from astropy.io import fits

        self.path = Path(path)
        readers.check_fits_structure(self.path)  # what the headers declare lies within the file
        with warnings.catch_warnings(record=True) as caught:  # astropy only warns of a damaged file
            warnings.simplefilter("always")
            try:
                self._hdul = fits.open(self.path, memmap=True, mode="readonly")
                self._hdul.readall()
                primary = self._hdul[0].header
            except (OSError, ValueError, IndexError, fits.VerifyError) as err:
                if hasattr(self, "_hdul"):
                    self._hdul.close()
                raise DDMError(f"{path}: unreadable FITS file ({first_line(err)})") from None
        try:  # a refused file is closed
            self._read_primary(primary, [w for w in caught if issubclass(w.category, fits.verify.VerifyWarning)])
        except DDMError:
            self._hdul.close()
            raise

    def _read_primary(self, primary, damaged: list) -> None:
        from astropy.io import fits

        path = self.path
        if damaged:
            raise DDMError(f"{path}: damaged FITS file ({first_line(damaged[0].message)})")
        if primary.get("DDMFORM") != FORMAT:
            raise DDMError(f"{path}: not a ddm-jax catalogue (DDMFORM is {primary.get('DDMFORM')!r}, "
                           f"expected {FORMAT!r}); `ddm-jax export` writes one")
        try:
            layout = json.loads(primary["DDMLAYOU"])
            self._layout, self.shared, self.rows = layout["arrays"], layout["shared"], layout["rows"]
            self._check_layout()
        except (KeyError, TypeError, ValueError, AttributeError, fits.VerifyError) as err:
            raise DDMError(f"{path}: damaged layout card DDMLAYOU ({type(err).__name__}: {err})") from None
        self.keys = tuple(self._layout)
        self.provenance = {name: primary[card] for name, (card, _) in PROVENANCE_CARDS.items() if card in primary}
        self.wavelength = wavelength_grid()

    def _check_layout(self) -> None:
        """The layout against the file: every HDU and column it names exists with the declared
        shapes, so that reads cannot fail later (a damaged file is refused at open)."""
        if not isinstance(self.rows, int) or self.rows < 0 or not isinstance(self._layout, dict):
            raise ValueError("rows must be a count and arrays an object")
        if not (isinstance(self.shared, dict) and set(self.shared) <= {"line_names", "format"}
                and all(isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v))
                        for v in self.shared.values())):
            raise ValueError("shared holds line_names and format, as text")
        n_bins = len(wavelength_grid())
        for key, entry in self._layout.items():
            shape, dtype, columns = tuple(entry["shape"]), np.dtype(entry["dtype"]), entry["columns"]
            if not all(isinstance(n, int) and n >= 0 for n in shape) or dtype.kind not in "fiubU":
                raise ValueError(f"{key}: shape {shape}, dtype {dtype}")
            hdu = self._hdu(entry["hdu"], key)
            if key == "wcs":
                if hdu.header.get("NAXIS") != 1 or hdu.header.get("BITPIX") != 8:
                    raise ValueError(f"{entry['hdu']} is not a byte string")
            elif columns is None:
                header = hdu.header
                if (header.get("NAXIS"), header.get("NAXIS1"), header.get("NAXIS2"), shape) != (
                        2, n_bins, self.rows, (n_bins,)):
                    raise ValueError(f"{entry['hdu']}: not ({self.rows}, {n_bins}) spectra")
                wave = _wcs_wavelength(header, n_bins)
                if not np.allclose(wave, wavelength_grid()):
                    raise ValueError(f"{entry['hdu']}'s wavelength WCS is not the rest-frame grid")
            else:
                table_columns = getattr(hdu, "columns", None)
                if table_columns is None or hdu.header.get("NAXIS2") != self.rows:
                    raise ValueError(f"{entry['hdu']}: not a table of {self.rows} rows")
                missing = set(columns) - set(table_columns.names)
                if missing or not columns:
                    raise ValueError(f"{key}: columns {sorted(missing) or columns} are not in {entry['hdu']}")
                values = sum(1 if dtype.kind == "U" else table_columns[c].format.repeat for c in columns)
                if values != math.prod(shape):  # a text column holds one string per row
                    raise ValueError(f"{key}: {values} values per row in its columns, shape {shape}")

    def _hdu(self, name: str, key: str):
        try:
            return self._hdul[name]
        except KeyError:
            raise DDMError(f"{self.path}: HDU {name} (for {key}) is missing") from None

    def shape(self, key):
        return (self.rows,) + tuple(self._layout[key]["shape"])

    def dtype(self, key):
        return np.dtype(self._layout[key]["dtype"])

    def read(self, key, start=0, stop=None):
        from astropy.io.fits import VerifyError

        try:
            return self._read(key, start, stop)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, OSError, VerifyError) as err:
            raise DDMError(f"{self.path}: cannot read {key} ({type(err).__name__}: {str(err)[:200]})") from None

    def _read(self, key, start, stop):
        entry = self._layout[key]
        stop = self.rows if stop is None else min(stop, self.rows)
        hdu = self._hdu(entry["hdu"], key)
        if key == "wcs":  # one header per source file, looked up by each row's source
            by_source = json.loads(np.asarray(hdu.data).tobytes().decode())
            return np.array([str(by_source.get(s, "")) for s in self._read("source", start, stop)], dtype=str)
        if entry["columns"] is None:
            values = np.asarray(hdu.section[start:stop])
        else:
            data = hdu.data[start:stop]
            values = np.stack([np.asarray(data[c]) for c in entry["columns"]], axis=-1) \
                if len(entry["columns"]) > 1 or entry["split"] else np.asarray(data[entry["columns"][0]])
        values = values.astype(entry["dtype"])
        return values.reshape((stop - start,) + tuple(entry["shape"]))

    def close(self) -> None:
        self._hdul.close()


def open_output(path) -> OutputReader:
    """The reader for a decompose/prepare output: `.npz`, folder or `.fits`; DDMError if none fits."""
    path = Path(path)
    if path.is_dir():
        return FolderOutput(path)
    if not path.exists():
        raise DDMError(f"{path}: no such file or folder")
    name = path.name.lower()
    if name.endswith(".npz"):
        return ArraysOutput(load_npz(path, "decompose/prepare output"), path)
    if is_fits_name(path):
        return FitsOutput(path)
    raise DDMError(f"{path}: not an output (expected an .npz, a .fits catalogue or a decompose folder)")


def read_arrays(path, required=(), check=None) -> dict[str, np.ndarray]:
    """An output's arrays as the `.npz` holds them (a FITS catalogue's layout undone). As with
    `io.load_npz`, the `required` keys and `check(declared)` are checked before any data is read."""
    with open_output(path) as reader:
        declared = reader.declared()
        missing = [key for key in required if key not in declared]
        if missing:
            raise DDMError(f"{path}: lacks {', '.join(missing)}")
        if check is not None:
            check(declared)
        return reader.arrays()


# ----------------------------------------------------------------------------- the layout

def fits_format(dtype: np.dtype, key: str, width: int = 0) -> tuple[str, np.dtype]:
    """A TFORM letter and the big-endian dtype its bytes have, for a numpy dtype."""
    if dtype.kind == "U":
        return f"{max(width, 1)}A", np.dtype(f"S{max(width, 1)}")
    formats = {"f4": ("E", ">f4"), "f8": ("D", ">f8"), "i2": ("I", ">i2"), "i4": ("J", ">i4"), "i8": ("K", ">i8"),
               "u1": ("B", "u1"), "i1": ("I", ">i2"), "b1": ("L", "S1")}  # int8 widens: FITS bytes are unsigned
    code = dtype.str[1:]
    if code not in formats:
        raise DDMError(f"{key}: cannot store dtype {dtype} in a FITS table")
    letter, stored = formats[code]
    return letter, np.dtype(stored)


def _column_names(key: str, row_shape: tuple, line_names) -> list[str] | None:
    """The named columns a (B, ...) array splits into, or None to keep it as one (vector) column."""
    if key == "line_ratios" and row_shape == (len(PARTS), len(LINE_QUANTITIES)):
        return [f"{part}_{q}" for part in PARTS for q in LINE_QUANTITIES]
    if key == "bpt_class" and row_shape == (len(PARTS),):
        return [f"{part}_bpt_class" for part in PARTS]
    if key in SPLIT_BY_LINE and line_names is not None and row_shape == (len(line_names),):
        return [f"{key}_{line}" for line in line_names]
    return None


def plan_layout(reader: OutputReader) -> dict:
    """Where each array goes: {key: {hdu, columns (None: an image), split, shape, dtype}}."""
    n_bins = reader.wavelength.shape[0]
    line_names = reader.shared.get("line_names")
    layout = {}
    for key in reader.keys:
        row_shape, dtype = reader.shape(key)[1:], reader.dtype(key)
        entry = {"shape": list(row_shape), "dtype": dtype.str if dtype.kind != "U" else "U"}
        if key == "wcs":
            entry.update(hdu=SOURCES, columns=[], split=False)
        elif row_shape == (n_bins,) and dtype.kind in "fu":
            entry.update(hdu=key.upper(), columns=None, split=False)
        else:
            names = _column_names(key, row_shape, line_names)
            entry.update(hdu=CATALOG, columns=names or [key], split=names is not None)
        layout[key] = entry
    return layout


def _wcs_wavelength(header, n: int) -> np.ndarray:
    return (header["CRVAL1"] + header["CDELT1"] * (np.arange(n) + 1 - header["CRPIX1"])).astype(np.float32)


# ----------------------------------------------------------------------------- survey ids

def survey_ids(survey_id, position) -> dict[str, np.ndarray]:
    """Join keys from each spectrum's `survey_id` (prepare's readers) and position: survey,
    plate-mjd-fiberid (SDSS), targetid (DESI), plateifu + spaxel (MaNGA). -1 or '' where they do not apply."""
    n = len(survey_id)
    out = {"survey": np.full(n, "", dtype="U5"), "plate": np.full(n, -1, np.int32), "mjd": np.full(n, -1, np.int32),
           "fiberid": np.full(n, -1, np.int32), "targetid": np.full(n, -1, np.int64),
           "plateifu": np.full(n, "", dtype="U12"), "spaxel_x": np.full(n, -1, np.int32),
           "spaxel_y": np.full(n, -1, np.int32)}
    for i, key in enumerate(map(str, survey_id)):
        survey, _, value = key.partition(":")
        if survey == "sdss" and re.fullmatch(r"\d+-\d+-\d+", value):
            out["plate"][i], out["mjd"][i], out["fiberid"][i] = map(int, value.split("-"))
        elif survey == "desi" and value.isdigit():
            out["targetid"][i] = int(value)
        elif survey == "manga" and re.fullmatch(r"\d+-\d+", value):
            out["plateifu"][i], out["plate"][i] = value, int(value.split("-")[0])
            if position is not None and position[i][1] >= 0:  # a cube spaxel (an RSS row has y = -1)
                out["spaxel_x"][i], out["spaxel_y"][i] = position[i]
        else:
            continue
        out["survey"][i] = survey
    return out


# ----------------------------------------------------------------------------- writing

class _Column:
    def __init__(self, name, key, index, values_dtype, width=0, unit=None, description=None, row_shape=()):
        self.name, self.key, self.index = name, key, index
        self.letter, self.stored = fits_format(values_dtype, name, width)
        self.bool, self.string = values_dtype.kind == "b", values_dtype.kind == "U"
        self.repeat = math.prod(row_shape)
        self.row_shape = row_shape
        self.unit, self.description = unit, description

    def fits_column(self):
        from astropy.io import fits

        repeat = "" if self.repeat == 1 or self.string else str(self.repeat)
        dim = None if len(self.row_shape) < 2 else "(" + ",".join(map(str, self.row_shape[::-1])) + ")"
        return fits.Column(name=self.name, format=repeat + self.letter, unit=self.unit, dim=dim)

    def record_field(self):
        shape = () if self.repeat == 1 or self.string else (self.repeat,)
        return (self.name, self.stored, shape)

    def encode(self, values: np.ndarray) -> np.ndarray:
        if self.index is not None:
            values = values[(slice(None),) + self.index]
        if self.bool:
            return np.where(values, b"T", b"F")
        if self.string:
            try:
                return np.char.encode(values.astype(str), "ascii")
            except UnicodeEncodeError as err:
                raise DDMError(f"{self.key}: FITS tables hold ASCII text only; {err.object!r} is not") from None
        return values.reshape(values.shape[0], -1) if self.repeat > 1 else values




# The line quantities (constants.LINE_QUANTITIES), for people.
QUANTITY_DESCRIPTIONS = {
    "log_nii_ha": "log [NII]6584/Halpha", "log_oiii_hb": "log [OIII]5007/Hbeta", "log_oi_ha": "log [OI]6300/Halpha",
    "log_oii_hb": "log [OII]3726,3729/Hbeta", "log_ha_hb": "log Halpha/Hbeta", "log_sii_ratio": "log [SII]6717/6731",
    "log_sii_ha": "log [SII]6717,6731/Halpha", "log_ha_ew": "log Halpha EW (Angstrom)", "bpt_nii": "[NII] BPT class",
    "bpt_class": "[NII] BPT class",
}


def _describe(name: str) -> str | None:
    if name in DESCRIPTIONS:
        return DESCRIPTIONS[name]
    for part, label in PART_LABELS.items():
        if name.startswith(part + "_"):
            quantity = name[len(part) + 1:]
            return f"{QUANTITY_DESCRIPTIONS.get(quantity, quantity)} of the {label} (DDM)"
    if name.startswith("measured_"):
        base = name.removeprefix("measured_")
        return f"{QUANTITY_DESCRIPTIONS.get(base, base)} measured by prepare's fit"
    return None


def _table_columns(reader: OutputReader, layout: dict, string_widths: dict) -> list[_Column]:
    columns = []
    for key, entry in layout.items():
        if entry["hdu"] != CATALOG:
            continue
        dtype, row_shape = reader.dtype(key), tuple(entry["shape"])
        if entry["split"]:
            parts = np.ndindex(*row_shape)
            for name, index in zip(entry["columns"], parts):
                columns.append(_Column(name, key, index, dtype, description=_describe(name)))
        else:
            columns.append(_Column(key, key, None, dtype, string_widths.get(key, 0), UNITS.get(key), _describe(key),
                                   row_shape))
    return columns


def _string_width(reader: OutputReader, key: str) -> int:
    width = 0
    for lo in range(0, reader.rows, BLOCK_ROWS):
        values = reader.read(key, lo, lo + BLOCK_ROWS)
        width = max(width, int(np.char.str_len(values.astype(str)).max(initial=0)))
    return width


def _id_columns(reader: OutputReader) -> tuple[list[_Column], dict[str, np.ndarray]]:
    """Survey-id columns (derived from ids; not part of the `.npz`)."""
    if "survey_id" not in reader.keys:
        return [], {}
    position = reader.read("position") if "position" in reader.keys else None
    ids = survey_ids(reader.read("survey_id"), position)
    widths = {"survey": 5, "plateifu": 12}
    columns = [_Column(name, name, None, values.dtype, widths.get(name, 0), None, DESCRIPTIONS[name])
               for name, values in ids.items()]
    return columns, ids


def _padding(nbytes: int) -> bytes:
    return b"\0" * (-nbytes % readers.FITS_BLOCK)


def _header_bytes(header) -> bytes:
    return header.tostring().encode("ascii")


def _set_card(header, keyword: str, value, comment: str = "") -> None:
    """A card with as much of `comment` as fits on it (astropy would warn and cut it)."""
    from astropy.io.fits import Card

    bare = max(len(str(Card(keyword, value)).rstrip()), 30)  # a comment starts at column 32 at the earliest
    header[keyword] = (value, comment[:max(80 - bare - 3, 0)] if bare <= 80 else "")


def _primary_header(reader: OutputReader, layout: dict, provenance: dict):
    from astropy.io import fits

    header = fits.PrimaryHDU().header
    header["DDMFORM"] = (FORMAT, "ddm-jax catalogue format (docs/fits.md)")
    for name, value in provenance.items():
        card, comment = PROVENANCE_CARDS.get(name, (None, None))
        if card is not None:
            _set_card(header, card, value if isinstance(value, bool | int | float) else str(value), comment)
    for code, name in CLASS_NAMES.items():
        header[f"BPTCLA{code + 1:02d}"] = (f"{code} = {name}", "BPT class coding (the *_bpt_class columns)")
    header["NROWS"] = (reader.rows, "spectra: rows of CATALOG and of each image")
    shared = {k: (np.asarray(v).tolist()) for k, v in reader.shared.items()}
    header["DDMLAYOU"] = (json.dumps({"rows": reader.rows, "arrays": layout, "shared": shared},
                                     separators=(",", ":")), "how read_arrays rebuilds the arrays")
    header.add_comment("Written by ddm-jax; astropy.table.Table.read(file) is the catalogue (HDU 1).")
    return header


def _image_header(key: str, dtype: np.dtype, rows: int, n_bins: int, wavelength: np.ndarray):
    from astropy.io import fits

    header = fits.ImageHDU(data=np.zeros((1, n_bins), dtype.newbyteorder(">")), name=key.upper()).header
    header["NAXIS2"] = rows
    step = float(wavelength[1] - wavelength[0]) if n_bins > 1 else WAVELENGTH_STEP
    header["WCSAXES"] = (2, "axis 1: rest wavelength; axis 2: row of CATALOG")
    header["CTYPE1"] = ("WAVE", "vacuum wavelength")
    header["CUNIT1"] = ("Angstrom", "")
    header["CRPIX1"], header["CRVAL1"], header["CDELT1"] = 1.0, float(wavelength[0]), step
    header["CTYPE2"], header["CRPIX2"], header["CRVAL2"], header["CDELT2"] = "", 1.0, 1.0, 1.0
    header["SPECSYS"] = ("SOURCE", "rest frame of each galaxy")
    header["BUNIT"] = ("", SPECTRUM_UNITS.get(key.removesuffix("_std"), "DDM normalised flux (docs/model.md)"))
    return header


def _maps(reader: OutputReader, wcs_by_source: dict[str, str]) -> list:
    """(image, header) per MaNGA cube: SF fraction and [NII] BPT class on its celestial WCS.

    Only outputs of a PREPARED input have cubes (a source with a WCS), and those are held in memory,
    so the per-spectrum columns are read whole here."""
    from astropy.io import fits

    cubes = [name for name, wcs in wcs_by_source.items() if wcs]
    if not cubes or not all(k in reader.keys for k in ("position", "sf_fraction", "bpt_class")):
        return []
    source, position = reader.read("source"), reader.read("position")
    sf_fraction, bpt_class = reader.read("sf_fraction"), reader.read("bpt_class")[:, 0]
    names, which = np.unique(source, return_inverse=True)
    maps = []
    for cube in cubes:
        rows = np.flatnonzero((which == np.searchsorted(names, cube)) & (position[:, 1] >= 0))
        if not rows.size:
            continue
        header = fits.Header.fromstring(wcs_by_source[cube])
        x, y = position[rows, 0], position[rows, 1]
        nx, ny = header.get("NAXIS1", int(x.max()) + 1), header.get("NAXIS2", int(y.max()) + 1)
        first = reader.read("ids", rows[0], rows[0] + 1)[0] if "ids" in reader.keys else cube
        name = str(first).partition("#")[0]
        fraction = np.full((ny, nx), np.nan, np.float32)
        fraction[y, x] = sf_fraction[rows]
        classes = np.full((ny, nx), UNDEFINED, np.int16)
        classes[y, x] = bpt_class[rows]
        for suffix, image, comment in (("SF_FRACTION", fraction, "SF fraction; NaN: not decomposed"),
                                       ("BPT", classes, "[NII] BPT class of the spectrum; -1: none")):
            map_header = header.copy()
            for card in ("NAXIS1", "NAXIS2"):
                map_header.remove(card, ignore_missing=True)
            map_header["EXTNAME"] = f"{name}_{suffix}"
            map_header["BUNIT"] = ("", comment)
            map_header["SOURCE"] = (Path(str(cube)).name, "the cube")
            maps.append((image, map_header))
    return maps


def _described_columns_comments(columns: list[_Column]) -> list[str]:
    """The COMMENT cards in which astropy keeps column descriptions (its serialized-columns YAML), so
    that `Table.read` gives each column its description back."""
    from astropy.io import fits
    from astropy.table import Table

    described = Table()
    for column in columns:
        described[column.name] = np.zeros((0,) + ((column.repeat,) if column.repeat > 1 else ()), column.stored)
        described[column.name].description = column.description
    buffer = io.BytesIO()  # Table.write, not table_to_hdu, is what serializes descriptions
    described.write(buffer, format="fits")
    buffer.seek(0)
    with fits.open(buffer) as hdul:
        return list(hdul[1].header.get("COMMENT", []))


def write_fits(path, reader: OutputReader, progress=None) -> Path:
    """Write `reader`'s output as a FITS catalogue (module docstring), `BLOCK_ROWS` rows at a time,
    atomically; returns the path."""
    from astropy.io import fits

    layout = plan_layout(reader)
    widths = {k: _string_width(reader, k) for k in reader.keys
              if reader.dtype(k).kind == "U" and layout[k]["hdu"] == CATALOG}
    id_columns, ids = _id_columns(reader)
    columns = id_columns + _table_columns(reader, layout, widths)
    record = np.dtype([c.record_field() for c in columns])
    table_header = fits.BinTableHDU.from_columns([c.fits_column() for c in columns], nrows=0, name=CATALOG).header
    if table_header["NAXIS1"] != record.itemsize:
        raise AssertionError(f"row layout {record.itemsize} bytes, FITS says {table_header['NAXIS1']}")
    table_header["NAXIS2"] = reader.rows
    for i, column in enumerate(columns, start=1):
        if column.description:
            _set_card(table_header, f"TTYPE{i}", column.name, column.description)
        if column.name in ids and column.letter in "IJK":
            table_header[f"TNULL{i}"] = -1
    for line in _described_columns_comments(columns):
        table_header.add_comment(line)
    images = [k for k, e in layout.items() if e["columns"] is None]
    n_bins = reader.wavelength.shape[0]
    sources, by_source = None, {}
    if "wcs" in reader.keys:  # JSON {source: WCS header} as bytes: an image, so the file has one table
        by_source = dict(zip(reader.read("source").tolist(), reader.read("wcs").tolist()))
        sources = fits.ImageHDU(np.frombuffer(json.dumps(by_source).encode(), np.uint8), name=SOURCES)
        sources.header.add_comment("UTF-8 JSON: each input file's celestial WCS header ('' if none)")
    total = reader.rows * (1 + len(images))
    done = 0

    def write(f):
        nonlocal done
        f.write(_header_bytes(_primary_header(reader, layout, reader.provenance)))
        f.write(_header_bytes(table_header))
        for lo in range(0, reader.rows, BLOCK_ROWS):
            hi = min(lo + BLOCK_ROWS, reader.rows)
            rows = np.zeros(hi - lo, record)
            blocks = {k: reader.read(k, lo, hi) for k in dict.fromkeys(c.key for c in columns) if k not in ids}
            for column in columns:
                rows[column.name] = column.encode(ids[column.key][lo:hi] if column.key in ids else blocks[column.key])
            f.write(rows.tobytes())
            done += hi - lo
            if progress is not None:
                progress(done, total)
        f.write(_padding(record.itemsize * reader.rows))
        for key in images:
            dtype = reader.dtype(key)
            f.write(_header_bytes(_image_header(key, dtype, reader.rows, n_bins, reader.wavelength)))
            block_rows = max(1, BLOCK_BYTES // (dtype.itemsize * n_bins))
            for lo in range(0, reader.rows, block_rows):
                block = reader.read(key, lo, lo + block_rows)
                f.write(np.ascontiguousarray(block, dtype.newbyteorder(">")).tobytes())
                done += block.shape[0]
                if progress is not None:
                    progress(done, total)
            f.write(_padding(dtype.itemsize * n_bins * reader.rows))
        for image, header in _maps(reader, by_source):
            hdu = fits.ImageHDU(image, header=header)
            f.write(_header_bytes(hdu.header))
            f.write(np.ascontiguousarray(image, image.dtype.newbyteorder(">")).tobytes())
            f.write(_padding(image.nbytes))
        if sources is not None:
            f.write(_header_bytes(sources.header))
            f.write(sources.data.tobytes())
            f.write(_padding(sources.data.nbytes))

    return write_atomic(path, write)


# ----------------------------------------------------------------------------- astropy Tables

def catalog_table(arrays: dict[str, np.ndarray]):
    """The CATALOG columns (survey ids, per-spectrum numbers, named line-ratio and BPT columns, flags,
    units) of in-memory outputs, as an astropy Table: the same table `Table.read(OUT.fits)` gives."""
    from astropy.table import Table

    reader = ArraysOutput(arrays)
    layout = plan_layout(reader)
    id_columns, ids = _id_columns(reader)
    table = Table()
    for column in id_columns:
        table[column.name] = ids[column.name]
        table[column.name].description = column.description
    for column in _table_columns(reader, layout, {}):
        values = reader.read(column.key)
        table[column.name] = values[(slice(None),) + column.index] if column.index is not None else values
        table[column.name].unit = column.unit
        table[column.name].description = column.description
    table.meta.update({"DDMFORM": FORMAT, **{PROVENANCE_CARDS[k][0]: v for k, v in reader.provenance.items()
                                             if k in PROVENANCE_CARDS}})
    return table


def write_output(path, arrays: dict[str, np.ndarray]) -> Path:
    """In-memory outputs to `path`: a FITS catalogue if it ends in .fits, else an `.npz`."""
    from ddm_jax.io import save_npz_atomic

    if is_fits_name(path):
        return write_fits(path, ArraysOutput(arrays, path))
    return save_npz_atomic(path, arrays)


def is_fits_name(path) -> bool:
    return Path(path).name.lower().endswith(FITS_NAMES)


def export(source, output) -> Path:
    """The `export` command: any output (`open_output`) to a FITS catalogue (streamed) or an `.npz`."""
    from ddm_jax.progress import Progress

    output = Path(output)
    if not (is_fits_name(output) or output.suffix == ".npz"):
        raise DDMError(f"{output}: give a .fits or an .npz file name")
    if output.resolve() == Path(source).resolve():
        raise DDMError(f"{output}: is the file being exported; give another name")
    with open_output(source) as reader:
        if is_fits_name(output):
            return write_fits(output, reader, progress=Progress("export", unit="HDU rows"))
        return write_output(output, reader.arrays())
