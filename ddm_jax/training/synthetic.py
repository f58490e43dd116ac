"""Synthetic SF and AGN galaxy spectra on the rest-frame grid, and composites of them.

Every function is jittable; single-spectrum functions are batched with `vmap` and all
randomness comes from explicit keys, so a spectrum is a pure function of its key.

A spectrum is a stellar-like continuum (power law, 4000 A break, Balmer and metal
absorption) plus Gaussian emission lines, scaled to unit median flux in the
normalisation window, plus Gaussian noise of standard deviation 1/snr (S/N per bin of
that unit median). Its true line quantities form an (8,) vector in the regressor's
output order, `constants.LINE_QUANTITIES`, which fixes every line flux.
SF spectra lie on the SF sequence below Kauffmann et al. 2003 (and below Kewley 2001 in
the [SII] diagram); AGN spectra are Seyferts or LINERs above Kewley 2001 in both.
Every parameter is drawn uniformly from a class-specific range; `spread` in [0, 1] shrinks
all ranges about their middles (1: the full ranges; small: near-homogeneous classes, as in
upstream's training recipe (docs/model.md#training), for which the SF fraction of a composite is better determined).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ddm_jax.constants import (
    EMISSION_LINES,
    N_BINS,
    SPEED_OF_LIGHT_KMS,
    binned_gaussian,
    norm_window_slice,
    wavelength_grid,
)
from ddm_jax.model import bpt

# NumPy, not JAX, arrays: a JAX array made at import would start the backend (docs/architecture.md).
_LINE_WAVELENGTHS = np.array(list(EMISSION_LINES.values()), np.float32)
_HALPHA = list(EMISSION_LINES).index("halpha")

# Fixed atomic ratios (strong/weak member of a doublet) and case-B Balmer ratios to Hbeta.
OIII_DOUBLET = 2.98
NII_DOUBLET = 3.05
OI_DOUBLET = 3.0
OII_3729_TO_3726 = 1.3
HGAMMA_TO_HBETA = 0.468
HDELTA_TO_HBETA = 0.259

# Stellar absorption features: (centre A, Gaussian sigma A, weight of the "young"
# Balmer strength, weight of the "old" metal strength).
_ABSORPTION = np.array([
    (3889.05, 10.0, 1.0, 0.0), (3933.66, 6.0, 0.0, 1.0), (3968.47, 6.0, 0.5, 0.8),
    (4101.74, 12.0, 1.0, 0.0), (4304.40, 10.0, 0.0, 0.8), (4340.47, 12.0, 1.0, 0.0),
    (4861.33, 12.0, 0.9, 0.0), (5175.00, 10.0, 0.0, 0.7), (5892.90, 5.0, 0.0, 0.6),
    (6562.80, 12.0, 0.8, 0.0),
], np.float32)

PIVOT_WAVELENGTH = 5500.0  # A, where the power-law continuum equals its amplitude
BREAK_WAVELENGTH = 4000.0
BREAK_WIDTH = 20.0  # A, smoothness of the 4000 A break

_GRID = np.asarray(wavelength_grid(N_BINS), np.float32)
_WINDOW = norm_window_slice(N_BINS)


class SpectrumParams(NamedTuple):
    """Everything that fixes one noiseless spectrum (all scalars but `lines`)."""

    lines: jax.Array  # (8,) true line quantities, `constants.LINE_QUANTITIES` order
    sigma_kms: jax.Array  # emission-line velocity dispersion, instrumental included
    age: jax.Array  # 0 young .. 1 old: sets the 4000 A break and absorption strengths
    slope: jax.Array  # power-law index of f_lambda around 5500 A


def line_fluxes(lines: jax.Array) -> jax.Array:
    """Emission-line fluxes relative to Hbeta, in `EMISSION_LINES` order. (8,) -> (14,)."""
    nii_ha, oiii_hb, oi_ha, oii_hb, ha_hb, sii_ratio, sii_ha, _ = [10.0 ** v for v in lines]
    halpha = ha_hb
    oii, sii = oii_hb, halpha * sii_ha
    nii, oiii, oi = halpha * nii_ha, oiii_hb, halpha * oi_ha
    return jnp.stack([
        oii / (1 + OII_3729_TO_3726), oii * OII_3729_TO_3726 / (1 + OII_3729_TO_3726),
        HDELTA_TO_HBETA, HGAMMA_TO_HBETA, 1.0, oiii / OIII_DOUBLET, oiii,
        oi, oi / OI_DOUBLET, nii / NII_DOUBLET, halpha, nii,
        sii * sii_ratio / (1 + sii_ratio), sii / (1 + sii_ratio),
    ])


def _binned_gaussians(centres, sigmas, fluxes):
    """Sum of Gaussians of the given fluxes on the grid, as flux per A. Returns (n_bins,)."""
    return binned_gaussian(_GRID, centres, sigmas) @ fluxes


def smooth_continuum(age, slope, wavelength=_GRID):
    """Power law times a smooth 4000 A break of strength D4000 = 1.05 + 0.9 age."""
    d4000 = 1.05 + 0.9 * age
    step = jax.nn.sigmoid((wavelength - BREAK_WAVELENGTH) / BREAK_WIDTH)
    return (wavelength / PIVOT_WAVELENGTH) ** slope * (1.0 / d4000 + (1.0 - 1.0 / d4000) * step)


@jax.jit
def render_components(params: SpectrumParams) -> tuple[jax.Array, jax.Array]:
    """Noiseless (continuum, emission), each (n_bins,), in units of the 5500 A continuum.

    The Halpha emission flux is EW * (smooth continuum at Halpha); absorption depths follow
    equivalent widths: Balmer lines strong in young populations, metal lines in old ones.
    """
    balmer_ew = 1.0 + 5.0 * (1.0 - params.age)
    metal_ew = 0.5 + 4.0 * params.age
    centres, widths, young, old = _ABSORPTION.T
    ews = young * balmer_ew + old * metal_ew
    absorption = _binned_gaussians(centres, widths, ews)  # EW-weighted profiles, 1/A
    continuum = smooth_continuum(params.age, params.slope) * (1.0 - absorption)

    relative = line_fluxes(params.lines)
    halpha_continuum = smooth_continuum(params.age, params.slope, EMISSION_LINES["halpha"])
    scale = 10.0 ** params.lines[7] * halpha_continuum / relative[_HALPHA]
    sigmas = _LINE_WAVELENGTHS * params.sigma_kms / SPEED_OF_LIGHT_KMS
    emission = _binned_gaussians(_LINE_WAVELENGTHS, sigmas, relative * scale)
    return continuum, emission


@jax.jit
def render_spectrum(params: SpectrumParams, key: jax.Array, snr) -> jax.Array:
    """One spectrum (n_bins,), unit median in the normalisation window, noise sd 1/snr.

    snr = inf gives the noiseless spectrum.
    """
    continuum, emission = render_components(params)
    spectrum = continuum + emission
    spectrum = spectrum / jnp.median(spectrum[_WINDOW])
    return spectrum + jax.random.normal(key, spectrum.shape) / snr


def _uniform(key, low, high, spread):
    """U(low, high) shrunk about its middle by `spread` (1: the whole range, 0: the middle)."""
    return (low + high) / 2 + spread * (jax.random.uniform(key) - 0.5) * (high - low)


def _sii_kewley_boundary(y):
    """The x of Kewley 2001's [SII] curve at height y (y < 1.30): SF lies at smaller x."""
    return bpt.KEWLEY01_SII_ASYMPTOTE + 0.72 / (y - 1.30)


