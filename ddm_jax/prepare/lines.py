"""Emission lines of rest-frame spectra: a batched least-squares fit on what the stellar continuum
(`continuum`) leaves, fluxes that cannot be negative, fit-quality flags and a broad-Balmer test.

The model, per spectrum, over three windows of the continuum-subtracted spectrum:
- narrow emission Gaussians (the reported lines and [OIII]4959), sharing one velocity shift
  and one velocity width, with non-negative amplitudes (a line not detected has flux 0: its
  3-sigma upper limit is 3 x line_flux_err);
- a linear baseline per window, for what the continuum fit leaves.
Stellar absorption is the continuum's: no absorption term competes with the emission here.
For a given (velocity, width) everything is linear; those two are found by a grid search on
chi^2 over the whole of VELOCITY_RANGE and SIGMA_RANGE that zooms in twice; a best point
within one final step of a range's edge is flagged. Every profile is integrated over the
2 Angstrom bin, as the flux-conserving rebin averages the spectrum over it.

Broad Balmer lines (type-1 AGN): the fit is repeated with a broad Gaussian at Hbeta and one
at Halpha (BROAD_SIGMAS); a broad Halpha detected at S/N > BROAD_SNR_MIN that lowers chi^2 by
more than BROAD_DELTA_CHI2_MIN sets `broad_balmer`.

All functions are jittable and written for one spectrum; `fit.fit_batch` vmaps them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ddm_jax.constants import (
    BROAD_DELTA_CHI2_MIN,
    BROAD_SNR_MIN,
    EMISSION_LINES,
    LINE_NAMES,
    REQUIRED_LINES,
    SNR_MIN,
    SPEED_OF_LIGHT_KMS,
    binned_gaussian,
    wavelength_grid,
)
from ddm_jax.model import bpt

LINES = {name: EMISSION_LINES[name] for name in LINE_NAMES}
# Fitted so that it does not bias the baseline, not reported.
EXTRA_LINES = {"oiii_4959": EMISSION_LINES["oiii_4959"]}

WINDOWS = ((4800.0, 5060.0), (6250.0, 6340.0), (6470.0, 6790.0))  # rest frame, Angstrom

# Grid search: velocity shift (km/s) relative to the given z, and velocity dispersion (km/s)
# of the observed narrow lines (intrinsic and instrumental together). The first level has
# 100 km/s steps over +-1200 km/s (a real galaxy's gas is within a few hundred km/s of its
# catalogue redshift; the margin keeps the edge, which is flagged, beyond +-1000 km/s), and
# 7 widths; two zooms of 11 x 11 points one step either side refine it (to 4 km/s).
VELOCITY_RANGE = (-1200.0, 1200.0)
SIGMA_RANGE = (30.0, 600.0)
COARSE_POINTS = (25, 7)
ZOOM_POINTS = 11
ZOOM_LEVELS = 2
NONNEGATIVE_ROUNDS = 3  # drop the lines fitted negative and solve again, this many times

# Broad Balmer test: FWHM 2800-7000 km/s, the broad-line region of type-1 AGN.
BROAD_SIGMAS = (1200.0, 2000.0, 3000.0)

_GRID = wavelength_grid().astype(np.float64)
_IDX = np.flatnonzero(np.any([(_GRID >= a) & (_GRID <= b) for a, b in WINDOWS], axis=0))
_X = _GRID[_IDX]
_WINDOW_OF = np.array([next(k for k, (a, b) in enumerate(WINDOWS) if a <= x <= b) for x in _X])
_EMISSION = np.array([*LINES.values(), *EXTRA_LINES.values()])
_N_EMISSION = len(_EMISSION)
_BROAD = np.array([LINES["hbeta"], LINES["halpha"]])


def _baseline_columns():
    """Per window: an offset and a slope over its half-width, zero elsewhere. (K, 2W), static."""
    cols = []
    for k, (a, b) in enumerate(WINDOWS):
        inside = (_WINDOW_OF == k).astype(np.float64)
        cols += [inside, inside * (_X - (a + b) / 2) / ((b - a) / 2)]
    return np.stack(cols, axis=1).astype(np.float32)


_BASELINE = _baseline_columns()
_N_PARAMS = _N_EMISSION + _BASELINE.shape[1]


def design_matrix(velocity, sigma_v):
    """Model columns on the window bins for one (velocity, dispersion) pair, both km/s.

    Columns: emission lines (LINE_NAMES then EXTRA_LINES; amplitude = line flux), baseline.
    Returns (K, _N_PARAMS).
    """
    x = jnp.asarray(_X, jnp.float32)
    centres = jnp.asarray(_EMISSION, jnp.float32) * (1.0 + velocity / SPEED_OF_LIGHT_KMS)
    emission = binned_gaussian(x, centres, centres * sigma_v / SPEED_OF_LIGHT_KMS)
    return jnp.concatenate([emission, jnp.asarray(_BASELINE)], axis=1)


def _broad_columns(velocity, sigma_v):
    """Broad Hbeta and Halpha at the narrow lines' velocity. (K, 2)."""
    x = jnp.asarray(_X, jnp.float32)
    centres = jnp.asarray(_BROAD, jnp.float32) * (1.0 + velocity / SPEED_OF_LIGHT_KMS)
    return binned_gaussian(x, centres, centres * sigma_v / SPEED_OF_LIGHT_KMS)


