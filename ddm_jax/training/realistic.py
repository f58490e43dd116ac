"""Realistic SF and AGN galaxy spectra: real stellar populations, photoionisation-model lines, dust
and survey-like noise (docs/realistic.md).

One spectrum, from one key (`galaxy`), batched with `vmap` (`galaxies`):

1. a star-formation history: light weights over the 40 BC03 simple stellar populations of
   `ddm_jax.templates` (a log-normal in age about a class-dependent centre, one metallicity
   spread, multiplicative jitter), broadened by the stellar velocity dispersion (the templates'
   own 2.3 A FWHM stands in for the instrument, close to SDSS's 69 km/s);
2. a flux-conserving rebin onto the rest-frame grid, then Calzetti (2000) attenuation of the
   stars; AGN add a power-law continuum (f_lambda ~ lambda^-beta);
3. nebular lines from a row of a photoionisation grid (`ddm_jax.nebular`: NebulaBayes' HII-region
   grid for SF galaxies, its narrow-line-region grid for Seyferts and LINERs), with per-species
   scatter, attenuated by the gas (E(B-V)_gas = E(B-V)_stars / 0.44, i.e. A_V,gas = 1.74 A_V,stars,
   Cardelli et al. 1989 curve) so the
   Balmer decrement follows the dust; Halpha's equivalent width against the continuum sets the
   line strength; widths from the gas dispersion and the instrument;
4. unit median flux in the normalisation window, then Gaussian noise from an error spectrum of
   survey-like shape (photon noise of the source over a sky floor, worse blue of 4200 A) scaled
   to a continuum S/N per 2 A bin drawn log-uniformly.

Each spectrum comes with its inverse variance and its eight true line quantities
(`constants.LINE_QUANTITIES`), computed from the very line fluxes it carries (observed, i.e.
attenuated, as `prepare` measures them).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ddm_jax.astro import nebular
from ddm_jax.astro.templates import load_templates
from ddm_jax.constants import (
    EMISSION_LINES,
    N_BINS,
    SPEED_OF_LIGHT_KMS,
    binned_gaussian,
    norm_window_slice,
    wavelength_grid,
)
from ddm_jax.errors import InputError
from ddm_jax.model import bpt
from ddm_jax.spectra.resample import grid_edges, overlap_sums, pixel_edges

LINE_INDEX = {name: i for i, name in enumerate(EMISSION_LINES)}
# Calzetti et al. 2000: E(B-V)_stars = 0.44 E(B-V)_gas, so A_V,gas / A_V,stars = R_V,CCM / (0.44 R_V,Calzetti)
GAS_TO_STARS_AV = nebular.CCM_RV / (0.44 * nebular.CALZETTI_RV)
INSTRUMENT_SIGMA_KMS = 69.0  # SDSS's resolution, added to the lines in quadrature
SKY_FLOOR = 0.3  # of the unit-median source flux: the background's share of the variance
BLUE_NOISE_EDGE = 4200.0  # A: the error spectrum rises blueward (falling throughput)
# Species whose strength scatters about the grid row (dex); Balmer ratios stay as the grid says.
SCATTERED = (("oii_3726", "oii_3729"), ("oiii_4959", "oiii_5007"), ("oi_6300", "oi_6363"),
             ("nii_6548", "nii_6584"), ("sii_6717", "sii_6731"))

_GRID = wavelength_grid(N_BINS)
_WINDOW = norm_window_slice(N_BINS)


@dataclasses.dataclass(frozen=True)
class GalaxyPrior:
    """Ranges (uniform unless said) of one class's physical parameters."""

    log_age_gyr: tuple[float, float]  # centre of the light-weighted age distribution
    age_width_dex: tuple[float, float]
    av_stars: tuple[float, float]  # mag, Calzetti
    sigma_stars_kms: tuple[float, float]
    sigma_gas_kms: tuple[float, float]
    log_ha_ew: tuple[float, float]  # log10 of the Halpha emission EW (A)
    agn_continuum: tuple[float, float] = (0.0, 0.0)  # power law's share of the 5500 A continuum
    line_scatter_dex: float = 0.05


