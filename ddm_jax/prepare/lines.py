"""Emission lines of rest-frame spectra: a batched least-squares fit on what the stellar continuum
(`continuum`) leaves, honest errors, fit-quality flags, a second component and a broad-Balmer test.

The narrow model (`line_model`): tied doublets, [SII] held in its physical ratio range, one velocity,
a Balmer and a forbidden width, non-negative amplitudes (a line not detected has flux 0: its 3-sigma
upper limit is 3 x line_flux_err), a linear baseline per window. For a given set of kinematics
everything is linear; those are found by grid searches on chi^2 (a best point within one final step
of a range's edge is flagged).

Two extra components are tried, each kept only when it earns its parameters (broad lines first,
against the narrow lines alone, so that a wing cannot stand in for them; wings only on a pass
started from an earlier one, `start`, and not where broad lines are kept):
- wings: a second Gaussian in every line, with its own velocity and a width WING_WIDTH_FACTORS
  times the forbidden lines' (outflows: AGN's blue [OIII] wings), kept when the BIC drops by more
  than WING_DELTA_BIC_MIN;
- broad Balmer lines (type-1 AGN): a broad Gaussian at Hbeta and one at Halpha (BROAD_SIGMAS) at the
  narrow velocity; `broad_balmer` when the broad Halpha (the broad Hbeta where Halpha's pixels have no
  data) is detected at S/N > BROAD_SNR_MIN and chi^2 drops by more than BROAD_DELTA_CHI2_MIN (which is
  above the BIC's penalty, 3 ln N ~ 18, for N ~ 450 bins). A type-1's broad Halpha is >= ~3 times its
  broad Hbeta, so where Halpha is measured it decides: a broad Hbeta alone there is the stellar Balmer
  trough mis-fitted (a power law with Lorentzian troughs gave a broad Hbeta at S/N 21).
The reported line fluxes are always the narrow component's; `wing_flux` and `broad_flux` hold the
others, `line_model` the whole emission model.

Errors (line_flux_err): the linearised covariance with the kinematics free, times sqrt(max(1,
rchi2)) (the gate accepts line rchi2 up to 10: the data scatter more than their ivar says), times
sqrt of the rebin's variance inflation over the line's bins (`spectra.covariance`). line_amp_noise is
the fitted peak over the residual noise of the line's window (A/N).

All functions are jittable and written for one spectrum; `fit.fit_batch` vmaps them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ddm_jax.constants import (
    BROAD_DELTA_CHI2_MIN,
    BROAD_SNR_MIN,
    LINE_NAMES,
    REQUIRED_LINES,
    SNR_MIN,
    SPEED_OF_LIGHT_KMS,
    WING_DELTA_BIC_MIN,
    binned_gaussian,
)
from ddm_jax.model import bpt
from ddm_jax.prepare import line_model as lm
from ddm_jax.prepare.line_model import (  # noqa: F401  (the public names of the line fit)
    EXTRA_LINES,
    LINES,
    SIGMA_RANGE,
    VELOCITY_RANGE,
    WINDOWS,
)

# Broad Balmer test: FWHM 2800-7000 km/s, the broad-line region of type-1 AGN.
BROAD_SIGMAS = (1200.0, 2000.0, 3000.0)
_BROAD = np.array([LINES["hbeta"], LINES["halpha"]], np.float32)
# Window bins near Halpha: with no data in any of them, the broad Hbeta decides the broad test.
_NEAR_HALPHA = np.abs(lm.X - LINES["halpha"]) <= 30.0

# Wing search: velocity of the wings relative to the narrow lines (km/s; outflows are mostly blue),
# their width as a multiple of the forbidden lines' (capped below the broad test's), and then the
# narrow widths rescaled with the wings in (a single-Gaussian fit widened them to cover the wings).
WING_VELOCITIES = np.linspace(-800.0, 400.0, 7)
WING_WIDTH_FACTORS = np.geomspace(1.6, 6.0, 5)
WING_SIGMA_MAX = 1000.0
NARROW_RESCALE = np.geomspace(0.5, 1.0, 7)
WING_EXTRA_PARAMS = lm.N_AMPLITUDES + 2  # amplitudes, velocity and width
_SINGLE_PARAMS = 3 + lm.N_AMPLITUDES + lm.BASELINE.shape[1]  # kinematics, amplitudes, baseline

_N_NARROW = lm.N_AMPLITUDES
# Columns of the full model: broad (2) | narrow | wing | baseline.
_NARROW0, _WING0 = 2, 2 + _N_NARROW
_N_FULL = 2 + 2 * _N_NARROW + lm.BASELINE.shape[1]
_IS_LINE = np.arange(_N_FULL) < _WING0 + _N_NARROW


def _full_design(narrow, wing, broad):
    """(K, _N_FULL) from the narrow (K, 7), wing (K, 7) and broad (K, 2) columns."""
    return jnp.concatenate([broad, narrow, wing, jnp.asarray(lm.BASELINE)], axis=1)


def _broad_columns(velocity, sigma_v):
    """Broad Hbeta and Halpha at the narrow lines' velocity. (K, 2)."""
    x = jnp.asarray(lm.X, jnp.float32)
    centres = jnp.asarray(_BROAD) * (1.0 + velocity / SPEED_OF_LIGHT_KMS)
    return binned_gaussian(x, centres, centres * sigma_v / SPEED_OF_LIGHT_KMS)


