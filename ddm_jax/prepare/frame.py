"""Observed spectra onto the rest-frame grid in the frame the DDM learned (docs/prepare.md#the-frame):
Galactic extinction removed and the resolution matched to MaNGA's in the observed frame
(`ddm_jax.spectra.instrument`), then the rebin; a spectrum that is one of many of a galaxy (a cube's
spaxel, an RSS fibre: it has a `position`) is rebinned again at its own velocity, which a first
pass of the fit at the galaxy's redshift measures.

What it adds to PREPARED (schema.FRAME_KEYS), per spectrum:
  ebv_galactic (B,) float32          the E(B-V) corrected for (0 where nothing gave one)
  lsf_coarser_fraction (B,) float32  the fraction of the spectrum's good pixels on the grid where the
                                     instrument is coarser than the target (not sharpened); NaN: the
                                     input carries no resolution
  resolution_sigma_kms (B,) float32  the prepared spectrum's instrumental sigma at 5500 A rest (km/s);
                                     NaN: not known
  spaxel_velocity (B,) float32       a spaxel's (fibre's) velocity relative to the galaxy's redshift
                                     (km/s), at which it was rebinned (z is then (1+z)(1+v/c)-1); NaN
                                     for a spectrum that is not one of many
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from ddm_jax.batching import map_padded
from ddm_jax.constants import LINE_NAMES, SPEED_OF_LIGHT_KMS
from ddm_jax.prepare import fit
from ddm_jax.prepare.continuum import REFERENCE_WAVELENGTH
from ddm_jax.progress import log as log_line
from ddm_jax.runtime import disable_cpu_concurrent_scheduler
from ddm_jax.spectra import instrument
from ddm_jax.spectra.resample import MAX_CHUNK, padded_size, rebin_spectra
from ddm_jax.spectra.spectrum import Spectrum

# The first pass takes the gas velocity where Halpha is detected at this S/N (a line pins the
# frame to a fraction of a bin), the stars' elsewhere.
FIRST_PASS_SNR = 5.0
_HALPHA = LINE_NAMES.index("halpha")


def correct_instrument(spectra: list[Spectrum], resolution: str = "manga",
                       log: Callable[[str], None] = log_line) -> tuple[list[Spectrum], dict[str, np.ndarray]]:
    """Galactic extinction removed (E(B-V) = `Spectrum.ebv`, 0 where None) and, with resolution
    'manga', the resolution matched to the target. Returns the new spectra (the inputs are not
    changed) and ebv_galactic, lsf_coarser_fraction, resolution_sigma_kms (B,) float32."""
    if resolution not in instrument.RESOLUTIONS:
        raise ValueError(f"resolution must be one of {instrument.RESOLUTIONS}, not {resolution!r}")
    matched = resolution == "manga"
    ebv = np.array([s.ebv or 0.0 for s in spectra], np.float64)
    out = []
    for spectrum, value in zip(spectra, ebv):
        spectrum = instrument.deredden(spectrum, value)
        out.append(instrument.match_resolution(spectrum) if matched and spectrum.lsf_sigma is not None else spectrum)
    info = {"ebv_galactic": ebv.astype(np.float32),
            "lsf_coarser_fraction": np.array([instrument.coarser_fraction(s) for s in spectra], np.float32),
            "resolution_sigma_kms": np.array([instrument.resolution_kms(s, matched, REFERENCE_WAVELENGTH)
                                              for s in spectra], np.float32)}
    _report(spectra, info, matched, log)
    return out, info


def _report(spectra: list[Spectrum], info: dict[str, np.ndarray], matched: bool, log: Callable[[str], None]) -> None:
    """One line per kind of thing the user should know, not one per spectrum."""
    n = len(spectra)
    if unknown := sum(s.ebv is None for s in spectra):
        log(f"{unknown} of {n} spectra: no Galactic E(B-V) in the file, --ebv or an ebv column of --z-table; "
            "not corrected for Galactic extinction (E(B-V) = 0)")
    if no_lsf := sum(s.lsf_sigma is None for s in spectra):
        log(f"{no_lsf} of {n} spectra carry no instrumental resolution: taken as they are"
            + (", not convolved to MaNGA's" if matched else ""))
    if coarser := int(np.sum(info["lsf_coarser_fraction"] > 0)):
        log(f"{coarser} of {n} spectra are coarser than MaNGA's resolution on part of the grid (by more than "
            f"{instrument.COARSER_TOLERANCE:.0%}; lsf_coarser_fraction): left as they are there")


def spaxel_velocities(flux: np.ndarray, ivar: np.ndarray) -> np.ndarray:
    """The first pass: each rest-frame spectrum's velocity (km/s) relative to the frame it is in,
    the gas's where Halpha has S/N > FIRST_PASS_SNR and its fit is inside the search, else the
    stars' where theirs is, else 0. flux, ivar (B, 2208) -> (B,) float64."""
    disable_cpu_concurrent_scheduler()  # as pipeline.measure: the batched fits hang under XLA:CPU's concurrent one
    fitted = map_padded(fit.fit_spectra, (flux, ivar), MAX_CHUNK, padded_size)
    gas_ok = (fitted["line_snr"][:, _HALPHA] > FIRST_PASS_SNR) & ~fitted["velocity_at_edge"]
    stars_ok = np.isfinite(fitted["stellar_velocity"]) & ~fitted["stellar_velocity_at_edge"]
    return np.where(gas_ok, fitted["velocity"], np.where(stars_ok, fitted["stellar_velocity"], 0.0)).astype(np.float64)


def rest_frame(spectra: list[Spectrum], resolution: str = "manga",
               log: Callable[[str], None] = log_line) -> tuple[list[Spectrum], dict[str, np.ndarray]]:
    """`correct_instrument`, the rebin, and each spectrum with a `position` rebinned again at its
    own velocity (`spaxel_velocities`). Returns the spectra as rebinned (z the one used) and
    flux, ivar, mask (B, 2208) with the module docstring's keys."""
    disable_cpu_concurrent_scheduler()  # before the rebin starts JAX: the fits after it need the setting
    spectra, info = correct_instrument(spectra, resolution, log)
    grid = rebin_spectra(spectra)
    velocity = np.full(len(spectra), np.nan)
    many = np.array([s.position is not None and bool((grid["mask"][i] == 0).any()) for i, s in enumerate(spectra)])
    if many.any():
        index = np.flatnonzero(many)
        velocity[index] = spaxel_velocities(grid["flux"][index], grid["ivar"][index])
        for i in index:
            spectra[i] = dataclasses.replace(
                spectra[i], z=(1 + spectra[i].z) * (1 + velocity[i] / SPEED_OF_LIGHT_KMS) - 1)
        shifted = rebin_spectra([spectra[i] for i in index])
        for key in grid:
            grid[key][index] = shifted[key]
        log(f"{index.size} spectra of cubes or RSS files rebinned at their own velocity (spaxel_velocity, "
            f"{np.min(velocity[index]):.0f} to {np.max(velocity[index]):.0f} km/s about the galaxy's redshift)")
    return spectra, {**grid, **info, "spaxel_velocity": velocity.astype(np.float32)}
