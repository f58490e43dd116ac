"""Safe file I/O: .npz reading without pickles; atomic writing (never a partial file)."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import BinaryIO, Callable

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


def write_text_atomic(path, text: str) -> Path:
    return write_atomic(path, lambda f: f.write(text.encode()))


def write_json_atomic(path, data) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=1) + "\n")
