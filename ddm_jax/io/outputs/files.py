"""Any output by its name: `open_output` (an .npz, a streamed folder or a FITS catalogue, as one
reader), `read_arrays`, `write_output` (.npz or FITS by suffix, atomically) and `export`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ddm_jax.errors import InputError, MissingFileError
from ddm_jax.io.outputs.base import ArraysOutput, FolderOutput, OutputReader, is_fits_name
from ddm_jax.io.outputs.fits_reader import FitsOutput
from ddm_jax.io.outputs.fits_writer import write_fits
from ddm_jax.io.safe import load_npz


def open_output(path) -> OutputReader:
    """The reader for a decompose/prepare output: `.npz`, folder or `.fits`; DDMError if none fits."""
    path = Path(path)
    if path.is_dir():
        return FolderOutput(path)
    if not path.exists():
        raise MissingFileError(f"{path}: no such file or folder")
    name = path.name.lower()
    if name.endswith(".npz"):
        return ArraysOutput(load_npz(path, "decompose/prepare output"), path)
    if is_fits_name(path):
        return FitsOutput(path)
    raise InputError(f"{path}: not an output (expected an .npz, a .fits catalogue or a decompose folder)")


def read_arrays(path, required=(), check=None) -> dict[str, np.ndarray]:
    """An output's arrays as the `.npz` holds them (a FITS catalogue's layout undone). As with
    `io.safe.load_npz`, the `required` keys and `check(declared)` are checked before any data is read."""
    with open_output(path) as reader:
        declared = reader.declared()
        missing = [key for key in required if key not in declared]
        if missing:
            raise InputError(f"{path}: lacks {', '.join(missing)}")
        if check is not None:
            check(declared)
        return reader.arrays()


def write_output(path, arrays: dict[str, np.ndarray]) -> Path:
    """In-memory outputs to `path`: a FITS catalogue if it ends in .fits, else an `.npz`."""
    from ddm_jax.io.safe import save_npz_atomic

    if is_fits_name(path):
        return write_fits(path, ArraysOutput(arrays, path))
    return save_npz_atomic(path, arrays)


def export(source, output) -> Path:
    """The `export` command: any output (`open_output`) to a FITS catalogue (streamed) or an `.npz`."""
    from ddm_jax.progress import Progress

    output = Path(output)
    if not (is_fits_name(output) or output.suffix == ".npz"):
        raise InputError(f"{output}: give a .fits or an .npz file name")
    if output.resolve() == Path(source).resolve():
        raise InputError(f"{output}: is the file being exported; give another name")
    with open_output(source) as reader:
        if is_fits_name(output):
            return write_fits(output, reader, progress=Progress("export", unit="HDU rows"))
        return write_output(output, reader.arrays())
