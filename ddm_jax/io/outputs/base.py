"""The output readers: one interface (`OutputReader`: rows, keys, shape, dtype, read a block of
rows) over in-memory arrays, a streamed `decompose` folder and a concatenation of shares; the
provenance every output carries (`provenance_now`, `output_arrays`)."""

from __future__ import annotations

import datetime
import json
import math
from pathlib import Path

import numpy as np

from ddm_jax import __version__
from ddm_jax.constants import wavelength_grid
from ddm_jax.errors import InputError
from ddm_jax.io.safe import Declared, NpyArray, refuse_beyond_memory
from ddm_jax.schema import MANIFEST, PROVENANCE_CARDS, SHARED_KEYS

FITS_NAMES = (".fits", ".fit", ".fts")  # what a catalogue's name ends in (uncompressed: it is memory-mapped)

BLOCK_ROWS = 8192  # catalogue rows read and written at a time
BLOCK_BYTES = 16 << 20  # and at most this much of an image: memory stays flat however many rows


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
            raise InputError(f"{path}: not a decompose or prepare output (no sf_fraction, no flux)")
        per_row = {k: np.asarray(v) for k, v in arrays.items() if k not in SHARED_KEYS}
        if not per_row:
            raise InputError(f"{path}: holds no per-spectrum arrays")
        counts = {k: v.shape[0] if v.ndim else None for k, v in per_row.items()}
        self.rows = counts.get("sf_fraction", counts.get("flux"))
        wrong = [f"{k} {v.shape}" for k, v in per_row.items() if counts[k] != self.rows]
        if wrong:
            raise InputError(f"{path}: {', '.join(wrong)}: expected {self.rows} rows like the others")
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
        raise InputError(f"{path}: its provenance is not JSON ({err})") from None
    if not isinstance(provenance, dict):
        raise InputError(f"{path}: its provenance is not a JSON object")
    return provenance


class FolderOutput(OutputReader):
    """A `decompose` folder (one `.npy` per key and `manifest.json`), read with `pread`."""

    def __init__(self, path):
        self.path = Path(path)
        manifest_file = self.path / MANIFEST
        if not manifest_file.is_file():
            raise InputError(f"{path}: not a finished decompose output folder (no manifest.json)")
        try:
            manifest = json.loads(manifest_file.read_text())
            keys = manifest["keys"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise InputError(f"{manifest_file}: unreadable manifest ({err})") from None
        self._arrays = {key: NpyArray(self.path / f"{key}.npy", key) for key in keys}
        self.keys = tuple(keys)
        self.rows = self._arrays[self.keys[0]].rows
        wrong = [k for k, a in self._arrays.items() if a.rows != self.rows]
        if wrong:
            raise InputError(f"{path}: {', '.join(wrong)} do not have {self.rows} rows like {self.keys[0]}")
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
            raise InputError(f"{', '.join(str(p.path) for p in parts)}: the parts hold different arrays")
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


def is_fits_name(path) -> bool:
    return Path(path).name.lower().endswith(FITS_NAMES)