def _solve(design, flux, weight):
    """Weighted linear least squares. design (K, P), flux (K,), weight (K,) = ivar.

    Columns are scaled to unit weighted norm first (fluxes and baseline slopes differ by
    orders of magnitude); a column with no weighted data (or dropped: all zeros) gets NaN.
    Returns params (P,), covariance (P, P), chi2 ().
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


def _solve_nonnegative(design, flux, weight, n_nonnegative: int):
    """`_solve` with the first `n_nonnegative` amplitudes held >= 0: lines fitted negative are
    dropped (fixed at 0) and the rest solved again. Returns params (P,) with 0 for dropped
    lines and NaN for unconstrained columns, and chi2."""
    is_line = jnp.arange(design.shape[1]) < n_nonnegative
    keep = jnp.ones(design.shape[1], bool)
    for _ in range(NONNEGATIVE_ROUNDS):
        params, _, chi2 = _solve(design * keep, flux, weight)
        keep = keep & ~(is_line & (params < 0))
    params, _, chi2 = _solve(design * keep, flux, weight)
    return jnp.where(is_line, jnp.where(keep & (params > 0), params, 0.0), params), chi2


def _chi2(flux, weight, velocity, sigma_v):
    return _solve_nonnegative(design_matrix(velocity, sigma_v), flux, weight, _N_EMISSION)[1]


def _grid_search(flux, weight, start=None):
    """Best (velocity, sigma) and whether either lies within one final step of its range's edge.
    From `start` (velocity, sigma) of an earlier pass: its neighbourhood only (the coarse grid and
    the first zoom are skipped)."""
    log_sigma = np.log(SIGMA_RANGE)
    v = jnp.linspace(*VELOCITY_RANGE, COARSE_POINTS[0])
    s = jnp.linspace(*log_sigma, COARSE_POINTS[1])
    step = jnp.array([v[1] - v[0], s[1] - s[0]])
    low = jnp.array([VELOCITY_RANGE[0], log_sigma[0]], jnp.float32)
    high = jnp.array([VELOCITY_RANGE[1], log_sigma[1]], jnp.float32)

    def best_of(points):
        chi2 = jax.lax.map(lambda p: _chi2(flux, weight, p[0], jnp.exp(p[1])), points)
        return points[jnp.argmin(jnp.where(jnp.isfinite(chi2), chi2, jnp.inf))]

    zooms = ZOOM_LEVELS
    if start is None:
        best = best_of(jnp.stack([g.ravel() for g in jnp.meshgrid(v, s, indexing="ij")], axis=1))
    else:
        best, step, zooms = jnp.stack([start[0], jnp.log(start[1])]), step * 2 / (ZOOM_POINTS - 1), zooms - 1
    offsets = jnp.linspace(-1.0, 1.0, ZOOM_POINTS)
    zoom = jnp.stack([g.ravel() for g in jnp.meshgrid(offsets, offsets, indexing="ij")], axis=1)
    for _ in range(zooms):
        best = best_of(jnp.clip(best + zoom * step, low, high))
        step = step * 2 / (ZOOM_POINTS - 1)
    at_edge = (best - low < step) | (high - best < step)
    return best[0], jnp.clip(jnp.exp(best[1]), *SIGMA_RANGE), at_edge[0], at_edge[1]  # exp(log) rounds


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


def _broad_test(flux, weight, design, velocity, chi2_narrow):
    """The best broad Balmer pair at the narrow velocity: (Halpha flux, its error, chi^2 gain)."""
    def with_broad(sigma_b):
        columns = jnp.concatenate([_broad_columns(velocity, sigma_b), design], axis=1)
        params, chi2 = _solve_nonnegative(columns, flux, weight, 2 + _N_EMISSION)
        _, covariance, _ = _solve(columns, flux, weight)
        return params[1], jnp.sqrt(covariance[1, 1]), chi2_narrow - chi2

    flux_b, error_b, gain = jax.vmap(with_broad)(jnp.asarray(BROAD_SIGMAS, jnp.float32))
    best = jnp.argmax(jnp.where(jnp.isfinite(gain), gain, -jnp.inf))
    return flux_b[best], error_b[best], gain[best]


def measure_lines(flux, ivar, start=None):
    """Fit one continuum-subtracted rest-frame spectrum. flux, ivar: (2208,) on the rest-frame
    grid (ivar 0 = ignore); `start`: (velocity, sigma) of an earlier fit, searched about.

    Returns a dict: line_flux (>= 0), line_flux_err, line_snr (8,) in LINE_NAMES order (flux units
    times Angstrom); velocity, sigma (km/s), rchi2 (chi^2 per degree of freedom), velocity_at_edge,
    sigma_at_edge, broad_flux, broad_flux_err (broad Halpha), broad_delta_chi2, broad_balmer, all ();
    line_model (2208,): the fitted narrow lines (zero outside the windows).
    """
    f = flux[_IDX]
    w = ivar[_IDX]
    velocity, sigma_v, velocity_at_edge, sigma_at_edge = _grid_search(f, w, start)
    design = design_matrix(velocity, sigma_v)
    params, chi2 = _solve_nonnegative(design, f, w, _N_EMISSION)
    covariance = _full_covariance(design, params, velocity, sigma_v, w)
    n = len(LINE_NAMES)
    line_flux = params[:n]
    line_err = jnp.sqrt(jnp.diag(covariance)[:n])
    dof = jnp.sum(w > 0) - _N_PARAMS - 2
    broad_flux, broad_err, gain = _broad_test(f, w, design, velocity, chi2)
    return {
        "line_flux": line_flux,
        "line_flux_err": line_err,
        "line_snr": line_flux / line_err,
        "velocity": velocity,
        "sigma": sigma_v,
        "rchi2": jnp.where(dof > 0, chi2 / jnp.maximum(dof, 1), jnp.nan),
        "velocity_at_edge": velocity_at_edge,
        "sigma_at_edge": sigma_at_edge,
        "broad_flux": broad_flux,
        "broad_flux_err": broad_err,
        "broad_delta_chi2": gain,
        "broad_balmer": (broad_flux / broad_err > BROAD_SNR_MIN) & (gain > BROAD_DELTA_CHI2_MIN),
        "line_model": jnp.zeros_like(flux).at[_IDX].set(design[:, :_N_EMISSION] @ params[:_N_EMISSION]),
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
