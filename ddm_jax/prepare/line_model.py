"""The emission-line model of `lines`: its columns, its linear solves and its kinematic searches.

Amplitude columns (AMPLITUDES, each a line flux): Hbeta, [OIII]5007, [OI]6300, Halpha, [NII]6584,
[SII]6717, [SII]6731; a doublet's weak member rides in its strong line's column at the atomic ratio
(constants.DOUBLET_RATIOS), so the ratio holds exactly. Balmer lines have one velocity dispersion,
the forbidden lines another; both share one velocity shift (the narrow-line gas of one galaxy: a
second shift would trade against Hbeta's trough on weak Balmer lines, and the [OIII] wings that do
move are the second component's job). A linear baseline per window takes what the continuum fit
leaves. Every profile is integrated over the 2 Angstrom bin, as the flux-conserving rebin averages
the spectrum over it. All functions are jittable and for one spectrum.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ddm_jax.constants import (
    BALMER_LINES,
    DOUBLET_RATIOS,
    EMISSION_LINES,
    LINE_NAMES,
    SII_RATIO_RANGE,
    SPEED_OF_LIGHT_KMS,
    binned_gaussian,
    wavelength_grid,
)

LINES = {name: EMISSION_LINES[name] for name in LINE_NAMES}
EXTRA_LINES = {name: EMISSION_LINES[name] for name in DOUBLET_RATIOS if name not in LINES}  # fitted, not reported
AMPLITUDES = tuple(name for name in LINE_NAMES if name not in DOUBLET_RATIOS)
N_AMPLITUDES = len(AMPLITUDES)
SII = AMPLITUDES.index("sii_6717"), AMPLITUDES.index("sii_6731")

WINDOWS = ((4800.0, 5060.0), (6250.0, 6400.0), (6470.0, 6790.0))  # rest frame, Angstrom

# Grid search: velocity shift (km/s) relative to the given z, and velocity dispersion (km/s) of the
# observed narrow lines (intrinsic and instrumental together). The first level has 100 km/s steps
# over +-1200 km/s (the margin keeps the edge, which is flagged, beyond +-1000 km/s) and 7 widths;
# two zooms of 11 x 11 points one step either side refine it (to 4 km/s). The Balmer and forbidden
# widths then split from the shared one: zooms of 7 x 7 points over +-SPLIT_HALF_RANGES in ln sigma.
VELOCITY_RANGE = (-1200.0, 1200.0)
SIGMA_RANGE = (30.0, 600.0)
COARSE_POINTS = (25, 7)
ZOOM_POINTS = 11
ZOOM_LEVELS = 2
SPLIT_POINTS, SPLIT_HALF_RANGES = 7, (0.3, 0.1)
NONNEGATIVE_ROUNDS = 3  # drop the lines fitted negative and solve again, this many times

_GRID = wavelength_grid().astype(np.float64)
IDX = np.flatnonzero(np.any([(_GRID >= a) & (_GRID <= b) for a, b in WINDOWS], axis=0))
X = _GRID[IDX]
WINDOW_OF = np.array([next(k for k, (a, b) in enumerate(WINDOWS) if a <= x <= b) for x in X])


def _profiles():
    """Every fitted line: rest wavelength (M,), amplitude column (M,), flux per unit amplitude (M,),
    Balmer or not (M,). Static."""
    rows = [(LINES[name], AMPLITUDES.index(name), 1.0) for name in AMPLITUDES]
    rows += [(EMISSION_LINES[weak], AMPLITUDES.index(strong), 1.0 / ratio)
             for weak, (strong, ratio) in DOUBLET_RATIOS.items()]
    centre, column, share = (np.array(v) for v in zip(*rows))
    balmer = np.isin(column, [AMPLITUDES.index(name) for name in BALMER_LINES])
    tie = np.zeros((len(rows), N_AMPLITUDES), np.float32)
    tie[np.arange(len(rows)), column] = share
    return centre.astype(np.float32), tie, balmer


_CENTRES, _TIE, _IS_BALMER = _profiles()
# Reported fluxes (LINE_NAMES) from the amplitudes: a weak doublet member is its strong line / ratio.
REPORT = np.zeros((N_AMPLITUDES, len(LINE_NAMES)), np.float32)
for _k, _name in enumerate(LINE_NAMES):
    _strong, _ratio = DOUBLET_RATIOS.get(_name, (_name, 1.0))
    REPORT[AMPLITUDES.index(_strong), _k] = 1.0 / _ratio
# Each reported line's window (for its residual noise).
LINE_WINDOW = np.array([next(k for k, (a, b) in enumerate(WINDOWS) if a <= LINES[n] <= b) for n in LINE_NAMES])


def _baseline_columns():
    """Per window: an offset and a slope over its half-width, zero elsewhere. (K, 2W), static."""
    cols = []
    for k, (a, b) in enumerate(WINDOWS):
        inside = (WINDOW_OF == k).astype(np.float64)
        cols += [inside, inside * (X - (a + b) / 2) / ((b - a) / 2)]
    return np.stack(cols, axis=1).astype(np.float32)


BASELINE = _baseline_columns()


def line_columns(velocity, sigma_balmer, sigma_forbidden):
    """The amplitude columns (AMPLITUDES) on the window bins, widths in km/s. (K, N_AMPLITUDES)."""
    x = jnp.asarray(X, jnp.float32)
    centres = jnp.asarray(_CENTRES) * (1.0 + velocity / SPEED_OF_LIGHT_KMS)
    sigma_v = jnp.where(jnp.asarray(_IS_BALMER), sigma_balmer, sigma_forbidden)
    return binned_gaussian(x, centres, centres * sigma_v / SPEED_OF_LIGHT_KMS) @ jnp.asarray(_TIE)


def design_matrix(velocity, sigma_balmer, sigma_forbidden):
    """Amplitude columns then the baseline: (K, N_AMPLITUDES + 6)."""
    return jnp.concatenate([line_columns(velocity, sigma_balmer, sigma_forbidden), jnp.asarray(BASELINE)], axis=1)


def solve(design, flux, weight):
    """Weighted linear least squares. design (K, P), flux (K,), weight (K,) = ivar.

    Columns are scaled to unit weighted norm first (fluxes and baseline slopes differ by orders of
    magnitude); a column with no weighted data (or dropped: all zeros) gets NaN.
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