PRIORS = {
    "sf": GalaxyPrior(log_age_gyr=(-1.3, 0.5), age_width_dex=(0.3, 0.9), av_stars=(0.0, 1.0),
                      sigma_stars_kms=(40.0, 150.0), sigma_gas_kms=(20.0, 100.0), log_ha_ew=(0.7, 2.3)),
    "seyfert": GalaxyPrior(log_age_gyr=(0.0, 1.0), age_width_dex=(0.2, 0.7), av_stars=(0.0, 0.8),
                           sigma_stars_kms=(80.0, 280.0), sigma_gas_kms=(100.0, 350.0), log_ha_ew=(0.5, 1.8),
                           agn_continuum=(0.0, 0.3)),
    "liner": GalaxyPrior(log_age_gyr=(0.4, 1.0), age_width_dex=(0.1, 0.5), av_stars=(0.0, 0.5),
                         sigma_stars_kms=(120.0, 300.0), sigma_gas_kms=(100.0, 300.0), log_ha_ew=(0.2, 1.0),
                         agn_continuum=(0.0, 0.05)),
}
LOG_Z_RANGE = (-2.4, -1.3)  # centre of the metallicity spread: BC03's Z = 0.004-0.05
SNR_RANGE = (8.0, 50.0)  # continuum S/N per 2 A bin in the normalisation window, log-uniform
# The parts of the grids that local galaxies occupy (SDSS's SF locus: roughly solar metallicity,
# -3.5 <= log U <= -2.5, HII-region pressures; AGN hosts are metal-rich).
GRID_LIMITS = {"hii": {"12 + log O/H": (8.0, 9.3), "log U": (-3.5, -2.5), "log P/k": (5.0, 7.0)},
               "nlr": {"12 + log O/H": (8.5, 9.3), "log P/k": (5.0, 7.0)}}


class _Tables(NamedTuple):
    """Everything the generator reads, as device arrays (built once, `tables()`)."""

    template_flux: jax.Array  # (N_t, L) on the templates' log grid
    log_age: jax.Array  # (N_t,) log10 Gyr
    log_z: jax.Array  # (N_t,)
    template_edges: jax.Array  # (L + 1,) Angstrom
    grid_edges: jax.Array  # (N_BINS + 1,)
    max_pixels: int  # whole template pixels inside one grid bin, at most (resample.overlap_sums)
    velscale: float
    stellar_attenuation: jax.Array  # (N_BINS,) A_lambda / A_V, Calzetti
    line_attenuation: jax.Array  # (14,) A_lambda / A_V, Cardelli
    line_wavelengths: jax.Array  # (14,)
    rows: dict  # class -> (N_rows, 14) intrinsic line fluxes relative to Hbeta


def _row_classes(fluxes: np.ndarray) -> dict[str, np.ndarray]:
    """Split grid rows by where their ratios fall: SF below Kauffmann 2003 (and Kewley 2001 in
    [SII]); AGN above Kewley 2001 in both diagrams, Seyfert or LINER by Kewley 2006's [SII] line."""
    def ratio(a, b):
        return np.log10(fluxes[:, LINE_INDEX[a]] / fluxes[:, LINE_INDEX[b]])

    nii, oiii = ratio("nii_6584", "halpha"), ratio("oiii_5007", "hbeta")
    sii = np.log10((fluxes[:, LINE_INDEX["sii_6717"]] + fluxes[:, LINE_INDEX["sii_6731"]])
                   / fluxes[:, LINE_INDEX["halpha"]])
    nii_class = np.asarray(bpt.classify_nii(nii, oiii))
    sii_class = np.asarray(bpt.classify_sii(sii, oiii))
    # the observed envelopes: no SDSS SF galaxy below log [OIII]/Hbeta ~ -1.2, no AGN left of log [NII]/Ha ~ -0.6
    agn = (nii_class >= bpt.SEYFERT) & (sii_class >= bpt.SEYFERT) & (nii > -0.6)
    return {"sf": (nii_class == bpt.STAR_FORMING) & (sii_class == bpt.STAR_FORMING) & (oiii > -1.2),
            "seyfert": agn & (sii_class == bpt.SEYFERT), "liner": agn & (sii_class == bpt.LINER)}


def _within_limits(grid: nebular.NebularGrid, limits: dict) -> np.ndarray:
    """The fluxes of the grid rows whose parameters lie within `limits` ({name: (low, high)})."""
    keep = np.ones(len(grid.params), bool)
    for name, (low, high) in limits.items():
        column = grid.params[:, grid.param_names.index(name)]
        keep &= (column >= low - 1e-3) & (column <= high + 1e-3)
    return grid.fluxes[keep]


def tables() -> _Tables:
    """The generator's tables, built on first use (outside any trace: they are constants)."""
    with jax.ensure_compile_time_eval():
        return _build_tables()


