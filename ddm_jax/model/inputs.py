"""Input checks before the network: spectra (B, n_bins) and masses (B,) (`validate_inputs`), and
inverse variances (`validate_ivar`); each refusal is an `InputError` naming the first bad row."""

from __future__ import annotations

import numpy as np

from ddm_jax.constants import norm_window_slice
from ddm_jax.errors import InputError


def validate_inputs(spectra, mass, n_bins: int, normalize: bool = True,
                    first_row: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Check and shape inputs: (B, n_bins) float32 spectra and (B,) float32 masses (ones when unused).

    Messages number rows from `first_row` (where these rows start in a larger input).
    """
    spectra = np.asarray(spectra)
    if spectra.size == 0:
        raise InputError("the spectra array is empty")
    if not (np.issubdtype(spectra.dtype, np.floating) or np.issubdtype(spectra.dtype, np.integer)):
        raise InputError(f"spectra must be numeric, got dtype {spectra.dtype}")
    if spectra.ndim == 1:
        spectra = spectra[None]
    if spectra.ndim != 2 or spectra.shape[1] != n_bins:
        raise InputError(f"spectra must have shape (B, {n_bins}) or ({n_bins},) on the 2 A rest-frame grid, "
                         f"got {spectra.shape}")
    with np.errstate(over="ignore"):
        spectra = spectra.astype(np.float32)  # a value beyond float32's range becomes inf: refused below
    bad = np.flatnonzero(~np.isfinite(spectra).all(axis=1))
    if bad.size:
        raise InputError(f"{bad.size} spectra hold NaN or inf, or values beyond float32's range (first: row "
                         f"{first_row + bad[0]}); mask or drop them first")
    count = spectra.shape[0]
    if not normalize:
        return spectra, np.ones(count, np.float32)
    if mass is None:
        raise InputError("a mass per spectrum (--mass) is needed to normalise; for spectra that are "
                         "already normalised pass --no-normalize")
    mass = np.asarray(mass)
    if not (np.issubdtype(mass.dtype, np.floating) or np.issubdtype(mass.dtype, np.integer)):
        raise InputError(f"mass must be numeric, got dtype {mass.dtype}")
    if mass.size != count:
        raise InputError(f"need one mass per spectrum: {count} spectra, mass has shape {mass.shape}")
    with np.errstate(over="ignore"):
        mass = mass.reshape(count).astype(np.float32)
    bad = np.flatnonzero(~(np.isfinite(mass) & (mass > 0)))
    if bad.size:
        raise InputError(f"mass must be finite and positive; {bad.size} are not (first: row {first_row + bad[0]}, "
                         f"value {mass[bad[0]]})")
    window_std = spectra[:, norm_window_slice(n_bins)].std(axis=1)
    flat = np.flatnonzero(window_std == 0)
    if flat.size:
        raise InputError(f"{flat.size} spectra are constant over 4000-7000 A and cannot be normalised "
                         f"(first: row {first_row + flat[0]})")
    return spectra, mass


def validate_ivar(ivar, count: int, n_bins: int, first_row: int = 0) -> np.ndarray:
    """(count, n_bins) float32 inverse variances, finite and >= 0 (0 marks a bin without data)."""
    ivar = np.asarray(ivar)
    if not (np.issubdtype(ivar.dtype, np.floating) or np.issubdtype(ivar.dtype, np.integer)):
        raise InputError(f"ivar must be numeric, got dtype {ivar.dtype}")
    if ivar.ndim == 1 and count == 1:
        ivar = ivar[None]
    if ivar.shape != (count, n_bins):
        raise InputError(f"need one ivar row per spectrum: shape ({count}, {n_bins}), got {ivar.shape}")
    bad = np.flatnonzero(~(np.isfinite(ivar) & (ivar >= 0)).all(axis=1))
    if bad.size:
        raise InputError(f"ivar must be finite and >= 0; {bad.size} rows are not (first: row {first_row + bad[0]})")
    return ivar.astype(np.float32)