def _wing_search(f, w, velocity, sigma_b, sigma_f):
    """Best wing (velocity, width) with the narrow lines fixed, the narrow widths' rescale with that
    wing, then both once more about their best (half steps). Returns the design (K, _N_FULL),
    params, chi2, the [SII] ratio tied, wing velocity and width, and the narrow rescale."""
    no_broad = jnp.zeros((lm.IDX.size, 2), jnp.float32)

    def design(p, k):  # p: wing (velocity offset, sigma); k: narrow rescale
        wing = lm.line_columns(velocity + p[0], p[1], p[1])
        return _full_design(lm.line_columns(velocity, sigma_b * k, sigma_f * k), wing, no_broad)

    def chi2(p, k):
        return lm.solve_nonnegative(design(p, k), f, w, _IS_LINE)[1]

    widths = jnp.minimum(sigma_f * jnp.asarray(WING_WIDTH_FACTORS, jnp.float32), WING_SIGMA_MAX)
    grid = jnp.stack([g.ravel() for g in jnp.meshgrid(jnp.asarray(WING_VELOCITIES, jnp.float32), widths,
                                                      indexing="ij")], axis=1)
    best = lm.best_of(grid, lambda p: chi2(p, 1.0))
    k = lm.best_of(jnp.asarray(NARROW_RESCALE, jnp.float32), lambda k: chi2(best, k))
    # half a coarse step either side: velocity in 50 km/s, width in ln steps of a quarter of the grid's
    half = jnp.array([WING_VELOCITIES[1] - WING_VELOCITIES[0], np.log(WING_WIDTH_FACTORS[1] / WING_WIDTH_FACTORS[0])],
                     jnp.float32) / 2
    offsets = jnp.linspace(-1.0, 1.0, 5)
    zoom = jnp.stack([g.ravel() for g in jnp.meshgrid(offsets, offsets, indexing="ij")], axis=1) * half
    best = lm.best_of(jnp.stack([best[0] + zoom[:, 0], jnp.minimum(best[1] * jnp.exp(zoom[:, 1]), WING_SIGMA_MAX)],
                                axis=1), lambda p: chi2(p, k))
    step = NARROW_RESCALE[1] / NARROW_RESCALE[0]
    k = lm.best_of(k * jnp.asarray(np.geomspace(1 / np.sqrt(step), np.sqrt(step), 5), jnp.float32),
                   lambda k: chi2(best, k))
    params, chi2_kept, used, ratio = _bounded(design(best, k), f, w)
    return used, params, chi2_kept, ratio, velocity + best[0], best[1], k


def _bounded(design, f, w):
    """lm.solve_sii_bounded on the full layout."""
    return lm.solve_sii_bounded(design, f, w, _IS_LINE, offset=_NARROW0)


def _broad_test(f, w, design, velocity, chi2_without):
    """The best broad Balmer pair added to `design` (its broad columns zero). Returns the design with
    it, params, chi2, chi^2 gain, and the broad Hbeta and Halpha S/N (errors scaled by rchi2)."""
    n_points = jnp.sum(w > 0)

    def with_broad(sigma_b):
        columns = design.at[:, :2].set(_broad_columns(velocity, sigma_b))
        params, chi2 = lm.solve_nonnegative(columns, f, w, _IS_LINE)
        _, covariance, _ = lm.solve(columns, f, w)
        rchi2 = chi2 / jnp.maximum(n_points - _N_FULL, 1)
        snr = params[:2] / jnp.sqrt(jnp.diag(covariance)[:2] * jnp.maximum(1.0, rchi2))
        return columns, params, chi2, chi2_without - chi2, jnp.where(jnp.isfinite(snr), snr, 0.0)

    columns, params, chi2, gain, snr = jax.vmap(with_broad)(jnp.asarray(BROAD_SIGMAS, jnp.float32))
    best = jnp.argmax(jnp.where(jnp.isfinite(gain), gain, -jnp.inf))
    return columns[best], params[best], chi2[best], gain[best], snr[best]


