"""From spectrum files to PREPARED.npz: read, rebin to the rest-frame grid, fit the stellar
continuum and the emission lines, gate.

PREPARED.npz holds, for B spectra (order of the inputs, bad ones left out):
  flux, ivar (B, 2208) float32   rest-frame flux density on the DDM's grid, its inverse variance
  mask (B, 2208) uint8           resample.NO_COVERAGE | NO_DATA | FILLED bits, 0 = measured
  continuum, line_model (B, 2208) float32   the fitted stellar continuum and narrow lines
  wavelength (2208,) float32     the grid, 3700 + 2 i Angstrom (vacuum)
  z (B,) float64, ids (B,) str   redshift used (a spaxel's own: see spaxel_velocity), spectrum id (file
                                 name, or name#row)
  position (B, 2) int32          a cube spaxel's (x, y) or an RSS fibre's (k, -1); (-1, -1) elsewhere
  source (B,) str, wcs (B,) str  the file, and a cube's celestial WCS header ('' elsewhere): with
                                 `position`, a decomposition goes back on the sky as a map
  survey_id (B,) str             'sdss:PLATE-MJD-FIBERID', 'desi:TARGETID', 'manga:PLATE-IFU' or ''
  provenance () str              JSON: ddm-jax version, date, inputs and options (docs/fits.md)
  line_names (8,) str            lines.LINE_NAMES
  line_flux, line_flux_err, line_snr (B, 8) float32   fitted narrow fluxes (flux units x Angstrom), >= 0:
                                 an undetected line has flux 0 and a 3-sigma limit of 3 x line_flux_err;
                                 errors scaled by sqrt(max(1, rchi2)) and the rebin's noise correlation
  line_amp_noise (B, 8) float32  fitted peak over the residual noise of the line's window (A/N)
  line_ew (B, 8) float32         emission equivalent widths (Angstrom) over the stellar continuum
  meets_snr (B,) bool            S/N > 8 in every line lines.REQUIRED_LINES names
  line_fit_ok (B,) bool          the fits describe the data (the criteria of ddm_jax.prepare.fit)
  broad_balmer (B,) bool         a broad Hbeta or Halpha (type-1 AGN) was found: the DDM never saw one
  filled_share (B,) float32, filled_lines (B, 6) bool   share of FILLED bins; a filled bin within
                                 FILLED_GUARD_KMS of each REQUIRED_LINES line
  filled_ok (B,) bool            no required line touched and filled_share <= --max-filled
  passes_gate (B,) bool          meets_snr and line_fit_ok and not broad_balmer and filled_ok
  log_nii_ha, log_oiii_hb, log_sii_ha, log_oi_ha (B,) float32   NaN where a flux is 0
  bpt_nii, bpt_sii, bpt_oi, bpt_kewley06 (B,) int8   ddm_jax.bpt classes of the measured ratios
  whan (B,) int8                 WHAN class (bpt.classify_whan) from [NII]/Halpha and Halpha's EW
  line_velocity, line_sigma, line_sigma_balmer, line_fit_rchi2 (B,) float32   the line fit's shift,
                                 forbidden and Balmer widths (km/s), quality (of the model kept)
  sii_at_bound (B,) bool         [SII]6717/6731 held at a limit of constants.SII_RATIO_RANGE
  line_wing (B,) bool, wing_flux (B, 8), wing_velocity, wing_sigma, wing_delta_bic (B,) float32
                                 the second (wing) component: kept or not (BIC), its fluxes, kinematics
  stellar_velocity, stellar_sigma, continuum_rchi2 (B,) float32   the continuum fit's
  line_velocity_at_edge, line_sigma_at_edge, stellar_velocity_at_edge, stellar_sigma_at_edge (B,)
                                 bool: a fit within one step of the edge of its search
  broad_flux, broad_flux_err, broad_snr, broad_delta_chi2 (B,) float32   the broad-Balmer test (flux of
                                 the broad Halpha; S/N broad Halpha's, or Hbeta's where Halpha has no data)
  template_weights (B, N) float32   the continuum's template weights (ddm_jax.templates order)
  log_stellar_mass, log_stellar_mass_err (B,) float32   log10 M_sun formed inside the aperture, and its
                                 error (dex), from the continuum fit (ddm_jax.prepare.mass); NaN at z <= 0
  ebv_galactic, lsf_coarser_fraction, resolution_sigma_kms, spaxel_velocity (B,) float32
                                 the frame (ddm_jax.prepare.frame): Galactic E(B-V) corrected for, the
                                 share of pixels coarser than MaNGA's resolution, the resolution at
                                 5500 A, a spaxel's own velocity
  format () str                  PREPARED_FORMAT
(schema.PREPARED_KEYS must be there; schema.PREPARED_LINE_FIT_KEYS are the line fit's and gate's details.)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ddm_jax.batching import map_padded
from ddm_jax.constants import (
    EMISSION_LINES,
    FILLED_GUARD_KMS,
    LINE_NAMES,
    MAX_FILLED_SHARE,
    REQUIRED_LINES,
    SNR_MIN,
    SPEED_OF_LIGHT_KMS,
    wavelength_grid,
)
from ddm_jax.errors import InputError
from ddm_jax.io.loaders.arrays import read_ebv_table, read_z_table
from ddm_jax.io.loaders.registry import expand_inputs, read_many
from ddm_jax.io.outputs.base import provenance_now
from ddm_jax.io.outputs.prepared import write_prepared
from ddm_jax.model import bpt
from ddm_jax.prepare import fit, lines, mass
from ddm_jax.prepare.frame import rest_frame
from ddm_jax.progress import log as log_line
from ddm_jax.runtime import disable_cpu_concurrent_scheduler
from ddm_jax.schema import PREPARED_FORMAT, SHARED_KEYS
from ddm_jax.spectra.covariance import inflation_factors
from ddm_jax.spectra.instrument import EXTINCTION_LAW, RESOLUTIONS
from ddm_jax.spectra.resample import COVERAGE_POLICIES, FILLED, MAX_CHUNK, coverage_message, padded_size
from ddm_jax.spectra.spectrum import ARRAY_SUFFIXES, FITS_SUFFIXES, Spectrum, describe

SNR_POLICIES = ("skip", "warn")
_GRID = wavelength_grid().astype(np.float64)
# Bins within FILLED_GUARD_KMS of a required line: no filled bin may touch them. (n_required, 2208)
_GUARDED = np.stack([np.abs(_GRID - EMISSION_LINES[n]) <= EMISSION_LINES[n] * FILLED_GUARD_KMS / SPEED_OF_LIGHT_KMS
                     for n in REQUIRED_LINES])


def filled_check(mask: np.ndarray, max_filled: float = MAX_FILLED_SHARE) -> dict[str, np.ndarray]:
    """The gate's filled-bin criteria for masks (B, 2208): filled_share (B,) float32 of bins with
    the FILLED bit, filled_lines (B, n_required) bool (a filled bin near REQUIRED_LINES[k]), and
    filled_ok (B,): no required line touched and filled_share <= max_filled."""
    filled = (np.asarray(mask) & FILLED) != 0
    share = filled.mean(axis=1).astype(np.float32)
    touched = (filled[:, None, :] & _GUARDED[None]).any(axis=2)
    return {"filled_share": share, "filled_lines": touched, "filled_ok": ~touched.any(axis=1) & (share <= max_filled)}


def measure(flux: np.ndarray, ivar: np.ndarray, scheme: str = "standard", inflation: np.ndarray | None = None,
            mask: np.ndarray | None = None, max_filled: float = MAX_FILLED_SHARE,
            z: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Continuum and line fits, ratios, BPT classes and the gate's criteria for (B, 2208)
    rest-frame spectra (module docstring's keys). inflation (B, 2208): the rebin's variance
    inflation (None: uncorrelated bins); mask (B, 2208): the rebin's bits (None: all measured);
    with their redshifts z (B,), the stellar mass too."""
    disable_cpu_concurrent_scheduler()  # the batched fits hang under XLA:CPU's concurrent scheduler
    inflation = np.ones_like(flux) if inflation is None else inflation
    fitted = map_padded(lambda f, i, v: fit.fit_spectra(f, i, inflation=v), (flux, ivar, inflation),
                        MAX_CHUNK, padded_size)
    result = {k: np.asarray(v) for k, v in lines.line_ratios(fitted["line_flux"], scheme).items()}
    meets_snr = np.asarray(lines.meets_snr(fitted["line_snr"]))
    filled = filled_check(np.zeros(flux.shape, np.uint8) if mask is None else mask, max_filled)
    result.update(
        {key: fitted[key] for key in ("line_flux", "line_flux_err", "line_snr", "line_amp_noise", "line_ew",
                                   "continuum", "line_model", "line_fit_ok", "broad_balmer", "stellar_velocity",
                                   "stellar_sigma", "continuum_rchi2", "broad_flux", "broad_flux_err", "broad_snr",
                                   "broad_delta_chi2", "wing_flux", "wing_velocity", "wing_sigma", "wing_delta_bic",
                                   "template_weights", "stellar_velocity_at_edge", "stellar_sigma_at_edge")},
        **filled, line_velocity_at_edge=fitted["velocity_at_edge"], line_sigma_at_edge=fitted["sigma_at_edge"],
        meets_snr=meets_snr, line_velocity=fitted["velocity"], line_sigma=fitted["sigma"],
        line_sigma_balmer=fitted["sigma_balmer"], line_fit_rchi2=fitted["rchi2"], line_wing=fitted["wing"],
        sii_at_bound=fitted["sii_at_bound"],
        whan=np.asarray(bpt.classify_whan(result["log_nii_ha"], fitted["line_ew"][:, LINE_NAMES.index("halpha")])),
        passes_gate=meets_snr & fitted["line_fit_ok"] & ~fitted["broad_balmer"] & filled["filled_ok"],
    )
    if z is not None:
        result.update(mass.stellar_mass(fitted["template_mass"], fitted["template_mass_err"], z,
                                        fitted["continuum_rchi2"]))
    return result


