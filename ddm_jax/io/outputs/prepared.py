"""PREPARED files (`prepare`'s output, `decompose`'s input): `write_prepared` and `load_prepared`,
which checks the keys (`schema.PREPARED_KEYS`) and declared shapes before any data is read. The
keys are listed in `ddm_jax.prepare.pipeline`'s docstring."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import numpy as np

from ddm_jax.constants import N_BINS, wavelength_grid
from ddm_jax.errors import InputError
from ddm_jax.io.outputs.base import is_fits_name
from ddm_jax.io.outputs.files import read_arrays, write_output
from ddm_jax.io.safe import load_npz
from ddm_jax.schema import PREPARED_KEYS, SHARED_KEYS


def write_prepared(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write atomically (a temporary file in the same directory, then a rename): an .npz, or a FITS
    catalogue if `path` ends in .fits (docs/fits.md)."""
    write_output(path, arrays)


def load_prepared(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read and check a PREPARED.npz (or PREPARED.fits); returns every array in it (module docstring).

    Raises DDMError naming the file if it is unreadable, lacks a PREPARED_KEYS array, or the
    shapes disagree with one another or with the rest-frame grid: shapes and dtypes are checked
    as the file declares them, before any data is read.
    """
    path = Path(path)
    read = read_arrays if is_fits_name(path) else partial(load_npz, what="PREPARED.npz")
    arrays = read(path, required=PREPARED_KEYS, check=lambda declared: _check_shapes(path, declared))
    if not np.allclose(arrays["wavelength"], wavelength_grid()):
        raise InputError(f"{path}: wavelength is not the rest-frame grid 3700 + 2 i Angstrom")
    return arrays


def _check_shapes(path: Path, declared: dict) -> None:
    """Shapes and dtypes (of arrays, or as an .npz declares them) against one another and the grid size."""
    if len(declared["ids"].shape) != 1:
        raise InputError(f"{path}: ids has shape {declared['ids'].shape}, expected (n,): one id per spectrum")
    n = declared["ids"].shape[0]
    if len(declared["line_names"].shape) != 1:
        raise InputError(f"{path}: line_names has shape {declared['line_names'].shape}, expected (n_lines,)")
    n_lines = declared["line_names"].shape[0]
    expected = {"flux": (n, N_BINS), "ivar": (n, N_BINS), "mask": (n, N_BINS), "wavelength": (N_BINS,),
                "z": (n,), "ids": (n,), "line_names": (n_lines,), "line_flux": (n, n_lines),
                "line_flux_err": (n, n_lines), "line_snr": (n, n_lines), "meets_snr": (n,),
                "line_fit_ok": (n,), "broad_balmer": (n,), "passes_gate": (n,), "position": (n, 2),
                "log_nii_ha": (n,), "log_oiii_hb": (n,), "log_sii_ha": (n,), "log_oi_ha": (n,)}
    for key, shape in expected.items():
        if tuple(declared[key].shape) != shape:
            raise InputError(f"{path}: {key} has shape {tuple(declared[key].shape)}, expected {shape}")
    for key in ("ids", "line_names"):
        if declared[key].dtype.kind != "U":
            raise InputError(f"{path}: {key} must be strings, not {declared[key].dtype}")
    for key in set(expected) - {"ids", "line_names"}:
        if declared[key].dtype.kind not in "fiub":
            raise InputError(f"{path}: {key} is not numeric (dtype {declared[key].dtype})")
    for key in sorted(set(declared) - set(expected) - set(SHARED_KEYS)):  # the other per-spectrum outputs
        if not declared[key].shape or declared[key].shape[0] != n:
            raise InputError(f"{path}: {key} has shape {tuple(declared[key].shape)}, expected one row per spectrum "
                             f"({n})")
