"""Safe file I/O: .npz reading without pickles, atomic writing (never a partial file), row-wise
.npy reading and writing with pread/pwrite (no memory map, so resident memory stays flat),
and the settings check that lets a job resume only as it was started.

Readers check what a file declares before they read it: an .npy header's shape and dtype against
the bytes the file (or the zip member) holds, and the total against the memory available, so a
file that promises more than it has is refused in one line instead of asking for the memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import math
import os
import tempfile
import tokenize
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import jax
import numpy as np

from ddm_jax.errors import InputError, MissingFileError, WriteFailed, first_line


@dataclasses.dataclass(frozen=True)
class Declared:
    """What an .npy header declares: read without the data."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize  # Python ints: a hostile shape cannot overflow


def read_npy_header(f: BinaryIO) -> Declared:
    """The header of an .npy stream (file or zip member) positioned at its start; ValueError if malformed."""
    version = np.lib.format.read_magic(f)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    try:
        shape, fortran_order, dtype = read_header(f)
    except tokenize.TokenError as err:  # numpy re-tokenises a header that does not parse, and lets this through
        raise ValueError(f"the header does not parse ({err.args[0]})") from None
    if any(n < 0 for n in shape):
        raise ValueError(f"the header declares a negative dimension: shape {shape}")
    return Declared(tuple(shape), dtype, fortran_order)


def available_memory() -> int | None:
    """Bytes of memory the kernel says are available (MemAvailable), or None where it does not say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def refuse_beyond_memory(where, nbytes: int) -> None:
    """A DDMError if reading `nbytes` (what a file declares, consistently) would not fit in memory."""
    available = available_memory()
    if available is not None and nbytes > available:
        raise InputError(f"{where}: declares {nbytes / 2**30:.1f} GiB of data, more than the {available / 2**30:.1f} "
                         "GiB of memory available; split it into smaller files")


def _npz_member(path: Path, what: str, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[str, Declared]:
    """A member's key and header, checked against the member's size in the archive."""
    if not info.filename.endswith(".npy"):
        raise InputError(f"{path}: not a {what}: member {info.filename!r} is not an .npy array")
    key = info.filename[: -len(".npy")]
    with archive.open(info) as member:
        declared = read_npy_header(member)
        header_bytes = member.tell()
    if declared.dtype.hasobject:
        raise InputError(f"{path}: {key} holds pickled Python objects; only numeric and string arrays are read")
    if header_bytes + declared.nbytes != info.file_size:
        raise InputError(f"{path}: {key} declares shape {declared.shape} {declared.dtype} ({declared.nbytes} bytes) "
                         f"but its member holds {info.file_size - header_bytes} bytes of data")
    return key, declared


def load_npz(path, what: str, required=(), check: Callable[[dict[str, Declared]], None] | None = None,
             keys=None) -> dict[str, np.ndarray]:
    """The arrays of an .npz (pickles refused); a DDMError naming the file if it is unreadable or
    lacks a `required` key. `what` names the kind of file in messages (e.g. 'PREPARED.npz').

    Before any data is read, every member's header is checked against its size in the archive,
    `check(declared)` may refuse the declared shapes and dtypes, and the arrays to read (`keys`,
    default all) must fit in the memory available.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such file")
    try:
        with zipfile.ZipFile(path) as archive:
            infos = {}
            declared = {}
            for info in archive.infolist():
                key, declared[key] = _npz_member(path, what, archive, info)
                infos[key] = info
            missing = [key for key in required if key not in declared]
            if missing:
                raise InputError(f"{path}: not a {what}: lacks {', '.join(missing)}")
            if check is not None:
                check(declared)
            keys = list(declared) if keys is None else [key for key in keys if key in declared]
            refuse_beyond_memory(path, sum(declared[key].nbytes for key in keys))
            arrays = {}
            for key in keys:
                with archive.open(infos[key]) as member:
                    arrays[key] = np.lib.format.read_array(member, allow_pickle=False)
    except (OSError, ValueError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error) as err:
        # RuntimeError: an encrypted member; NotImplementedError: an unknown compression method
        raise InputError(f"{path}: not a readable {what} ({first_line(err)})"
                         ) from None
    return arrays


def os_error(path, err: OSError) -> WriteFailed:
    """A one-line error for a failed write (a full disk, an unwritable folder, a file in the way)."""
    where = f"{err.strerror}: {err.filename}" if err.strerror and err.filename else (err.strerror or str(err))
    return WriteFailed(f"{path}: cannot write ({where})")


@contextlib.contextmanager
def writing(path):
    """OSErrors inside the block become `os_error(path, ...)`: one line naming the output."""
    try:
        yield
    except WriteFailed:
        raise
    except OSError as err:
        raise os_error(path, err) from None


