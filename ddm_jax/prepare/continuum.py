"""The stellar continuum of rest-frame spectra: a non-negative mix of stellar-population templates,
shifted and broadened to the stars' velocity and dispersion, times a low-order multiplicative
polynomial (flux calibration, dust), fitted with the emission-line regions masked.

The field's recipe (MPA-JHU, the MaNGA DAP, pPXF), batched and jitted:
1. Kinematics: a grid search on chi^2 over (velocity, dispersion) that zooms in. At each
   point the model is linear: the leading principal components of the broadened templates plus
   Legendre polynomials times their mean (a multiplicative polynomial, linearised), solved by
   weighted least squares.
2. At the best point, the templates' non-negative weights (Lawson-Hanson NNLS) and the
   multiplicative polynomial, alternately.
A first look (`first_look`: the coarse grid and its zooms, and the linearised model as the
continuum) is all that the first line fit needs; `fit_continuum` refines from it.

Templates are broadened once per template set, on their log-uniform grid, to a ladder of
dispersions (Gaussian kernels in Fourier space); any dispersion between two rungs is their linear
interpolation, and a velocity is a shift of the log-wavelength at which they are sampled.
Dispersions: the templates are broadened by sqrt(sigma*^2 + sigma_instrument^2 + sigma_bin^2 -
sigma_template^2), evaluated at REFERENCE_WAVELENGTH; `stellar_sigma` is sigma*, the intrinsic
dispersion, for a spectrum at the target resolution `prepare` matches (MaNGA's:
`ddm_jax.spectra.instrument`, INSTRUMENT_SIGMA_KMS at REFERENCE_WAVELENGTH). A spectrum prepared
at its native resolution records its own (`resolution_sigma_kms`).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ddm_jax.astro.templates import TemplateSet, load_templates
from ddm_jax.constants import SPEED_OF_LIGHT_KMS, WAVELENGTH_STEP, wavelength_grid
from ddm_jax.spectra.instrument import target_sigma_kms

REFERENCE_WAVELENGTH = 5500.0  # where the templates' and the bins' widths are taken in km/s
# The target resolution there (MaNGA's, R ~ 1870: 68 km/s), which prepare gives every spectrum it can.
INSTRUMENT_SIGMA_KMS = float(target_sigma_kms(REFERENCE_WAVELENGTH))
MULTIPLICATIVE_DEGREE = 6  # Legendre degree over 3700-8114 A, as pPXF's mdegree for SDSS spectra
# Principal components of the broadened templates in the kinematic search: few for the coarse
# grid, more for the refinement (10 alone bias the velocity by ~10 km/s; 20 agree with all 40).
COARSE_COMPONENTS, REFINE_COMPONENTS = 10, 20
# Stellar kinematics searched (km/s): the spectrum is already at the catalogue redshift.
VELOCITY_RANGE = (-1200.0, 1200.0)
SIGMA_RANGE = (20.0, 450.0)
SIGMA_LADDER = 16  # broadened copies of the templates between SIGMA_RANGE's ends
# Grid search: 13 velocities (200 km/s apart: the chi^2 well of a stellar population is
# wider) x 7 dispersions, then two 7 x 7 zooms of one step either side (steps of 67 and 22 km/s),
# then two 5 x 5 zooms with more components (11 and 5.6 km/s).
COARSE_POINTS = (13, 7)
ZOOM_POINTS, ZOOM_LEVELS = 7, 2
REFINE_POINTS, REFINE_LEVELS = 5, 2
# The coarse search (the first look) fits every other bin: its steps (>= 22 km/s) are far coarser
# than what the 2 A bins resolve, and the refinement fits them all.
FIRST_LOOK_STRIDE = 2
ALTERNATIONS = 3  # NNLS / multiplicative polynomial rounds
RIDGE = 1e-6  # relative Tikhonov term: near-collinear templates stay solvable in float32

_GRID = wavelength_grid().astype(np.float64)
_X = (2 * (_GRID - _GRID[0]) / (_GRID[-1] - _GRID[0]) - 1).astype(np.float32)  # [-1, 1]


class TemplateLibrary(NamedTuple):
    """A template set prepared for fitting (arrays only, so it can be an argument of jitted code)."""

    broadened: jax.Array  # (S, N, L) the templates broadened to each rung of the dispersion ladder
    search_rows: jax.Array  # (S, L, 1 + REFINE_COMPONENTS) their mean, then their leading principal
    #                        components, at each rung: pixel-major, so that a shift gathers whole rows
    sigma_ladder: jax.Array  # (S,) sigma* of each rung, km/s
    log_wavelength0: jax.Array  # () ln(lambda) of the templates' first pixel
    dlog: jax.Array  # () their log step (velscale / c)
    mass_per_weight: jax.Array  # (N,) 1 / norms: mass formed per unit weight (prepare.mass gives the units)


def _broadening_kms(sigma_star, templates: TemplateSet) -> np.ndarray:
    """The extra Gaussian dispersion (km/s) that takes the templates to an observed sigma*."""
    c = SPEED_OF_LIGHT_KMS
    template = templates.fwhm_angstrom / np.sqrt(8 * np.log(2)) / REFERENCE_WAVELENGTH * c
    bins = WAVELENGTH_STEP / np.sqrt(12.0) / REFERENCE_WAVELENGTH * c  # the 2 A bins' box profile
    return np.sqrt(np.maximum(np.asarray(sigma_star) ** 2 + INSTRUMENT_SIGMA_KMS**2 + bins**2 - template**2, 1e-6))


@functools.lru_cache(maxsize=2)
def template_library(name: str = "bc03") -> TemplateLibrary:
    """The named template set (`ddm_jax.templates`) prepared for fitting, once per process."""
    return prepare_library(load_templates(name))


def prepare_library(templates: TemplateSet) -> TemplateLibrary:
    """`templates` broadened to the dispersion ladder, with principal components at each rung."""
    ladder = np.geomspace(*SIGMA_RANGE, SIGMA_LADDER)
    flux = templates.flux.astype(np.float64)
    n_fft = 1 << int(np.ceil(np.log2(flux.shape[1] * 1.25)))  # room for the kernel's wings
    spectrum = np.fft.rfft(flux, n_fft, axis=1)
    frequency = np.fft.rfftfreq(n_fft)  # cycles per pixel
    # only the pixels that any searched velocity can bring onto the grid (and one either side) are kept
    reach = (abs(max(VELOCITY_RANGE, key=abs)) + 100.0) / SPEED_OF_LIGHT_KMS
    dlog = templates.velscale / SPEED_OF_LIGHT_KMS
    first = max(int(np.floor((np.log(_GRID[0]) - reach - np.log(templates.wavelength[0])) / dlog)) - 1, 0)
    last = min(int(np.ceil((np.log(_GRID[-1]) + reach - np.log(templates.wavelength[0])) / dlog)) + 2, flux.shape[1])
    broadened, search_rows = [], []
    for sigma in _broadening_kms(ladder, templates) / templates.velscale:  # in pixels
        kernel = np.exp(-2 * (np.pi * frequency * sigma) ** 2)
        smooth = np.fft.irfft(spectrum * kernel, n_fft, axis=1)[:, : flux.shape[1]]
        mean = smooth.mean(axis=0)
        _, _, rows = np.linalg.svd(smooth - mean, full_matrices=False)
        broadened.append(smooth[:, first:last])
        search_rows.append(np.concatenate([mean[None], rows[:REFINE_COMPONENTS]])[:, first:last].T)
    as32 = lambda a: jnp.asarray(np.asarray(a), jnp.float32)  # noqa: E731
    return TemplateLibrary(as32(broadened), as32(search_rows), as32(ladder),
                           jnp.float32(np.log(templates.wavelength[first])), jnp.float32(dlog),
                           as32(1.0 / templates.norms))


def _rung(ladder, sigma):
    """The dispersion ladder's rung below sigma*, and the weight of the one above (linear in
    sigma^2: a mix of two Gaussian broadenings then has the right variance)."""
    rung = jnp.clip(jnp.searchsorted(ladder, sigma) - 1, 0, ladder.shape[0] - 2)
    return rung, jnp.clip((sigma**2 - ladder[rung] ** 2) / (ladder[rung + 1] ** 2 - ladder[rung] ** 2), 0.0, 1.0)


def _pixels(library: TemplateLibrary, velocity, length: int, stride: int = 1):
    """For every `stride`-th grid bin, the template pixel below where it samples the templates at
    `velocity`, and the weight of the next: ((2208 / stride,) int32, (2208 / stride,))."""
    # a template seen at velocity v shows its rest wavelength lambda at lambda (1 + v / c)
    position = (jnp.log(jnp.asarray(_GRID[::stride], jnp.float32) / (1 + velocity / SPEED_OF_LIGHT_KMS))
                - library.log_wavelength0) / library.dlog
    low = jnp.clip(jnp.floor(position).astype(jnp.int32), 0, length - 2)
    return low, position - low


def _sample(library_rows, library: TemplateLibrary, velocity, sigma):
    """Rows of a (S, R, L) ladder at dispersion `sigma`, redshifted by `velocity`, on the grid.

    Interpolated between rungs (`_rung`) and in log-wavelength between pixels. Returns (R, 2208).
    Gathers only the pixels needed (under vmap, slicing whole rungs first would copy them per spectrum).
    """
    rung, t = _rung(library.sigma_ladder, sigma)
    low, frac = _pixels(library, velocity, library_rows.shape[2])

    def at(r):  # (R, 2208): rung r, linear between pixels
        return (library_rows[r, :, low] * (1 - frac)[:, None] + library_rows[r, :, low + 1] * frac[:, None]).T

    return (1 - t) * at(rung) + t * at(rung + 1)


def _search_rows(library: TemplateLibrary, sigma, n_components: int):
    """The templates' mean and leading `n_components` principal components at sigma*, between rungs
    (`_rung`). (L, 1 + n_components): computed once for all the velocities searched at one sigma*."""
    rung, t = _rung(library.sigma_ladder, sigma)
    pair = jax.lax.dynamic_slice_in_dim(library.search_rows[:, :, :1 + n_components], rung, 2, axis=0)
    return (1 - t) * pair[0] + t * pair[1]


def _linearised_columns(rows, library: TemplateLibrary, velocity, stride: int = 1):
    """The linearised model's columns from `_search_rows` at `velocity`, on every `stride`-th bin:
    the templates' mean, their principal components, and the multiplicative polynomial as Legendre
    polynomials times the mean. (1 + n_components + MULTIPLICATIVE_DEGREE, 2208 / stride)."""
    low, frac = _pixels(library, velocity, rows.shape[0], stride)
    shifted = (rows[low] * (1 - frac)[:, None] + rows[low + 1] * frac[:, None]).T
    return jnp.concatenate([shifted, shifted[0] * _LEGENDRE[:, ::stride]], axis=0)


def _legendre() -> np.ndarray:
    """Legendre polynomials of degree 1..MULTIPLICATIVE_DEGREE on the grid. (D, 2208)."""
    return np.stack([np.polynomial.legendre.Legendre.basis(k)(_X) for k in range(1, MULTIPLICATIVE_DEGREE + 1)]
                    ).astype(np.float32)


_LEGENDRE = _legendre()


def _normal_equations(columns, flux, weight):
    """Weighted normal equations of flux on columns (C, K), columns scaled to unit weighted norm
    (templates and polynomials differ by orders of magnitude) with a RIDGE term. Returns
    (gram (C, C), target (C,), scale (C,)): coefficients = solution / scale."""
    weighted = columns * weight
    gram, target = weighted @ columns.T, weighted @ flux  # scaled afterwards: one pass over the bins
    scale = jnp.sqrt(jnp.diagonal(gram)) + 1e-30
    gram = gram / scale[:, None] / scale[None, :]
    gram = gram + RIDGE * jnp.eye(gram.shape[0]) * (jnp.trace(gram) / gram.shape[0])
    return gram, target / scale, scale


def _weighted_lstsq(columns, flux, weight):
    """Least squares of flux on columns (C, K) with weights (K,): (coefficients (C,), chi^2)."""
    gram, target, scale = _normal_equations(columns, flux, weight)
    coefficients = jax.scipy.linalg.solve(gram, target, assume_a="pos") / scale
    residual = coefficients @ columns - flux
    return coefficients, jnp.sum(weight * residual**2)


def _grid_search(flux, weight, library: TemplateLibrary, start=None):
    """Best (velocity, sigma*), and whether each lies within one final step of the searched
    velocities' edges or of the highest dispersion.

    Without `start`: a coarse grid and ZOOM_LEVELS zooms with COARSE_COMPONENTS on every
    FIRST_LOOK_STRIDE-th bin. From `start` (velocity, sigma*) of such a search: REFINE_LEVELS zooms
    about it with REFINE_COMPONENTS on every bin.
    """
    stride = FIRST_LOOK_STRIDE if start is None else 1
    flux, weight = flux[::stride], weight[::stride]
    log_sigma = np.log(SIGMA_RANGE)
    low = jnp.array([VELOCITY_RANGE[0], log_sigma[0]], jnp.float32)
    high = jnp.array([VELOCITY_RANGE[1], log_sigma[1]], jnp.float32)

    def best_of(velocities, log_sigmas, n_components):  # the best of their grid, (2,)
        velocities, log_sigmas = jnp.clip(velocities, low[0], high[0]), jnp.clip(log_sigmas, low[1], high[1])

        def at_sigma(log_sigma):
            rows = _search_rows(library, jnp.exp(log_sigma), n_components)
            return jax.lax.map(
                lambda v: _weighted_lstsq(_linearised_columns(rows, library, v, stride), flux, weight)[1], velocities)

        chi2 = jax.lax.map(at_sigma, log_sigmas).T.ravel()  # velocity-major, as the points were always ordered
        best = jnp.argmin(jnp.where(jnp.isfinite(chi2), chi2, jnp.inf))
        return jnp.stack([velocities[best // log_sigmas.size], log_sigmas[best % log_sigmas.size]])

    def zoomed(best, step, points, n_components):
        offsets = jnp.linspace(-1.0, 1.0, points)
        return best_of(best[0] + offsets * step[0], best[1] + offsets * step[1], n_components), step * 2 / (points - 1)

    v = jnp.linspace(*VELOCITY_RANGE, COARSE_POINTS[0])
    s = jnp.linspace(*log_sigma, COARSE_POINTS[1])
    step = jnp.array([v[1] - v[0], s[1] - s[0]])
    zooms = ZOOM_LEVELS
    if start is None:
        best = best_of(v, s, COARSE_COMPONENTS)
    else:
        best, step, zooms = jnp.stack([start[0], jnp.log(start[1])]), step * (2 / (ZOOM_POINTS - 1)) ** zooms, 0
    for _ in range(zooms):
        best, step = zoomed(best, step, ZOOM_POINTS, COARSE_COMPONENTS)
    for _ in range(0 if start is None else REFINE_LEVELS):
        best, step = zoomed(best, step, REFINE_POINTS, REFINE_COMPONENTS)
    velocity_at_edge = (best[0] - VELOCITY_RANGE[0] < step[0]) | (VELOCITY_RANGE[1] - best[0] < step[0])
    # the lowest dispersion is not an edge but "unresolved" (sigma* below ~20 km/s)
    sigma_at_edge = log_sigma[1] - best[1] < step[1]
    return best[0], jnp.clip(jnp.exp(best[1]), *SIGMA_RANGE), velocity_at_edge, sigma_at_edge  # exp(log) rounds


def nnls(gram, target, iterations: int):
    """min 1/2 w'Gw - b'w subject to w >= 0 (Lawson-Hanson active set, fixed iteration budget).

    gram (N, N) positive definite, target (N,). Returns w (N,).
    """
    n = target.shape[0]
    tolerance = 1e-7 * jnp.max(jnp.abs(target)) + 1e-30

    def solve_passive(passive):
        both = passive[:, None] & passive[None, :]
        matrix = jnp.where(both, gram, 0.0) + jnp.diag(jnp.where(passive, 0.0, 1.0))
        return jnp.where(passive, jnp.linalg.solve(matrix, jnp.where(passive, target, 0.0)), 0.0)

    def step(state):
        w, passive, trial, adding, done, count = state
        # adding: free the variable whose gradient most wants it to grow
        gradient = target - gram @ w
        candidate = jnp.where(passive, -jnp.inf, gradient)
        j = jnp.argmax(candidate)
        finished = candidate[j] <= tolerance
        passive_added = passive.at[j].set(True)
        # otherwise: the trial solution of the passive set, stepped back into the feasible region
        feasible = jnp.all(jnp.where(passive, trial > 0, True))
        ratio = jnp.where(passive & (trial <= 0), w / jnp.maximum(w - trial, 1e-30), jnp.inf)
        alpha = jnp.minimum(jnp.min(ratio), 1.0)
        stepped = w + alpha * (trial - w)
        passive_kept = passive & (stepped > tolerance * 1e-3)
        new_w = jnp.where(adding, w, jnp.where(feasible, trial, jnp.where(passive_kept, stepped, 0.0)))
        new_passive = jnp.where(adding, passive_added, jnp.where(feasible, passive, passive_kept))
        new_trial = solve_passive(new_passive)
        new_adding = jnp.where(adding, False, feasible)
        return new_w, new_passive, new_trial, new_adding, done | (adding & finished), count + 1

    state = (jnp.zeros(n), jnp.zeros(n, bool), jnp.zeros(n), jnp.array(True), jnp.array(False), 0)
    w = jax.lax.while_loop(lambda s: ~s[4] & (s[5] < iterations), step, state)[0]
    return jnp.maximum(w, 0.0)


def _nonnegative_fit(columns, flux, weight, n_nonnegative: int):
    """Weighted least squares of flux on columns (C, K), the first `n_nonnegative` coefficients
    held >= 0 (the others free: each enters as a +/- pair of non-negative columns)."""
    free = columns[n_nonnegative:]
    gram, target, scale = _normal_equations(jnp.concatenate([columns, -free]), flux, weight)
    x = nnls(gram, target, 3 * gram.shape[0]) / scale
    n_free = free.shape[0]
    return jnp.concatenate([x[:n_nonnegative], x[n_nonnegative:n_nonnegative + n_free] - x[n_nonnegative + n_free:]])


def _final_fit(flux, weight, library: TemplateLibrary, velocity, sigma):
    """Non-negative template weights and the multiplicative polynomial at (velocity, sigma*).

    model = P(lambda) sum_i w_i T_i. Each round linearises the product about the previous one,
    P' S' ~ P S' + dP S, and solves for the weights and dP together (NNLS with dP free): the
    polynomial and the population mix, which can both change the colour of the model, are
    found at once instead of undoing each other. Returns (model (2208,), weights (N,), and the
    mass-weighted sum of the weights with its error, () each: `_template_mass`).
    """
    templates = _sample(library.broadened, library, velocity, sigma)  # (N, K)
    n = templates.shape[0]
    # linearise about the best mix without a polynomial: about the templates' mean the first
    # step overshoots (the mean and the mix trade colour)
    stars = _nonnegative_fit(templates, flux, weight, n) @ templates
    polynomial = jnp.ones_like(flux)
    coefficients = jnp.zeros(MULTIPLICATIVE_DEGREE)
    for _ in range(ALTERNATIONS):
        x = _nonnegative_fit(jnp.concatenate([templates * polynomial, stars * _LEGENDRE]), flux, weight, n)
        stars = x[:n] @ templates
        coefficients = coefficients + x[n:]
        polynomial = 1.0 + coefficients @ _LEGENDRE
    weights = _nonnegative_fit(templates * polynomial, flux, weight, n)
    mass, mass_err = _template_mass(templates * polynomial, weights @ templates * _LEGENDRE, weights, weight,
                                    library.mass_per_weight)
    return (weights @ templates) * polynomial, weights, mass, mass_err


def _template_mass(columns, polynomial_columns, weights, weight, mass_per_weight):
    """sum_i weights_i mass_per_weight_i and its formal error: the covariance of the weights on
    the NNLS passive set (weights > 0, the others held at 0), with the multiplicative polynomial's
    degrees of freedom free beside them (a redder mix and a bluer polynomial trade off).

    columns (N, K) the templates times the polynomial; polynomial_columns (D, K) the stars times
    each Legendre polynomial; weights (N,); weight (K,) ivar on the fitted bins; mass_per_weight (N,).
    Returns ((), ()): the sum and its 1-sigma error (NaN if the passive set is empty).
    """
    n = columns.shape[0]
    gram, _, scale = _normal_equations(jnp.concatenate([columns, polynomial_columns]), jnp.zeros_like(weight),
                                       weight)
    passive = jnp.concatenate([weights > 0, jnp.ones(polynomial_columns.shape[0], bool)])
    # held templates: rows and columns of the identity, so they drop out of the inverse
    both = passive[:, None] & passive[None, :]
    gram = jnp.where(both, gram, 0.0) + jnp.diag(jnp.where(passive, 0.0, 1.0))
    direction = jnp.concatenate([jnp.where(weights > 0, mass_per_weight, 0.0), jnp.zeros(gram.shape[0] - n)])
    scaled = direction / scale
    variance = scaled @ jax.scipy.linalg.solve(gram, scaled, assume_a="pos")
    mass = weights @ mass_per_weight
    return mass, jnp.where(jnp.any(weights > 0), jnp.sqrt(jnp.maximum(variance, 0.0)), jnp.nan)


def first_look(flux, ivar, use, library: TemplateLibrary):
    """The coarse kinematic search and the linearised model there (no NNLS): enough to subtract
    for a first line fit. flux, ivar (2208,); use (2208,) bool: bins to fit. Returns velocity,
    sigma* (km/s, ()) and the model (2208,) on every bin."""
    weight = jnp.where(use, ivar, 0.0)
    velocity, sigma, _, _ = _grid_search(flux, weight, library)
    columns = _linearised_columns(_search_rows(library, sigma, REFINE_COMPONENTS), library, velocity)
    return velocity, sigma, _weighted_lstsq(columns, flux, weight)[0] @ columns


def fit_continuum(flux, ivar, use, library: TemplateLibrary, start):
    """Fit one rest-frame spectrum. flux, ivar (2208,); use (2208,) bool: bins to fit (emission
    lines masked); `start`: (velocity, sigma*) of `first_look`, searched about. Returns a dict:
    continuum (2208,) on every bin; template_weights (N,); template_mass, template_mass_err ():
    sum_i weights_i / norms_i and its error (`_template_mass`); stellar_velocity, stellar_sigma (km/s),
    continuum_rchi2, stellar_velocity_at_edge, stellar_sigma_at_edge, all ()."""
    weight = jnp.where(use, ivar, 0.0)
    velocity, sigma, velocity_at_edge, sigma_at_edge = _grid_search(flux, weight, library, start)
    model, weights, mass, mass_err = _final_fit(flux, weight, library, velocity, sigma)
    chi2 = jnp.sum(weight * (flux - model) ** 2)
    dof = jnp.sum(weight > 0) - jnp.sum(weights > 0) - MULTIPLICATIVE_DEGREE - 2
    return {"continuum": model, "template_weights": weights, "template_mass": mass, "template_mass_err": mass_err,
            "stellar_velocity": velocity, "stellar_sigma": sigma,
            "continuum_rchi2": jnp.where(dof > 0, chi2 / jnp.maximum(dof, 1), jnp.nan),
            "stellar_velocity_at_edge": velocity_at_edge, "stellar_sigma_at_edge": sigma_at_edge}