def solve_nonnegative(design, flux, weight, is_line):
    """`solve` with the amplitudes where `is_line` (P,) bool held >= 0: lines fitted negative are
    dropped (fixed at 0) and the rest solved again. Returns params (P,) with 0 for dropped lines
    and NaN for unconstrained columns, and chi2.

    The weighted normal equations are formed once: dropping a column drops its row and column of
    them (the grid searches call this at every point, and forming them is most of its cost)."""
    weighted = design * weight[:, None]
    gram, target = weighted.T @ design, weighted.T @ flux
    norm = jnp.sqrt(jnp.diagonal(gram))
    usable = norm > 0
    inverse_norm = jnp.where(usable, 1.0 / jnp.where(usable, norm, 1.0), 0.0)
    scaled_gram = gram * inverse_norm[:, None] * inverse_norm[None, :]
    scaled_target = target * inverse_norm

    def params_of(keep):  # NaN where a column is unusable or dropped, as `solve` on the zeroed design
        free = usable & keep
        both = free[:, None] & free[None, :]
        normal = jnp.where(both, scaled_gram, 0.0) + jnp.diag(jnp.where(free, 0.0, 1.0))
        x = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(normal), jnp.where(free, scaled_target, 0.0))
        return jnp.where(free, x * inverse_norm, jnp.nan)

    keep = jnp.ones(design.shape[1], bool)
    for _ in range(NONNEGATIVE_ROUNDS):
        keep = keep & ~(is_line & (params_of(keep) < 0))
    params = params_of(keep)
    residual = design @ jnp.where(jnp.isfinite(params), params, 0.0) - flux
    return jnp.where(is_line, jnp.where(keep & (params > 0), params, 0.0), params), jnp.sum(weight * residual**2)