def _covariance(design, params, kinematics, weight):
    """Covariance of every amplitude with the kinematics free too (linearised at the best fit): a
    strong line's flux trades off against its width, and a narrow line against its wing, which the
    covariance at fixed kinematics would ignore. kinematics: narrow velocity, Balmer and forbidden
    widths, wing velocity and width. Returns (_N_FULL + 5, _N_FULL + 5), amplitudes first."""
    narrow = jnp.nan_to_num(params[_NARROW0:_NARROW0 + _N_NARROW])
    wing = jnp.nan_to_num(params[_WING0:_WING0 + _N_NARROW])

    def model(v, sb, sf, wing_v, wing_sigma):
        return lm.line_columns(v, sb, sf) @ narrow + lm.line_columns(wing_v, wing_sigma, wing_sigma) @ wing

    derivatives = jax.jacfwd(model, argnums=tuple(range(5)))(*kinematics)
    jacobian = jnp.concatenate([design, jnp.stack(derivatives, axis=1)], axis=1)
    return lm.solve(jacobian, jnp.zeros_like(weight), weight)[1]


def _report(values):
    """Amplitude-column values (..., 7) -> reported lines (..., 8) (a weak doublet member scaled)."""
    return values @ jnp.asarray(lm.REPORT)


def measure_lines(flux, ivar, start=None, inflation=None):
    """Fit one continuum-subtracted rest-frame spectrum. flux, ivar: (2208,) on the rest-frame grid
    (ivar 0 = ignore); `start`: (velocity, sigma) of an earlier fit, searched about (and then the
    widths split and the second components tried); inflation (2208,): the rebin's variance
    inflation per bin (`spectra.covariance`; None: 1, uncorrelated bins).

    Returns a dict: line_flux (>= 0), line_flux_err, line_snr, line_amp_noise, wing_flux (8,) in
    LINE_NAMES order (flux units times Angstrom); velocity, sigma (forbidden lines), sigma_balmer
    (km/s), rchi2 (chi^2 per degree of freedom of the kept model), velocity_at_edge, sigma_at_edge,
    sii_at_bound, wing, wing_velocity, wing_sigma, wing_delta_bic, broad_flux, broad_flux_err
    (the best broad Halpha, kept or not), broad_snr (broad Halpha's, or Hbeta's where Halpha has no data),
    broad_delta_chi2, broad_balmer, all (); line_model (2208,): the fitted emission (zero outside the windows).
    """
    f, w = flux[lm.IDX], ivar[lm.IDX]
    n_points = jnp.sum(w > 0)
    velocity, sigma_v, velocity_at_edge, sigma_at_edge = lm.grid_search(f, w, start)
    sigma_b, sigma_f = sigma_v, sigma_v
    no_extra = jnp.zeros((lm.IDX.size, _N_NARROW), jnp.float32)
    no_broad = jnp.zeros((lm.IDX.size, 2), jnp.float32)
    if start is not None:
        sigma_b, sigma_f, split_edge = lm.split_widths(f, w, velocity, sigma_v)
        sigma_at_edge = sigma_at_edge | split_edge
    single = _full_design(lm.line_columns(velocity, sigma_b, sigma_f), no_extra, no_broad)
    params, chi2, design, sii_ratio = _bounded(single, f, w)
    # broad lines first, against the narrow lines alone: a wing in Halpha would stand in for them
    b_design, b_params, b_chi2, gain, broad_snr = _broad_test(f, w, design, velocity, chi2)
    deciding_snr = jnp.where(jnp.any((w > 0) & _NEAR_HALPHA), broad_snr[1], broad_snr[0])
    broad = (deciding_snr > BROAD_SNR_MIN) & (gain > BROAD_DELTA_CHI2_MIN)
    wing, delta_bic, wing_v, wing_sigma = False, jnp.nan, jnp.nan, jnp.nan
    if start is not None:
        w_design, w_params, w_chi2, w_ratio, wing_v, wing_sigma, k = _wing_search(f, w, velocity, sigma_b, sigma_f)
        w_rchi2 = w_chi2 / jnp.maximum(n_points - _SINGLE_PARAMS - WING_EXTRA_PARAMS, 1)
        delta_bic = (chi2 - w_chi2) / jnp.maximum(1.0, w_rchi2) - WING_EXTRA_PARAMS * jnp.log(n_points)
        wing = (delta_bic > WING_DELTA_BIC_MIN) & ~broad
        design, params, chi2 = (jnp.where(wing, a, b) for a, b in ((w_design, design), (w_params, params),
                                                                  (w_chi2, chi2)))
        sii_ratio = jnp.where(wing, w_ratio, sii_ratio)
        sigma_b, sigma_f = jnp.where(wing, sigma_b * k, sigma_b), jnp.where(wing, sigma_f * k, sigma_f)
    design, params, chi2 = (jnp.where(broad, a, b) for a, b in ((b_design, design), (b_params, params), (b_chi2, chi2)))
    params = jnp.where(jnp.isfinite(params), params, jnp.where(_IS_LINE, 0.0, params))
    free = _SINGLE_PARAMS + jnp.where(wing, WING_EXTRA_PARAMS, 0) + jnp.where(broad, 3, 0)
    dof = n_points - free
    rchi2 = jnp.where(dof > 0, chi2 / jnp.maximum(dof, 1), jnp.nan)

    held = (jnp.nan_to_num(wing_v, nan=velocity), jnp.nan_to_num(wing_sigma, nan=sigma_f))  # no wing: no columns
    covariance = _covariance(design, params, (velocity, sigma_b, sigma_f, *held), w)
    narrow_slice = slice(_NARROW0, _NARROW0 + _N_NARROW)
    amplitudes = params[narrow_slice]
    error = jnp.sqrt(jnp.diag(covariance)[narrow_slice])
    a, b = lm.SII
    error = jnp.where((sii_ratio > 0) & (jnp.arange(_N_NARROW) == a), sii_ratio * error[b], error)
    columns = lm.line_columns(velocity, sigma_b, sigma_f)
    inflation = jnp.ones_like(w) if inflation is None else inflation[lm.IDX]
    u = columns**2 * w[:, None]
    total = jnp.sum(u, axis=0)
    factor = jnp.where(total > 0, jnp.sum(u * inflation[:, None], axis=0) / jnp.where(total > 0, total, 1.0), 1.0)
    error = error * jnp.sqrt(jnp.maximum(1.0, rchi2) * factor)

    residual = jnp.where(w > 0, f - design @ jnp.nan_to_num(params), 0.0)
    window = jnp.asarray(lm.WINDOW_OF)[:, None] == jnp.arange(len(WINDOWS))[None, :]
    used = window & (w > 0)[:, None]
    noise = jnp.sqrt(jnp.sum(used * residual[:, None] ** 2, axis=0) / jnp.maximum(jnp.sum(used, axis=0), 1))
    peak = _report(amplitudes * jnp.max(columns, axis=0))
    line_flux, line_err = _report(amplitudes), _report(error)
    emission = design[:, :_WING0 + _N_NARROW] @ jnp.nan_to_num(params[:_WING0 + _N_NARROW])
    broad_err = jnp.where(broad_snr[1] > 0, b_params[1] / jnp.where(broad_snr[1] > 0, broad_snr[1], 1.0), jnp.nan)
    return {
        "line_flux": line_flux, "line_flux_err": line_err, "line_snr": line_flux / line_err,
        "line_amp_noise": peak / noise[jnp.asarray(lm.LINE_WINDOW)],
        "wing_flux": _report(jnp.nan_to_num(params[_WING0:_WING0 + _N_NARROW])),
        "velocity": velocity, "sigma": sigma_f, "sigma_balmer": sigma_b, "rchi2": rchi2,
        "velocity_at_edge": velocity_at_edge, "sigma_at_edge": sigma_at_edge, "sii_at_bound": sii_ratio > 0,
        "wing": jnp.asarray(wing), "wing_velocity": jnp.where(wing, wing_v, jnp.nan),
        "wing_sigma": jnp.where(wing, wing_sigma, jnp.nan), "wing_delta_bic": jnp.asarray(delta_bic, jnp.float32),
        "broad_flux": jnp.nan_to_num(b_params[1]), "broad_flux_err": broad_err,
        "broad_snr": deciding_snr, "broad_delta_chi2": gain, "broad_balmer": broad,
        "line_model": jnp.zeros_like(flux).at[lm.IDX].set(emission),
    }


