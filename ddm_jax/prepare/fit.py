"""The per-spectrum fit behind `prepare`: the stellar continuum with the emission lines masked,
then the lines on what it leaves; twice, the second time with the masks centred on the gas
velocity and sized to the line width that the first pass found, and both searches started from
the first pass's answers. The first pass's continuum is `continuum.first_look` (the coarse
kinematic search and its linearised model): the first line fit only needs the gas kinematics.

Fit quality (`line_fit_ok`): both reduced chi^2 below their maxima and no velocity or line width
on the edge of its search. The stars' dispersion at the top of its range is flagged
(`stellar_sigma_at_edge`) but does not fail the fit: a low-S/N continuum leaves it unconstrained
(the z = 0.37 DESI galaxy) while its lines are well measured. The maxima (`constants.LINE_RCHI2_MAX`,
`CONTINUUM_RCHI2_MAX`) are wide enough for
real spectra of high S/N, whose errors and template match are imperfect: on pPXF's SDSS spectra
and the MaNGA and DESI spectra that sdss-mangadap and fastspecfit ship, single-component spectra
gave line rchi2 of 0.6-6.9 and continuum rchi2 of 1.0-14 (BC03's solar-scaled Mg b and the red
TiO bands leave residuals at S/N ~ 50 per bin). With the narrow lines alone, the multi-component
MaNGA spectra gave line rchi2 11-83; the second pass now tries a wing component (`lines`), kept
where the BIC asks for it, and the rchi2 is the kept model's. Broad-line AGN are refused by the
gate (`broad_balmer`), not by the fit quality.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ddm_jax.constants import (
    CONTINUUM_RCHI2_MAX,
    EMISSION_LINES,
    LINE_NAMES,
    LINE_RCHI2_MAX,
    MASKED_ONLY_LINES,
    SPEED_OF_LIGHT_KMS,
    wavelength_grid,
)
from ddm_jax.prepare import continuum, lines

# First pass: +-800 km/s about each line at the catalogue redshift. Second pass: about the
# fitted gas velocity, 5 line widths (or 400 km/s, whichever is more) either side.
FIRST_MASK_KMS = 800.0
MASK_WIDTHS, MIN_MASK_KMS = 5.0, 400.0

# Equivalent widths: the line flux over the fitted stellar continuum's mean within +-EW_HALF_WIDTH of
# the line (Angstrom, rest frame: 5 bins either side, inside the troughs of the Balmer lines as
# WHAN's EWs from population fits are).
EW_HALF_WIDTH = 10.0

# NumPy, not JAX, at import: `ddm-jax decompose --distributed` must start JAX's backend itself
_GRID = wavelength_grid()
_MASKED = np.asarray([*EMISSION_LINES.values(), *MASKED_ONLY_LINES.values()], np.float32)
_NEAR_LINE = (np.abs(_GRID[None, :] - np.array([EMISSION_LINES[n] for n in LINE_NAMES], np.float32)[:, None])
              <= EW_HALF_WIDTH).astype(np.float32)  # (8, 2208)


def line_mask(velocity, half_width_kms):
    """True on bins free of emission lines at `velocity`, +-`half_width_kms`. (2208,) bool."""
    centres = _MASKED * (1 + velocity / SPEED_OF_LIGHT_KMS)
    near = jnp.abs(_GRID[:, None] - centres[None, :]) <= centres[None, :] * half_width_kms / SPEED_OF_LIGHT_KMS
    return ~near.any(axis=1)


def equivalent_widths(line_flux, stars):
    """Emission equivalent widths (Angstrom, > 0 for emission) of line_flux (8,) over the stellar
    continuum (2208,) near each line (EW_HALF_WIDTH); NaN where that continuum is not positive."""
    level = jnp.asarray(_NEAR_LINE) @ stars / _NEAR_LINE.sum(axis=1)
    return jnp.where(level > 0, line_flux / jnp.where(level > 0, level, 1.0), jnp.nan)


def fit_spectrum(flux, ivar, library: continuum.TemplateLibrary, inflation=None):
    """Continuum and lines of one rest-frame spectrum: flux, ivar (2208,) -> dict (see
    `continuum.fit_continuum` and `lines.measure_lines`; `continuum` and `line_model` are the two
    models on every bin, `line_ew` (8,) the equivalent widths and `line_fit_ok` the fit-quality
    verdict). inflation (2208,): the rebin's variance inflation (`spectra.covariance`), or None."""
    velocity, sigma, first_continuum = continuum.first_look(flux, ivar, line_mask(0.0, FIRST_MASK_KMS) & (ivar > 0),
                                                           library)
    gas = lines.measure_lines(flux - first_continuum, ivar)
    # the second pass searches about the first's answers
    mask = line_mask(gas["velocity"], jnp.maximum(MASK_WIDTHS * gas["sigma"], MIN_MASK_KMS))  # one width yet
    stars = continuum.fit_continuum(flux, ivar, mask & (ivar > 0), library, start=(velocity, sigma))
    gas = lines.measure_lines(flux - stars["continuum"], ivar, start=(gas["velocity"], gas["sigma"]),
                              inflation=inflation)
    ok = ((gas["rchi2"] < LINE_RCHI2_MAX) & (stars["continuum_rchi2"] < CONTINUUM_RCHI2_MAX)
          & ~gas["velocity_at_edge"] & ~gas["sigma_at_edge"] & ~stars["stellar_velocity_at_edge"])
    return {**stars, **gas, "line_ew": equivalent_widths(gas["line_flux"], stars["continuum"]), "line_fit_ok": ok}


@jax.jit
def fit_batch(flux, ivar, inflation, library: continuum.TemplateLibrary):
    """`fit_spectrum` over a batch: (B, 2208) x3 -> dict of (B, ...)."""
    return jax.vmap(fit_spectrum, in_axes=(0, 0, None, 0))(flux, ivar, library, inflation)


def fit_spectra(flux: np.ndarray, ivar: np.ndarray, library: continuum.TemplateLibrary | None = None,
                inflation: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """`fit_batch` as NumPy arrays; the default library is the BC03 set's (prepared once per process);
    inflation (B, 2208) defaults to 1 (uncorrelated bins)."""
    library = continuum.template_library() if library is None else library
    inflation = np.ones_like(flux) if inflation is None else inflation
    return {key: np.asarray(value) for key, value in fit_batch(
        jnp.asarray(flux, jnp.float32), jnp.asarray(ivar, jnp.float32), jnp.asarray(inflation, jnp.float32),
        library).items()}
