"""How the arrays of an output map onto a FITS catalogue: column formats and names (one column per
line quantity and part), the table's columns, survey-id columns, the layout card (`plan_layout`)."""

from __future__ import annotations

import math
import re

import numpy as np

from ddm_jax.constants import LINE_QUANTITIES
from ddm_jax.errors import InputError
from ddm_jax.io.outputs.base import BLOCK_ROWS, OutputReader
from ddm_jax.schema import (
    CATALOG,
    DESCRIPTIONS,
    PART_LABELS,
    PARTS,
    QUANTITY_DESCRIPTIONS,
    SOURCES,
    SPLIT_BY_LINE,
    UNITS,
)


def fits_format(dtype: np.dtype, key: str, width: int = 0) -> tuple[str, np.dtype]:
    """A TFORM letter and the big-endian dtype its bytes have, for a numpy dtype."""
    if dtype.kind == "U":
        return f"{max(width, 1)}A", np.dtype(f"S{max(width, 1)}")
    formats = {"f4": ("E", ">f4"), "f8": ("D", ">f8"), "i2": ("I", ">i2"), "i4": ("J", ">i4"), "i8": ("K", ">i8"),
               "u1": ("B", "u1"), "i1": ("I", ">i2"), "b1": ("L", "S1")}  # int8 widens: FITS bytes are unsigned
    code = dtype.str[1:]
    if code not in formats:
        raise InputError(f"{key}: cannot store dtype {dtype} in a FITS table")
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


def wcs_wavelength(header, n: int) -> np.ndarray:
    return (header["CRVAL1"] + header["CDELT1"] * (np.arange(n) + 1 - header["CRPIX1"])).astype(np.float32)


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


class Column:
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
                raise InputError(f"{self.key}: FITS tables hold ASCII text only; {err.object!r} is not") from None
        return values.reshape(values.shape[0], -1) if self.repeat > 1 else values


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


def table_columns(reader: OutputReader, layout: dict, string_widths: dict) -> list[Column]:
    columns = []
    for key, entry in layout.items():
        if entry["hdu"] != CATALOG:
            continue
        dtype, row_shape = reader.dtype(key), tuple(entry["shape"])
        if entry["split"]:
            parts = np.ndindex(*row_shape)
            for name, index in zip(entry["columns"], parts):
                columns.append(Column(name, key, index, dtype, description=_describe(name)))
        else:
            columns.append(Column(key, key, None, dtype, string_widths.get(key, 0), UNITS.get(key), _describe(key),
                                   row_shape))
    return columns


def string_width(reader: OutputReader, key: str) -> int:
    width = 0
    for lo in range(0, reader.rows, BLOCK_ROWS):
        values = reader.read(key, lo, lo + BLOCK_ROWS)
        width = max(width, int(np.char.str_len(values.astype(str)).max(initial=0)))
    return width


def id_columns(reader: OutputReader) -> tuple[list[Column], dict[str, np.ndarray]]:
    """Survey-id columns (derived from ids; not part of the `.npz`)."""
    if "survey_id" not in reader.keys:
        return [], {}
    position = reader.read("position") if "position" in reader.keys else None
    ids = survey_ids(reader.read("survey_id"), position)
    widths = {"survey": 5, "plateifu": 12}
    columns = [Column(name, name, None, values.dtype, widths.get(name, 0), None, DESCRIPTIONS[name])
               for name, values in ids.items()]
    return columns, ids