def write_atomic(path, write: Callable[[BinaryIO], object]) -> Path:
    """`write(file)` into a temporary file in the same folder, then rename: never a partial file, and
    an existing file at `path` stays as it was unless the new one is complete. OS errors are DDMErrors."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    except OSError as err:
        raise os_error(path, err) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it owner-only; give it an ordinary file's mode
        os.replace(tmp, path)
    except BaseException as err:
        os.unlink(tmp)
        if isinstance(err, OSError) and not isinstance(err, WriteFailed):
            raise os_error(path, err) from None
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
    """Rows of an `.npy` file, read with `pread` (no pickles, no memory map).

    Its header is checked against the file's length before anything else is read. A 2-D
    Fortran-ordered array is read column by column, so its rows come out as a C-ordered file's.
    """

    def __init__(self, path: Path, what: str, kinds: str = "fiub"):
        self.path, self.what = Path(path), what
        try:
            with open(self.path, "rb") as f:
                declared = read_npy_header(f)
                self.offset = f.tell()
        except FileNotFoundError as err:
            raise MissingFileError(f"{self.path}: {what} file does not exist") from err
        except (ValueError, OSError) as err:
            raise InputError(f"{self.path}: {what} file is not a readable .npy array: {err}") from err
        shape, dtype = declared.shape, declared.dtype
        if dtype.hasobject:
            raise InputError(f"{self.path}: {what} file holds pickled Python objects; only numeric .npy arrays "
                             "are accepted")
        if dtype.kind not in kinds:
            raise InputError(f"{self.path}: {what} file is not numeric (dtype {dtype})")
        if declared.fortran_order and len(shape) > 2:
            raise InputError(f"{self.path}: {what} file is a Fortran-ordered {len(shape)}-d array; save it with "
                             "np.ascontiguousarray")
        self.fortran = declared.fortran_order and len(shape) == 2
        self.dtype, self.shape = dtype, shape
        self._set_rows(shape[0] if shape else 1, shape[1:])
        expected = self.offset + declared.nbytes
        if self.path.stat().st_size < expected:
            raise InputError(f"{self.path}: {what} file is truncated: {self.path.stat().st_size} bytes, "
                             f"its header promises {expected}")

    def _set_rows(self, rows: int, row_shape: tuple[int, ...]) -> None:
        self.rows, self.row_shape = rows, row_shape
        self.row_bytes = self.dtype.itemsize * math.prod(row_shape)

    def as_one_row(self) -> None:
        """Read a 1-D array, or an (n, 1) column, as a single row of shape (n,)."""
        self.fortran = False  # an (n, 1) column has the same bytes in either order
        self._set_rows(1, (math.prod(self.shape),))

    def as_column(self) -> None:
        """Read an (n, 1) array as n rows of one value."""
        self.fortran = False
        self._set_rows(self.shape[0], ())

    def read(self, start: int, stop: int) -> np.ndarray:
        count = stop - start
        with open(self.path, "rb") as f:
            if self.fortran and (start, stop) == (0, self.rows):  # the whole array: one read
                raw = pread_all(f.fileno(), count * self.row_bytes, self.offset, self.path)
                return np.frombuffer(raw, self.dtype).reshape(self.shape[1], count).T
            if self.fortran:  # column j of rows [start, stop) is contiguous in the file
                size = self.dtype.itemsize
                raw = b"".join(pread_all(f.fileno(), count * size, self.offset + (j * self.rows + start) * size,
                                         self.path) for j in range(self.shape[1]))
                return np.frombuffer(raw, self.dtype).reshape(self.shape[1], count).T
            raw = pread_all(f.fileno(), count * self.row_bytes, self.offset + start * self.row_bytes, self.path)
        return np.frombuffer(raw, self.dtype).reshape((count,) + self.row_shape)


def pread_all(fd: int, size: int, offset: int, path) -> bytes:
    """`size` bytes at `offset`: one pread returns at most about 2 GiB on Linux, so read until done."""
    buffer = bytearray(size)
    view, done = memoryview(buffer), 0
    while done < size:
        got = os.preadv(fd, [view[done:]], offset + done)
        if got == 0:
            raise InputError(f"{path}: ended {size - done} bytes early (changed while being read?)")
        done += got
    return bytes(buffer)


class RowSource:
    """One logical array over a `.npy` file or a folder of `.npy` chunks (concatenated on axis 0).

    A 1-D spectra file of shape (n_bins,), or a column (n_bins, 1), is one spectrum; a 0-D mass
    file is one mass, and an (n, 1) mass file is n masses.
    """

    def __init__(self, path, what: str, row_width: int | None):
        path = Path(path)
        files = sorted(path.glob("*.npy")) if path.is_dir() else [path]
        if not files:
            raise InputError(f"{what} folder {path} holds no .npy files")
        self.what, self.paths = what, files
        self.parts = [NpyArray(f, what, kinds="fiu") for f in files]  # numbers: a boolean input means nothing here
        for part in self.parts:
            if row_width is not None and part.shape in ((row_width,), (row_width, 1)):
                part.as_one_row()
            if row_width is None and len(part.shape) == 2 and part.shape[1] == 1:
                part.as_column()
            if row_width is not None and part.row_shape != (row_width,):
                raise InputError(f"{part.path}: {what} file has shape {part.shape}; need (B, {row_width})")
            if row_width is None and part.row_shape:
                raise InputError(f"{part.path}: {what} file has shape {part.shape}; need one value per spectrum")
        self.starts = np.cumsum([0] + [p.rows for p in self.parts])
        self.rows = int(self.starts[-1])
        if self.rows == 0:
            raise InputError(f"the {what} array is empty ({path})")

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


def params_sha256(params) -> str:
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(params):
        digest.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return digest.hexdigest()