def _gate_message(arrays: dict[str, np.ndarray], i: int, max_filled: float = MAX_FILLED_SHARE) -> str:
    """Why spectrum i fails the gate, in one line."""
    reasons = []
    snr = arrays["line_snr"][i]
    low = [f"{name} {snr[LINE_NAMES.index(name)]:.1f}" for name in REQUIRED_LINES
           if not snr[LINE_NAMES.index(name)] > SNR_MIN]
    if low:
        reasons.append(f"S/N <= {SNR_MIN:g} in " + ", ".join(low))
    if not arrays["line_fit_ok"][i]:
        reasons.append(f"fit not acceptable (line rchi2 {arrays['line_fit_rchi2'][i]:.2f}, continuum rchi2 "
                       f"{arrays['continuum_rchi2'][i]:.2f}, gas at {arrays['line_velocity'][i]:.0f} km/s "
                       f"sigma {arrays['line_sigma'][i]:.0f} km/s)")
    if arrays["broad_balmer"][i]:
        reasons.append(f"broad Balmer lines (broad Hbeta or Halpha S/N {arrays['broad_snr'][i]:.0f}): a type-1 AGN")
    if arrays["filled_lines"][i].any():
        near = ", ".join(n for n, hit in zip(REQUIRED_LINES, arrays["filled_lines"][i]) if hit)
        reasons.append(f"interpolated (FILLED) bins within {FILLED_GUARD_KMS:g} km/s of {near}")
    if arrays["filled_share"][i] > max_filled:
        reasons.append(f"{100 * arrays['filled_share'][i]:.1f} % of the bins interpolated (FILLED), above "
                       f"{100 * max_filled:g} % (--max-filled)")
    return f"{arrays['ids'][i]}: " + "; ".join(reasons)


