"""Emission-line fluxes on the rest-frame grid, by a batched least-squares fit.

Balmer emission sits in stellar absorption troughs, so a window integral over a side-band
continuum underestimates it (even below zero). The model, per spectrum, over three windows:
- narrow emission Gaussians (the reported lines and [OIII]4959), sharing one velocity shift
  and one velocity width;
- at Hbeta and Halpha, absorption made of two broad Gaussians (fixed widths, free
  amplitudes, so the trough's core and wings can take any depth and either sign);
- a linear continuum per window.
For a given (velocity, width) everything is linear; those two are found by a grid search
on chi^2 that zooms in twice, and the amplitudes (the line fluxes) and their errors come from
the weighted linear least squares at the best pair. Every profile is integrated over the
2 Angstrom bin, as the flux-conserving rebin averages the spectrum over it.

All functions are jittable; `measure_lines_batch` vmaps over spectra.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ddm_jax import bpt
from ddm_jax.constants import EMISSION_LINES, SPEED_OF_LIGHT_KMS, binned_gaussian, wavelength_grid

# The lines measured and reported, in output order.
LINE_NAMES = ("hbeta", "oiii_5007", "oi_6300", "halpha", "nii_6548", "nii_6584", "sii_6717", "sii_6731")
LINES = {name: EMISSION_LINES[name] for name in LINE_NAMES}
# Fitted so that it does not bias the continuum, not reported.
EXTRA_LINES = {"oiii_4959": EMISSION_LINES["oiii_4959"]}
# The DDM was trained only on spectra with S/N > 8 in each of these (docs/model.md#training).
REQUIRED_LINES = ("halpha", "hbeta", "oiii_5007", "nii_6584", "sii_6717", "sii_6731")
SNR_MIN = 8.0

WINDOWS = ((4800.0, 5060.0), (6250.0, 6340.0), (6470.0, 6790.0))  # rest frame, Angstrom
BALMER = ("hbeta", "halpha")
# Stellar Balmer troughs, sigma in Angstrom: a core and wings, whose mix spans the narrow
# troughs of old populations and the broad ones of young (A-star dominated) ones.
ABSORPTION_SIGMA = (6.0, 20.0)

# Grid search: velocity shift (km/s) relative to the given z, and velocity dispersion (km/s)
# of the observed narrow lines (intrinsic and instrumental together).
# 11 x 11 points, three levels: steps of 100, 20, 4 km/s in velocity and of 35 %, 6 %, 1.2 %
# in sigma.
VELOCITY_RANGE = (-500.0, 500.0)
SIGMA_RANGE = (30.0, 600.0)
GRID_POINTS = 11
GRID_LEVELS = 3

_GRID = wavelength_grid().astype(np.float64)
_IDX = np.flatnonzero(np.any([(_GRID >= a) & (_GRID <= b) for a, b in WINDOWS], axis=0))
_X = _GRID[_IDX]
_WINDOW_OF = np.array([next(k for k, (a, b) in enumerate(WINDOWS) if a <= x <= b) for x in _X])
_EMISSION = np.array([*LINES.values(), *EXTRA_LINES.values()])
_N_PARAMS = len(_EMISSION) + len(BALMER) * len(ABSORPTION_SIGMA) + 2 * len(WINDOWS)


def _continuum_columns():
    """Per window: an offset and a slope over its half-width, zero elsewhere. (K, 2W), static."""
    cols = []
    for k, (a, b) in enumerate(WINDOWS):
        inside = (_WINDOW_OF == k).astype(np.float64)
        cols += [inside, inside * (_X - (a + b) / 2) / ((b - a) / 2)]
    return np.stack(cols, axis=1).astype(np.float32)


_CONTINUUM = _continuum_columns()


def design_matrix(velocity, sigma_v):
    """Model columns on the window bins for one (velocity, dispersion) pair, both km/s.

    Columns: emission lines (LINE_NAMES then EXTRA_LINES; amplitude = line flux),
    absorption (per Balmer line, per ABSORPTION_SIGMA), continuum. Returns (K, _N_PARAMS).
    """
    x = jnp.asarray(_X, jnp.float32)
    shift = 1.0 + velocity / SPEED_OF_LIGHT_KMS
    centres = jnp.asarray(_EMISSION, jnp.float32) * shift
    emission = binned_gaussian(x, centres, centres * sigma_v / SPEED_OF_LIGHT_KMS)
    balmer = jnp.repeat(jnp.asarray([LINES[b] for b in BALMER], jnp.float32) * shift, len(ABSORPTION_SIGMA))
    widths = jnp.tile(jnp.asarray(ABSORPTION_SIGMA, jnp.float32), len(BALMER))
    absorption = binned_gaussian(x, balmer, widths)
    return jnp.concatenate([emission, absorption, jnp.asarray(_CONTINUUM)], axis=1)


def _solve(design, flux, weight):
    """Weighted linear least squares. design (K, P), flux (K,), weight (K,) = ivar.

    Columns are scaled to unit weighted norm first (fluxes and continuum slopes differ by
    orders of magnitude); a column with no weighted data gets NaN. Returns params (P,),
    covariance (P, P), chi2 ().
    """
    root = jnp.sqrt(weight)
    a = design * root[:, None]
    norm = jnp.sqrt(jnp.sum(a**2, axis=0))
    usable = norm > 0
    a = a / jnp.where(usable, norm, 1.0)
    normal = a.T @ a + jnp.diag(jnp.where(usable, 0.0, 1.0))
    factor = jax.scipy.linalg.cho_factor(normal)
    inverse = jax.scipy.linalg.cho_solve(factor, jnp.eye(normal.shape[0], dtype=normal.dtype))
    scaled = inverse @ (a.T @ (flux * root))
    params = jnp.where(usable, scaled / jnp.where(usable, norm, 1.0), jnp.nan)
    scale = jnp.where(usable, 1.0 / jnp.where(usable, norm, 1.0), jnp.nan)
    covariance = inverse * scale[:, None] * scale[None, :]
    residual = design @ jnp.where(usable, params, 0.0) - flux
    return params, covariance, jnp.sum(weight * residual**2)


def _chi2(flux, weight, velocity, sigma_v):
    return _solve(design_matrix(velocity, sigma_v), flux, weight)[2]


def _grid_search(flux, weight):
    """Best (velocity, sigma): a GRID_POINTS grid over the whole range, then GRID_LEVELS - 1
    grids of the same shape spanning one step either side of the previous best point."""
    steps = jnp.linspace(-1.0, 1.0, GRID_POINTS)
    offsets = jnp.stack([g.ravel() for g in jnp.meshgrid(steps, steps, indexing="ij")], axis=1)
    log_sigma = np.log(SIGMA_RANGE)
    centre = jnp.array([np.mean(VELOCITY_RANGE), np.mean(log_sigma)], jnp.float32)
    half = jnp.array([np.ptp(VELOCITY_RANGE) / 2, np.ptp(log_sigma) / 2], jnp.float32)

    def level(carry, _):
        centre, half = carry
        points = centre + offsets * half
        chi2 = jax.lax.map(lambda p: _chi2(flux, weight, p[0], jnp.exp(p[1])), points)
        best = points[jnp.argmin(jnp.where(jnp.isfinite(chi2), chi2, jnp.inf))]
        return (best, half * 2 / (GRID_POINTS - 1)), None

    (best, _), _ = jax.lax.scan(level, (centre, half), None, length=GRID_LEVELS)
    return best[0], jnp.exp(best[1])


def _full_covariance(design, params, velocity, sigma_v, weight):
    """Covariance of the amplitudes with the velocity and width free too (linearised at the
    best fit): a strong line's flux trades off against the width, which the linear covariance
    at fixed width would ignore. Returns (P + 2, P + 2), amplitudes first."""
    safe = jnp.where(jnp.isfinite(params), params, 0.0)
    def model(v, s):
        return design_matrix(v, s) @ safe
    d_velocity, d_sigma = jax.jacfwd(model, argnums=(0, 1))(velocity, sigma_v)
    jacobian = jnp.concatenate([design, d_velocity[:, None], d_sigma[:, None]], axis=1)
    return _solve(jacobian, jnp.zeros_like(weight), weight)[1]


def measure_lines(flux, ivar):
    """Fit one rest-frame spectrum. flux, ivar: (2208,) on the rest-frame grid (ivar 0 = ignore).

    Returns a dict: line_flux, line_flux_err, line_snr (8,) in LINE_NAMES order (flux units
    times Angstrom); velocity, sigma (km/s) and rchi2 (chi^2 per degree of freedom), all ().
    """
    f = flux[_IDX]
    w = ivar[_IDX]
    velocity, sigma_v = _grid_search(f, w)
    design = design_matrix(velocity, sigma_v)
    params, _, chi2 = _solve(design, f, w)
    covariance = _full_covariance(design, params, velocity, sigma_v, w)
    n = len(LINE_NAMES)
    line_flux = params[:n]
    line_err = jnp.sqrt(jnp.diag(covariance)[:n])
    dof = jnp.sum(w > 0) - _N_PARAMS
    return {
        "line_flux": line_flux,
        "line_flux_err": line_err,
        "line_snr": line_flux / line_err,
        "velocity": velocity,
        "sigma": sigma_v,
        "rchi2": jnp.where(dof > 0, chi2 / jnp.maximum(dof, 1), jnp.nan),
    }


def _log_ratio(numerator, denominator):
    """log10(numerator / denominator); NaN unless both are positive."""
    ok = (numerator > 0) & (denominator > 0)
    return jnp.where(ok, jnp.log10(jnp.where(ok, numerator / jnp.where(ok, denominator, 1.0), 1.0)), jnp.nan)


def line_ratios(line_flux, scheme: str = "standard"):
    """BPT ratios and classes from fluxes (..., 8) in LINE_NAMES order.

    Returns log_nii_ha, log_oiii_hb, log_sii_ha ([SII]6717+6731), log_oi_ha, bpt_nii, bpt_sii.
    """
    get = {name: line_flux[..., i] for i, name in enumerate(LINE_NAMES)}
    ratios = {
        "log_nii_ha": _log_ratio(get["nii_6584"], get["halpha"]),
        "log_oiii_hb": _log_ratio(get["oiii_5007"], get["hbeta"]),
        "log_sii_ha": _log_ratio(get["sii_6717"] + get["sii_6731"], get["halpha"]),
        "log_oi_ha": _log_ratio(get["oi_6300"], get["halpha"]),
    }
    ratios["bpt_nii"] = bpt.classify_nii(ratios["log_nii_ha"], ratios["log_oiii_hb"], scheme)
    ratios["bpt_sii"] = bpt.classify_sii(ratios["log_sii_ha"], ratios["log_oiii_hb"])
    return ratios


def meets_snr(line_snr):
    """True where every REQUIRED_LINES S/N exceeds SNR_MIN (NaN fails). (..., 8) -> (...)."""
    cols = jnp.asarray([LINE_NAMES.index(name) for name in REQUIRED_LINES])
    return jnp.all(line_snr[..., cols] > SNR_MIN, axis=-1)


measure_lines_batch = jax.jit(jax.vmap(measure_lines))  # (B, 2208) x2 -> dict of (B, ...)