@functools.cache
def _build_tables() -> _Tables:
    templates = load_templates("bc03")
    grids = {name: _within_limits(grid, GRID_LIMITS[name]) for name, grid in nebular.load_nebular_grids().items()}
    rows = {"sf": grids["hii"][_row_classes(grids["hii"])["sf"]]}
    nlr_classes = _row_classes(grids["nlr"])
    rows.update({kind: grids["nlr"][nlr_classes[kind]] for kind in ("seyfert", "liner")})
    for kind, array in rows.items():
        if len(array) == 0:
            raise InputError(f"the nebular grids leave no {kind} rows in GRID_LIMITS (data/nebular_dust.npz damaged?)")
    template_edges = pixel_edges(templates.wavelength)
    max_pixels = int(np.diff(np.searchsorted(template_edges, grid_edges(N_BINS))).max())
    return _Tables(
        template_flux=jnp.asarray(templates.flux), log_age=jnp.log10(jnp.asarray(templates.ages_gyr)),
        log_z=jnp.log10(jnp.asarray(templates.metallicities)),
        template_edges=jnp.asarray(template_edges), grid_edges=jnp.asarray(grid_edges(N_BINS)), max_pixels=max_pixels,
        velscale=templates.velscale, stellar_attenuation=jnp.asarray(nebular.attenuation("calzetti00")),
        line_attenuation=jnp.asarray(nebular.line_attenuation("ccm89")),
        line_wavelengths=jnp.asarray(list(EMISSION_LINES.values()), jnp.float32),
        rows={kind: jnp.asarray(array) for kind, array in rows.items()})


def _uniform(key, bounds):
    return jax.random.uniform(key, minval=bounds[0], maxval=bounds[1])


def _broaden(flux: jax.Array, sigma_pixels) -> jax.Array:
    """Gaussian convolution (L,) by sigma_pixels on the log grid, through the FFT; the edges are
    padded with their own values so nothing wraps around."""
    pad = 128
    padded = jnp.pad(flux, pad, mode="edge")
    frequency = jnp.fft.rfftfreq(padded.size)
    kernel = jnp.exp(-2.0 * (jnp.pi * frequency * sigma_pixels) ** 2)
    return jnp.fft.irfft(jnp.fft.rfft(padded) * kernel, padded.size)[pad:-pad]


def _stellar_weights(key, prior: GalaxyPrior, t: _Tables) -> jax.Array:
    """Light weights (N_t,) of a star-formation history: log-normal in age, one metallicity spread."""
    centre_key, width_key, z_key, z_width_key, jitter_key = jax.random.split(key, 5)
    centre, width = _uniform(centre_key, prior.log_age_gyr), _uniform(width_key, prior.age_width_dex)
    z_centre, z_width = _uniform(z_key, LOG_Z_RANGE), _uniform(z_width_key, (0.1, 0.4))
    log_weight = -0.5 * ((t.log_age - centre) / width) ** 2 - 0.5 * ((t.log_z - z_centre) / z_width) ** 2
    jitter = jax.random.gamma(jitter_key, 2.0, t.log_age.shape) / 2.0
    weights = jnp.exp(log_weight - log_weight.max()) * jitter
    return weights / weights.sum()


def _line_fluxes(key, kind: str, t: _Tables, scatter: float) -> jax.Array:
    """Intrinsic line fluxes (14,) relative to Hbeta: a random grid row, species scattered."""
    row_key, scatter_key = jax.random.split(key)
    rows = t.rows[kind]
    fluxes = rows[jax.random.randint(row_key, (), 0, rows.shape[0])]
    shifts = scatter * jax.random.normal(scatter_key, (len(SCATTERED),))
    factor = jnp.ones(fluxes.shape)
    for shift, species in zip(shifts, SCATTERED):
        factor = factor.at[jnp.array([LINE_INDEX[name] for name in species])].set(10.0 ** shift)
    return fluxes * factor


def line_quantities(fluxes: jax.Array, ha_ew: jax.Array) -> jax.Array:
    """The eight `constants.LINE_QUANTITIES` (8,) of observed line fluxes (14,) and an Halpha EW (A)."""
    f = {name: fluxes[i] for name, i in LINE_INDEX.items()}
    sii = f["sii_6717"] + f["sii_6731"]
    return jnp.log10(jnp.stack([
        f["nii_6584"] / f["halpha"], f["oiii_5007"] / f["hbeta"], f["oi_6300"] / f["halpha"],
        (f["oii_3726"] + f["oii_3729"]) / f["hbeta"], f["halpha"] / f["hbeta"], f["sii_6717"] / f["sii_6731"],
        sii / f["halpha"], ha_ew]))


