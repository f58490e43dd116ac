"""Safe file I/O: .npz reading without pickles, atomic writing (never a partial file), row-wise
.npy reading and writing with pread/pwrite (no memory map, so resident memory stays flat),
and the settings check that lets a job resume only as it was started."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ddm_jax.errors import DDMError


def load_npz(path, what: str, required=()) -> dict[str, np.ndarray]:
    """Every array of an .npz (pickles refused); a DDMError naming the file if it is unreadable
    or lacks a `required` key. `what` names the kind of file in messages (e.g. 'PREPARED.npz')."""
    path = Path(path)
    if not path.is_file():
        raise DDMError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DDMError(f"{path}: not a readable {what} ({err})") from None
    missing = [key for key in required if key not in arrays]
    if missing:
        raise DDMError(f"{path}: not a {what}: lacks {', '.join(missing)}")
    return arrays


def write_atomic(path, write: Callable[[BinaryIO], object]) -> Path:
    """`write(file)` into a temporary file in the same folder, then rename: never a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it owner-only; give it an ordinary file's mode
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def save_npz_atomic(path, arrays: dict[str, np.ndarray]) -> Path:
    return write_atomic(path, lambda f: np.savez(f, **arrays))


# Fixed zip-entry timestamps: the same arrays give the same bytes (committed data files).
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def save_npz_compressed_atomic(path, arrays: dict[str, np.ndarray]) -> Path:
    """As np.savez_compressed (pickles refused), with fixed entry timestamps, written atomically."""
    def write(f):
        with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as archive:
            for key, value in arrays.items():
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, np.asarray(value), allow_pickle=False)
                info = zipfile.ZipInfo(f"{key}.npy", date_time=ZIP_DATE)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                archive.writestr(info, buffer.getvalue(), compresslevel=9)

    return write_atomic(path, write)


def write_text_atomic(path, text: str) -> Path:
    return write_atomic(path, lambda f: f.write(text.encode()))


def write_json_atomic(path, data) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=1) + "\n")


def sha256_file(path) -> str:
    """SHA-256 of a file's bytes, read a MiB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def changed_settings(path, settings: dict) -> list[str]:
    """The keys whose values differ between the JSON object saved at `path` and `settings`
    (compared as JSON: tuples and lists are equal)."""
    saved = json.loads(Path(path).read_text())
    settings = json.loads(json.dumps(settings))
    return sorted(key for key in set(saved) | set(settings) if saved.get(key) != settings.get(key))


class NpyArray:
    """Rows of a C-ordered `.npy` file, read with `pread` (no pickles, no memory map)."""

    def __init__(self, path: Path, what: str):
        self.path, self.what = Path(path), what
        try:
            with open(self.path, "rb") as f:
                version = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran_order, dtype = read_header(f)
                self.offset = f.tell()
        except FileNotFoundError as err:
            raise DDMError(f"{what} file {self.path} does not exist") from err
        except (ValueError, OSError) as err:
            raise DDMError(f"{what} file {self.path} is not a readable .npy array: {err}") from err
        if dtype.hasobject:
            raise DDMError(f"{what} file {self.path} holds pickled Python objects; only numeric .npy arrays "
                           "are accepted")
        if dtype.kind not in "fiub":
            raise DDMError(f"{what} file {self.path} is not numeric (dtype {dtype})")
        if fortran_order and len(shape) > 1:
            raise DDMError(f"{what} file {self.path} is Fortran-ordered; save it with np.ascontiguousarray")
        self.dtype, self.shape = dtype, shape
        self._set_rows(shape[0] if shape else 1, shape[1:])
        expected = self.offset + self.rows * self.row_bytes
        if self.path.stat().st_size < expected:
            raise DDMError(f"{what} file {self.path} is truncated: {self.path.stat().st_size} bytes, "
                           f"its header promises {expected}")

    def _set_rows(self, rows: int, row_shape: tuple[int, ...]) -> None:
        self.rows, self.row_shape = rows, row_shape
        self.row_bytes = self.dtype.itemsize * int(np.prod(row_shape, dtype=np.int64))

    def as_one_row(self) -> None:
        """Read a 1-D array as a single row (one spectrum of shape (n_bins,))."""
        self._set_rows(1, self.shape)

    def read(self, start: int, stop: int) -> np.ndarray:
        with open(self.path, "rb") as f:
            raw = os.pread(f.fileno(), (stop - start) * self.row_bytes, self.offset + start * self.row_bytes)
        return np.frombuffer(raw, self.dtype).reshape((stop - start,) + self.row_shape)


class RowSource:
    """One logical array over a `.npy` file or a folder of `.npy` chunks (concatenated on axis 0).

    A 1-D spectra file of shape (n_bins,) is one spectrum; a 0-D mass file is one mass.
    """

    def __init__(self, path, what: str, row_width: int | None):
        path = Path(path)
        files = sorted(path.glob("*.npy")) if path.is_dir() else [path]
        if not files:
            raise DDMError(f"{what} folder {path} holds no .npy files")
        self.what, self.paths = what, files
        self.parts = [NpyArray(f, what) for f in files]
        for part in self.parts:
            if row_width is not None and part.shape == (row_width,):
                part.as_one_row()
            if row_width is not None and part.row_shape != (row_width,):
                raise DDMError(f"{what} file {part.path} has shape {part.shape}; need (B, {row_width})")
            if row_width is None and len(part.shape) > 1:
                raise DDMError(f"{what} file {part.path} has shape {part.shape}; need one value per spectrum")
        self.starts = np.cumsum([0] + [p.rows for p in self.parts])
        self.rows = int(self.starts[-1])
        if self.rows == 0:
            raise DDMError(f"the {what} array is empty ({path})")

    def read(self, start: int, stop: int) -> np.ndarray:
        pieces = []
        for index, part in enumerate(self.parts):
            lo, hi = max(start, self.starts[index]), min(stop, self.starts[index + 1])
            if lo < hi:
                pieces.append(part.read(lo - self.starts[index], hi - self.starts[index]))
        return np.concatenate(pieces) if len(pieces) > 1 else pieces[0]

    def fingerprint(self) -> list:
        return [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in self.paths]


class NpyWriter:
    """A preallocated `.npy` file filled row block by row block with `pwrite`."""

    def __init__(self, path: Path, dtype, shape: tuple[int, ...], create: bool):
        if create:
            np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape).flush()  # header + sparse body
        self.array = NpyArray(path, "output")
        self.path = path

    def write(self, start: int, values: np.ndarray) -> None:
        data = np.ascontiguousarray(values, self.array.dtype).tobytes()
        fd = os.open(self.path, os.O_WRONLY)
        try:
            os.pwrite(fd, data, self.array.offset + start * self.array.row_bytes)
        finally:
            os.close(fd)
