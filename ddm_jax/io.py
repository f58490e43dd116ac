"""Safe array I/O for the CLI: .npy inputs without pickles, atomic .npz outputs."""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from ddm_jax.errors import DDMError


def load_array(path, what: str) -> np.ndarray:
    """A numeric array from a .npy file; pickled object arrays are refused, never loaded."""
    path = Path(path)
    if not path.is_file():
        raise DDMError(f"{what} file {path} does not exist")
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":  # np.load would otherwise try to unpickle it
            raise DDMError(f"{what} file {path} is not a readable .npy array (no .npy header)")
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise DDMError(f"{what} file {path} holds pickled Python objects; only numeric .npy arrays "
                           "are accepted") from err
        raise DDMError(f"{what} file {path} is not a readable .npy array: {err}") from err
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise DDMError(f"{what} file {path} is not a readable .npy array: {err}") from err
    if array.dtype.kind not in "fiu":
        raise DDMError(f"{what} file {path} is not numeric (dtype {array.dtype})")
    return array


def save_npz_atomic(path, arrays: dict[str, np.ndarray]) -> Path:
    """Write an .npz through a temporary file in the same folder, then rename: never a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path