def solve_sii_bounded(design, flux, weight, is_line, offset: int = 0):
    """`solve_nonnegative` with 6717/6731 held in SII_RATIO_RANGE (their columns at `offset` + SII):
    a fit outside it is solved again with [SII]6717 folded into 6731's column at the limit it crossed
    (a convex problem's optimum lies on the violated bound). Returns params (6717 filled in), chi2,
    the design used, and the ratio tied (0 where the fit was inside the range)."""
    a, b = (offset + i for i in SII)
    params, chi2 = solve_nonnegative(design, flux, weight, is_line)
    low, high = SII_RATIO_RANGE
    too_high, too_low = params[a] > high * params[b], params[a] < low * params[b]
    ratio = jnp.where(too_high, high, low)
    tied = design.at[:, b].set(design[:, b] + ratio * design[:, a]).at[:, a].set(0.0)
    bounded, bounded_chi2 = solve_nonnegative(tied, flux, weight, is_line)
    bounded = bounded.at[a].set(ratio * bounded[b])
    out = too_high | too_low
    return (jnp.where(out, bounded, params), jnp.where(out, bounded_chi2, chi2), jnp.where(out, tied, design),
            jnp.where(out, ratio, 0.0))


def best_of(points, chi2_of):
    """The row of `points` (N, D) whose chi2_of (a function of one row) is least (NaN never wins)."""
    chi2 = jax.lax.map(chi2_of, points)
    return points[jnp.argmin(jnp.where(jnp.isfinite(chi2), chi2, jnp.inf))]


def _chi2(flux, weight, velocity, sigma_balmer, sigma_forbidden):
    design = design_matrix(velocity, sigma_balmer, sigma_forbidden)
    return solve_nonnegative(design, flux, weight, np.arange(design.shape[1]) < N_AMPLITUDES)[1]


def grid_search(flux, weight, start=None):
    """Best (velocity, shared sigma) and whether either lies within one final step of its range's
    edge. From `start` (velocity, sigma) of an earlier pass: its neighbourhood only (the coarse
    grid and the first zoom are skipped)."""
    log_sigma = np.log(SIGMA_RANGE)
    v = jnp.linspace(*VELOCITY_RANGE, COARSE_POINTS[0])
    s = jnp.linspace(*log_sigma, COARSE_POINTS[1])
    step = jnp.array([v[1] - v[0], s[1] - s[0]])
    low = jnp.array([VELOCITY_RANGE[0], log_sigma[0]], jnp.float32)
    high = jnp.array([VELOCITY_RANGE[1], log_sigma[1]], jnp.float32)

    def chi2_of(p):
        return _chi2(flux, weight, p[0], jnp.exp(p[1]), jnp.exp(p[1]))

    zooms = ZOOM_LEVELS
    if start is None:
        best = best_of(jnp.stack([g.ravel() for g in jnp.meshgrid(v, s, indexing="ij")], axis=1), chi2_of)
    else:
        best, step, zooms = jnp.stack([start[0], jnp.log(start[1])]), step * 2 / (ZOOM_POINTS - 1), zooms - 1
    offsets = jnp.linspace(-1.0, 1.0, ZOOM_POINTS)
    zoom = jnp.stack([g.ravel() for g in jnp.meshgrid(offsets, offsets, indexing="ij")], axis=1)
    for _ in range(zooms):
        best = best_of(jnp.clip(best + zoom * step, low, high), chi2_of)
        step = step * 2 / (ZOOM_POINTS - 1)
    at_edge = (best - low < step) | (high - best < step)
    return best[0], jnp.clip(jnp.exp(best[1]), *SIGMA_RANGE), at_edge[0], at_edge[1]  # exp(log) rounds


def split_widths(flux, weight, velocity, sigma):
    """Balmer and forbidden widths about a shared one (SPLIT_HALF_RANGES zooms), at `velocity`.
    Returns sigma_balmer, sigma_forbidden and whether either is within a final step of SIGMA_RANGE."""
    log_range = jnp.log(jnp.asarray(SIGMA_RANGE, jnp.float32))
    best = jnp.log(jnp.stack([sigma, sigma]))
    step = None
    for half in SPLIT_HALF_RANGES:
        offsets = jnp.linspace(-half, half, SPLIT_POINTS)
        step = 2 * half / (SPLIT_POINTS - 1)
        points = jnp.stack([g.ravel() for g in jnp.meshgrid(offsets, offsets, indexing="ij")], axis=1)
        best = best_of(jnp.clip(best + points, *log_range),
                        lambda p: _chi2(flux, weight, velocity, jnp.exp(p[0]), jnp.exp(p[1])))
    at_edge = jnp.any((best - log_range[0] < step) | (log_range[1] - best < step))
    widths = jnp.clip(jnp.exp(best), *SIGMA_RANGE)
    return widths[0], widths[1], at_edge