def _select(arrays: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    return {k: (v if k in SHARED_KEYS else v[keep]) for k, v in arrays.items()}


def prepare_spectra(spectra: list[Spectrum], coverage: str = "refuse", snr_policy: str = "skip",
                    scheme: str = "standard", log: Callable[[str], None] = log_line,
                    resolution: str = "manga", max_filled: float = MAX_FILLED_SHARE) -> dict[str, np.ndarray]:
    """Validated spectra -> the PREPARED arrays (module docstring). Reports each spectrum it
    drops or flags through `log`, then one line of counts that add up. Raises DDMError if none
    is left. `resolution`: 'manga' (convolve to the target) or 'native' (ddm_jax.prepare.frame);
    `max_filled`: the gate's largest share of filled bins."""
    if coverage not in COVERAGE_POLICIES or snr_policy not in SNR_POLICIES or resolution not in RESOLUTIONS:
        raise InputError(f"coverage must be one of {COVERAGE_POLICIES}, S/N policy one of {SNR_POLICIES}, "
                         f"resolution one of {RESOLUTIONS}")
    if not 0.0 <= max_filled <= 1.0:
        raise InputError(f"the largest share of filled bins must be between 0 and 1, got {max_filled}")
    if not spectra:
        raise InputError("no readable spectrum; nothing written")
    spectra, grid = rest_frame(spectra, resolution, log)
    keep = np.ones(len(spectra), bool)
    for i, spectrum in enumerate(spectra):
        if not (grid["mask"][i] == 0).any():
            log(f"{describe(spectrum)}: no good data on the rest-frame grid "
                f"(3700-8114 A at z={spectrum.z:.5f}); skipped")
            keep[i] = False
        elif (message := coverage_message(spectrum, grid["mask"][i])) is not None:
            keep[i] = coverage == "fill"
            log(message + ("; filled (mask bit FILLED)" if keep[i] else "; skipped (--coverage fill keeps it)"))
    arrays = {k: v[keep] for k, v in grid.items()}
    kept = [s for s, k in zip(spectra, keep) if k]
    off_grid = len(spectra) - len(kept)
    if not kept:
        raise InputError(f"none of the {len(spectra)} spectra is left after the coverage check; nothing written")
    z = np.array([s.z for s in kept], np.float64)
    arrays.update(measure(arrays["flux"], arrays["ivar"], scheme, inflation_factors(kept), arrays["mask"],
                          max_filled, z))
    arrays.update(
        z=z, ids=np.array([s.id for s in kept], dtype=str),
        position=np.array([(tuple(s.position) + (-1, -1))[:2] if s.position else (-1, -1) for s in kept], np.int32),
        source=np.array([s.source for s in kept], dtype=str), wcs=np.array([s.wcs or "" for s in kept], dtype=str),
        survey_id=np.array([s.survey_id for s in kept], dtype=str),
        wavelength=wavelength_grid(), line_names=np.array(LINE_NAMES, dtype=str), format=np.array(PREPARED_FORMAT),
    )
    failing = np.flatnonzero(~arrays["passes_gate"])
    for i in failing:
        log(_gate_message(arrays, i, max_filled))
    action = "skipped" if snr_policy == "skip" else "kept with passes_gate = False"
    log(f"{len(spectra)} spectra: {off_grid} off the grid (coverage), {failing.size} failing the gate "
        f"({action}: S/N > {SNR_MIN:g} in {', '.join(REQUIRED_LINES)}, an acceptable fit, no broad "
        f"Balmer lines, no filled bin at a required line, <= {100 * max_filled:g} % filled), "
        f"{len(kept) - failing.size} passing")
    if snr_policy == "skip":
        arrays = _select(arrays, arrays["passes_gate"])
        if not len(arrays["ids"]):
            raise InputError("every spectrum fails the gate; nothing written (--snr-policy warn keeps them)")
    return arrays


def _ebv_summary(ebv: np.ndarray) -> str:
    """The E(B-V) corrected for, in one provenance line: its range and how many had none."""
    return (f"{ebv.min():.4f}-{ebv.max():.4f} over {ebv.size} spectra, {int(np.sum(ebv == 0))} at 0"
            if ebv.size else "")


def run(inputs: list[str], output: str, coverage: str = "refuse", snr_policy: str = "skip",
        z: float | None = None, z_table: str | None = None, scheme: str = "standard", plot_dir=None,
        log: Callable[[str], None] = log_line, ebv: float | None = None, resolution: str = "manga",
        max_filled: float = MAX_FILLED_SHARE) -> dict[str, np.ndarray]:
    """The `prepare` command: read every input (files or directories), write `output` (and, with
    `plot_dir`, a figure of each spectrum's fits). Unreadable or invalid files are reported
    through `log` and left out. `ebv`: the Galactic E(B-V) of spectra whose file and z table give
    none. Returns the arrays."""
    if Path(output).is_dir():  # before the work, not after it
        raise InputError(f"{output}: is a folder; give a file name")
    paths = expand_inputs(inputs)
    if not paths:
        raise InputError("no input files (directories are searched for "
                         f"{', '.join(FITS_SUFFIXES + ARRAY_SUFFIXES)})")
    if ebv is not None and not (np.isfinite(ebv) and ebv >= 0):
        raise InputError(f"--ebv must be finite and >= 0, got {ebv}")
    z_override = read_z_table(z_table) if z_table else None
    ebv_override = read_ebv_table(z_table) if z_table else None
    spectra, errors = read_many(paths, z_override=z_override, z_all=z, ebv_override=ebv_override, ebv_all=ebv)
    for message in errors:
        log(message)
    if not spectra:
        raise InputError(f"no readable spectrum in {len(paths)} file(s) ({len(errors)} unreadable or invalid); "
                         "nothing written")
    arrays = prepare_spectra(spectra, coverage, snr_policy, scheme, log, resolution, max_filled)
    arrays["provenance"] = np.array(json.dumps(provenance_now(
        command="prepare", input=" ".join(map(str, inputs)), coverage=coverage, snr_policy=snr_policy,
        bpt_scheme=scheme, max_filled=max_filled,
        stellar_mass=f"log10 M_sun formed, BC03 (docs/prepare.md), {mass.COSMOLOGY}",
        resolution=resolution, ebv=ebv, extinction_law=EXTINCTION_LAW,
        ebv_galactic=_ebv_summary(arrays["ebv_galactic"]))))
    write_prepared(output, arrays)
    if plot_dir is not None:
        from ddm_jax.report.plotting import plot_prepared

        log(f"drew {len(plot_prepared(arrays, plot_dir))} figures of the fits in {plot_dir}")
    log(f"wrote {output}: {len(arrays['ids'])} of the {len(spectra)} spectra read from {len(paths)} file(s)"
        + (f"; {len(errors)} file(s) or spectra unreadable or invalid" if errors else ""))
    return arrays