def _continuum_at_halpha(continuum: jax.Array) -> jax.Array:
    """The continuum level under Halpha: median of the bins 30-80 A either side of the line."""
    offset = jnp.abs(jnp.asarray(_GRID) - EMISSION_LINES["halpha"])
    near = (offset > 30.0) & (offset < 80.0)
    return jnp.nanmedian(jnp.where(near, continuum, jnp.nan))


class Galaxy(NamedTuple):
    spectrum: jax.Array  # (N_BINS,) unit median in the normalisation window, noisy
    ivar: jax.Array  # (N_BINS,)
    lines: jax.Array  # (8,) true line quantities
    noiseless: jax.Array  # (N_BINS,)


def galaxy(key: jax.Array, kind: str, snr_range: tuple[float, float] = SNR_RANGE) -> Galaxy:
    """One realistic galaxy of class `kind` ("sf", "seyfert" or "liner"); see the module docstring."""
    prior, t = PRIORS[kind], tables()
    keys = jax.random.split(key, 12)
    grid = jnp.asarray(_GRID)

    stars = _stellar_weights(keys[0], prior, t) @ t.template_flux
    stars = _broaden(stars, _uniform(keys[1], prior.sigma_stars_kms) / t.velscale)
    av_stars = _uniform(keys[2], prior.av_stars)
    binned = overlap_sums(t.template_edges, stars, t.grid_edges, 1, t.max_pixels) / jnp.diff(t.grid_edges)
    continuum = binned * 10.0 ** (-0.4 * av_stars * t.stellar_attenuation)
    continuum = continuum / jnp.median(continuum[_WINDOW])
    agn_share = _uniform(keys[3], prior.agn_continuum)
    power_law = (grid / 5500.0) ** -_uniform(keys[4], (0.5, 2.0))
    continuum = (1.0 - agn_share) * continuum + agn_share * power_law

    intrinsic = _line_fluxes(keys[5], kind, t, prior.line_scatter_dex)
    observed = intrinsic * 10.0 ** (-0.4 * GAS_TO_STARS_AV * av_stars * t.line_attenuation)
    ha_ew = 10.0 ** _uniform(keys[6], prior.log_ha_ew)
    fluxes = observed * ha_ew * _continuum_at_halpha(continuum) / observed[LINE_INDEX["halpha"]]
    sigma_kms = jnp.sqrt(_uniform(keys[7], prior.sigma_gas_kms) ** 2 + INSTRUMENT_SIGMA_KMS ** 2)
    emission = binned_gaussian(grid, t.line_wavelengths, t.line_wavelengths * sigma_kms / SPEED_OF_LIGHT_KMS) @ fluxes

    noiseless = continuum + emission
    noiseless = noiseless / jnp.median(noiseless[_WINDOW])
    snr = jnp.exp(_uniform(keys[8], (np.log(snr_range[0]), np.log(snr_range[1]))))
    blue = jnp.where(grid < BLUE_NOISE_EDGE, (BLUE_NOISE_EDGE / grid) ** 6, 1.0)
    shape = jnp.sqrt(jnp.clip(noiseless, 0.0) + SKY_FLOOR) * blue
    sigma = shape * jnp.median((noiseless / shape)[_WINDOW]) / snr  # median S/N in the window = snr
    spectrum = noiseless + sigma * jax.random.normal(keys[9], noiseless.shape)
    return Galaxy(spectrum, 1.0 / sigma ** 2, line_quantities(fluxes, ha_ew), noiseless)


@functools.partial(jax.jit, static_argnames=("n", "kind", "snr_range"))
def galaxies(key: jax.Array, n: int, kind: str, snr_range: tuple[float, float] = SNR_RANGE) -> Galaxy:
    """n galaxies of one class (each field with a leading axis n), a pure function of (key, n)."""
    return jax.vmap(lambda k: galaxy(k, kind, snr_range))(jax.random.split(key, n))


def agn_galaxies(key: jax.Array, n: int, seyfert_fraction: float = 0.5,
                 snr_range: tuple[float, float] = SNR_RANGE) -> Galaxy:
    """n AGN-dominated galaxies: round(n * seyfert_fraction) Seyferts and the rest LINERs, in a
    random order (any slice of a library holds both kinds)."""
    seyfert_key, liner_key, order_key = jax.random.split(key, 3)
    n_seyfert = round(n * seyfert_fraction)
    parts = [galaxies(k, count, kind, snr_range) for k, count, kind in
             ((seyfert_key, n_seyfert, "seyfert"), (liner_key, n - n_seyfert, "liner")) if count]
    order = jax.random.permutation(order_key, n)
    return Galaxy(*(jnp.concatenate(fields)[order] for fields in zip(*parts)))