BPT_MARGIN = 0.05  # dex kept between drawn ratios and the demarcation lines


def _draw_common(keys, age_range, ew_range, sigma_range, spread):
    """Draws shared by SF and AGN: age, slope, Halpha EW, dispersion, SII doublet ratio."""
    age = _uniform(keys[0], *age_range, spread)
    slope = -1.5 + 1.8 * age + _uniform(keys[1], -0.3, 0.3, spread)
    log_ew = _uniform(keys[2], math.log10(ew_range[0]), math.log10(ew_range[1]), spread)
    sigma = _uniform(keys[3], *sigma_range, spread)
    sii_ratio = _uniform(keys[4], -0.15, 0.15, spread)
    return age, slope, log_ew, sigma, sii_ratio


def draw_sf_params(key: jax.Array, spread=1.0) -> SpectrumParams:
    """A star-forming galaxy: on the SF sequence, 0.12-0.5 dex below Kauffmann 2003.

    `spread` in (0, 1] narrows every parameter range about its middle: near-homogeneous
    libraries (upstream's training recipe) at small values."""
    keys = jax.random.split(key, 11)
    age, slope, log_ew, sigma, sii_ratio = _draw_common(keys, (0.0, 0.5), (15.0, 100.0), (40.0, 120.0), spread)
    nii_ha = _uniform(keys[5], -1.2, -0.3, spread)
    oiii_hb = bpt.kauffmann03(nii_ha) - _uniform(keys[6], 0.12, 0.5, spread)
    sii_ha = jnp.minimum(-0.55 + 0.4 * (nii_ha + 0.7) + _uniform(keys[7], -0.15, 0.15, spread),
                         _sii_kewley_boundary(oiii_hb) - BPT_MARGIN)
    oi_ha = _uniform(keys[8], -2.0, -1.3, spread)
    oii_hb = _uniform(keys[9], 0.1, 0.6, spread)
    ha_hb = 0.456 + _uniform(keys[10], 0.0, 0.25, spread)  # case B 2.86 plus dust
    lines = jnp.stack([nii_ha, oiii_hb, oi_ha, oii_hb, ha_hb, sii_ratio, sii_ha, log_ew])
    return SpectrumParams(lines, sigma, age, slope)


