"""Nebular emission-line grids and dust attenuation curves bundled with the package (numpy only, no JAX).

    from ddm_jax.astro.nebular import attenuation, line_attenuation, load_nebular_grids
    grids = load_nebular_grids()          # {"hii": NebularGrid, "nlr": NebularGrid}
    hii = grids["hii"]                    # hii.fluxes (N, 14): line / Hbeta in EMISSION_LINES order
    a_lines = line_attenuation("calzetti00")   # (14,) A_lambda / A_V at the lines
    a_grid = attenuation("ccm89")               # (2208,) A_lambda / A_V on wavelength_grid()

The line grids are the two MAPPINGS 5.1 photoionisation grids that NebulaBayes 0.9.9 ships
(Thomas et al. 2018, ApJ 856, 89): HII regions over 12 + log O/H, log U and log P/k, and AGN
narrow-line regions over the same plus log E_peak, the peak energy (keV) of the ionising
continuum. Fluxes are intrinsic (unreddened) and relative to Hbeta; [OIII]4959 and [NII]6548 are
the grid's 5007 and 6584 divided by their fixed atomic ratios, every other line is the grid's own.
The curves are A_lambda / A_V of Calzetti et al. (2000; starburst attenuation, R_V = 4.05) and
Cardelli, Clayton & Mathis (1989; Milky Way extinction, R_V = 3.1). Sources, licences, papers to
cite and the derivation: ddm_jax/data/nebular_dust.PROVENANCE.md (built by
tools/make_nebular_dust.py).
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ddm_jax.constants import EMISSION_LINES, wavelength_grid
from ddm_jax.errors import InputError
from ddm_jax.io.safe import load_npz
from ddm_jax.schema import NEBULAR_GRID_KEYS, NEBULAR_KEYS

CURVES = ("calzetti00", "ccm89")
CALZETTI_RV, CCM_RV = 4.05, 3.1  # A_V / E(B-V) of the two curves
GRIDS = ("hii", "nlr")
N_LINES = len(EMISSION_LINES)


class NebularGrid(NamedTuple):
    """One photoionisation grid, one row per model (arrays are read-only).

    params: (N, P) float32, the model parameters, columns named by param_names.
    param_names: e.g. ("12 + log O/H", "log U", "log P/k") (and "log E_peak" for "nlr").
    fluxes: (N, 14) float32, intrinsic line fluxes relative to Hbeta, in EMISSION_LINES order.
    """

    params: np.ndarray
    param_names: tuple[str, ...]
    fluxes: np.ndarray


def data_path() -> Path:
    """The bundled nebular_dust.npz."""
    return Path(str(resources.files("ddm_jax") / "data" / "nebular_dust.npz"))


def _read_only(array, dtype) -> np.ndarray:
    array = np.array(array, dtype=dtype)
    array.setflags(write=False)
    return array


@functools.cache
def _tables() -> tuple[dict[str, NebularGrid], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(grids, attenuation on the grid, attenuation at the lines), checked against the constants."""
    path = data_path()
    required = [f"{g}_{k}" for g in GRIDS for k in NEBULAR_GRID_KEYS]
    arrays = load_npz(path, "nebular/dust table", [*required, *NEBULAR_KEYS])
    grid_wavelength = wavelength_grid()
    if (tuple(arrays["line_names"]) != tuple(EMISSION_LINES) or tuple(arrays["curves"]) != CURVES
            or not np.array_equal(arrays["wavelength"], grid_wavelength)
            or arrays["attenuation"].shape != (len(CURVES), grid_wavelength.size)
            or arrays["line_attenuation"].shape != (len(CURVES), N_LINES)):
        raise InputError(f"{path}: lines, curves or wavelengths differ from ddm_jax.constants; rebuild it")
    grids = {}
    for name in GRIDS:
        params, names, fluxes = (arrays[f"{name}_{k}"] for k in ("params", "param_names", "fluxes"))
        if params.ndim != 2 or params.shape[1] != names.size or fluxes.shape != (params.shape[0], N_LINES):
            raise InputError(f"{path}: grid {name!r} has params {params.shape}, fluxes {fluxes.shape}")
        grids[name] = NebularGrid(_read_only(params, np.float32), tuple(str(n) for n in names),
                                  _read_only(fluxes, np.float32))
    curves = {c: _read_only(a, np.float32) for c, a in zip(CURVES, arrays["attenuation"], strict=True)}
    lines = {c: _read_only(a, np.float32) for c, a in zip(CURVES, arrays["line_attenuation"], strict=True)}
    return grids, curves, lines


def load_nebular_grids() -> dict[str, NebularGrid]:
    """The "hii" and "nlr" grids (read once per process; the arrays are shared and read-only)."""
    return dict(_tables()[0])


def _check_curve(curve: str) -> None:
    if curve not in CURVES:
        raise InputError(f"unknown attenuation curve {curve!r}; choose one of {', '.join(CURVES)}")


def attenuation(curve: str = "calzetti00", wavelength=None) -> np.ndarray:
    """A_lambda / A_V of `curve`: (2208,) float32 on wavelength_grid() (read-only) when `wavelength`
    is None, else at `wavelength` (rest-frame Angstrom, any shape; float64) interpolated linearly
    in that table, and clipped to its end values (3700 and 8114 A) outside it."""
    _check_curve(curve)
    table = _tables()[1][curve]
    if wavelength is None:
        return table
    return np.interp(np.asarray(wavelength, np.float64), wavelength_grid(), table)


def line_attenuation(curve: str = "calzetti00") -> np.ndarray:
    """(14,) float32 A_lambda / A_V of `curve` at the EMISSION_LINES wavelengths (evaluated there by
    the curve itself, not interpolated; read-only)."""
    _check_curve(curve)
    return _tables()[2][curve]