def _log_ratio(numerator, denominator):
    """log10(numerator / denominator); NaN unless both are positive."""
    ok = (numerator > 0) & (denominator > 0)
    return jnp.where(ok, jnp.log10(jnp.where(ok, numerator / jnp.where(ok, denominator, 1.0), 1.0)), jnp.nan)


def line_ratios(line_flux, scheme: str = "standard"):
    """BPT ratios and classes from fluxes (..., 8) in LINE_NAMES order.

    Returns log_nii_ha, log_oiii_hb, log_sii_ha ([SII]6717+6731), log_oi_ha, bpt_nii, bpt_sii, bpt_oi
    and bpt_kewley06 (the three diagrams together).
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
    ratios["bpt_oi"] = bpt.classify_oi(ratios["log_oi_ha"], ratios["log_oiii_hb"])
    ratios["bpt_kewley06"] = bpt.classify_kewley06(ratios["log_nii_ha"], ratios["log_sii_ha"], ratios["log_oi_ha"],
                                                   ratios["log_oiii_hb"])
    return ratios


def meets_snr(line_snr):
    """True where every REQUIRED_LINES S/N exceeds SNR_MIN (NaN fails). (..., 8) -> (...)."""
    cols = jnp.asarray([LINE_NAMES.index(name) for name in REQUIRED_LINES])
    return jnp.all(line_snr[..., cols] > SNR_MIN, axis=-1)