def draw_agn_params(key: jax.Array, seyfert_fraction: float = 0.5, spread=1.0) -> SpectrumParams:
    """An AGN: a Seyfert (above Schawinski 2007 / Kewley 2006) or a LINER (below them),
    above Kewley 2001 in both the [NII] and [SII] diagrams."""
    keys = jax.random.split(key, 12)
    seyfert = jax.random.bernoulli(keys[11], seyfert_fraction)
    age, slope, log_ew, sigma, sii_ratio = _draw_common(keys, (0.4, 1.0), (4.0, 60.0), (120.0, 350.0), spread)
    log_ew = jnp.where(seyfert, log_ew, log_ew - 0.3)  # LINERs have weaker lines

    nii_ha = jnp.where(seyfert, _uniform(keys[5], -0.3, 0.45, spread), _uniform(keys[5], 0.0, 0.45, spread))
    kewley = bpt.kewley01_nii(nii_ha) + BPT_MARGIN
    schawinski = bpt.schawinski07(nii_ha)
    low = jnp.where(seyfert, jnp.maximum(kewley, schawinski + BPT_MARGIN), jnp.maximum(kewley, -0.3))
    high = jnp.where(seyfert, 1.25, schawinski - BPT_MARGIN)
    oiii_hb = low + (high - low) * _uniform(keys[6], 0.0, 1.0, spread)

    # [SII]: right of Kewley 2001 and on the matching side of Kewley 2006 (x = (y - .76) / 1.89).
    kewley_sii = jnp.maximum(_sii_kewley_boundary(oiii_hb), -0.6) + BPT_MARGIN
    division = (oiii_hb - 0.76) / 1.89
    sii_low = jnp.where(seyfert, kewley_sii, jnp.maximum(kewley_sii, division + BPT_MARGIN))
    sii_high = jnp.where(seyfert, division - BPT_MARGIN, sii_low + 0.4)
    sii_ha = sii_low + (sii_high - sii_low) * _uniform(keys[7], 0.0, 1.0, spread)
    oi_ha = _uniform(keys[8], -1.1, -0.3, spread)
    oii_hb = _uniform(keys[9], 0.2, 0.8, spread)
    ha_hb = 0.49 + _uniform(keys[10], 0.0, 0.25, spread)  # AGN intrinsic 3.1 plus dust
    lines = jnp.stack([nii_ha, oiii_hb, oi_ha, oii_hb, ha_hb, sii_ratio, sii_ha, log_ew])
    return SpectrumParams(lines, sigma, age, slope)


def sf_spectrum(key: jax.Array, snr=30.0, spread=1.0) -> tuple[jax.Array, jax.Array]:
    """One noisy SF spectrum (n_bins,) and its true line quantities (8,)."""
    params_key, noise_key = jax.random.split(key)
    params = draw_sf_params(params_key, spread)
    return render_spectrum(params, noise_key, snr), params.lines


def agn_spectrum(key: jax.Array, snr=30.0, seyfert_fraction: float = 0.5, spread=1.0):
    """One noisy AGN spectrum (n_bins,) and its true line quantities (8,)."""
    params_key, noise_key = jax.random.split(key)
    params = draw_agn_params(params_key, seyfert_fraction, spread)
    return render_spectrum(params, noise_key, snr), params.lines


@functools.partial(jax.jit, static_argnames="n")
def sf_spectra(key: jax.Array, n: int, snr=30.0, spread=1.0) -> tuple[jax.Array, jax.Array]:
    """n SF spectra (n, n_bins) and line quantities (n, 8); spectrum i depends only on (key, i)."""
    return jax.vmap(sf_spectrum, (0, None, None))(jax.random.split(key, n), snr, spread)


@functools.partial(jax.jit, static_argnames=("n", "seyfert_fraction"))
def agn_spectra(key: jax.Array, n: int, snr=30.0, seyfert_fraction: float = 0.5, spread=1.0):
    """n AGN spectra (n, n_bins) and line quantities (n, 8)."""
    return jax.vmap(agn_spectrum, (0, None, None, None))(jax.random.split(key, n), snr, seyfert_fraction, spread)


def composite(sf: jax.Array, agn: jax.Array, sf_weight) -> jax.Array:
    """The training composite (docs/model.md#training) `w * SF + (1 - w) * AGN` of two (n_bins,) spectra."""
    return sf_weight * sf + (1.0 - sf_weight) * agn


composite_batch = jax.vmap(composite)  # (B, n_bins), (B, n_bins), (B,) -> (B, n_bins)


@functools.partial(jax.jit, static_argnames="n")
def random_composites(key: jax.Array, sf_library: jax.Array, agn_library: jax.Array, n: int):
    """n composites of random library members with w ~ U(0, 1).

    sf_library (N_sf, n_bins) and agn_library (N_agn, n_bins) should already have a common
    flux scale (unit median in the normalisation window), so that w is the SF share of the flux in the window.
    Returns (composites (n, n_bins), w (n,), sf_index (n,), agn_index (n,)).
    """
    sf_key, agn_key, w_key = jax.random.split(key, 3)
    sf_index = jax.random.randint(sf_key, (n,), 0, sf_library.shape[0])
    agn_index = jax.random.randint(agn_key, (n,), 0, agn_library.shape[0])
    w = jax.random.uniform(w_key, (n,))
    return composite_batch(sf_library[sf_index], agn_library[agn_index], w), w, sf_index, agn_index
