"""From spectrum files to PREPARED.npz: read, rebin to the rest-frame grid, measure lines, gate.

PREPARED.npz holds, for B spectra (order of the inputs, bad ones left out):
  flux, ivar (B, 2208) float32   rest-frame flux density on the DDM's grid, its inverse variance
  mask (B, 2208) uint8           resample.NO_COVERAGE | NO_DATA | FILLED bits, 0 = measured
  wavelength (2208,) float32     the grid, 3700 + 2 i Angstrom (vacuum)
  z (B,) float64, ids (B,) str   redshift used, spectrum id (file name, or name#row)
  line_names (8,) str            lines.LINE_NAMES
  line_flux, line_flux_err, line_snr (B, 8) float32   fitted fluxes (flux units x Angstrom)
  meets_snr (B,) bool            S/N > 8 in every line lines.REQUIRED_LINES names
  log_nii_ha, log_oiii_hb, log_sii_ha, log_oi_ha (B,) float32   NaN where a flux is <= 0
  bpt_nii, bpt_sii (B,) int8     ddm_jax.bpt classes of the measured ratios
  line_velocity, line_sigma, line_fit_rchi2 (B,) float32   the fit's shift, width (km/s), quality
  format () str                  FORMAT
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ddm_jax.batching import map_padded
from ddm_jax.constants import N_BINS, wavelength_grid
from ddm_jax.errors import DDMError
from ddm_jax.io import load_npz, save_npz_atomic
from ddm_jax.prepare import lines, readers, resample
from ddm_jax.progress import log as log_line

FORMAT = "ddm-jax-prepared/1"
COVERAGE_POLICIES = ("refuse", "fill")
SNR_POLICIES = ("skip", "warn")
# Spectra per compiled batch: bounds memory. Batches are padded to a power of two between
# MIN_CHUNK and MAX_CHUNK, so that only a handful of shapes are ever compiled (the line fit
# takes seconds to compile and ~10 ms a spectrum to run on a CPU).
MIN_CHUNK, MAX_CHUNK = 32, 256

PER_SPECTRUM_KEYS = (
    "flux", "ivar", "mask", "z", "ids", "line_flux", "line_flux_err", "line_snr", "meets_snr",
    "log_nii_ha", "log_oiii_hb", "log_sii_ha", "log_oi_ha", "bpt_nii", "bpt_sii",
    "line_velocity", "line_sigma", "line_fit_rchi2",
)
REQUIRED_KEYS = (
    "flux", "ivar", "mask", "wavelength", "z", "ids", "line_names", "line_flux", "line_flux_err",
    "line_snr", "meets_snr", "log_nii_ha", "log_oiii_hb", "log_sii_ha", "log_oi_ha",
)


def _padded_size(n: int) -> int:
    return min(max(1 << max(n - 1, 0).bit_length(), MIN_CHUNK), MAX_CHUNK)


def rebin_spectra(spectra: list[readers.Spectrum]) -> dict[str, np.ndarray]:
    """Rest-frame flux, ivar, mask (B, 2208) for validated spectra, in batches."""
    def rebin(index):  # padding repeats the last index: a batch of whole spectra
        batch = resample.pad_batch([spectra[i] for i in index])
        out = resample.rebin_batch(*(batch[k] for k in ("edges", "flux", "ivar", "good", "z")),
                                   max_pixels=batch["max_pixels"])
        return dict(zip(("flux", "ivar", "mask"), out))

    return map_padded(rebin, (np.arange(len(spectra)),), MAX_CHUNK, _padded_size)


def measure(flux: np.ndarray, ivar: np.ndarray, scheme: str = "standard") -> dict[str, np.ndarray]:
    """Line fluxes, ratios, BPT classes and the S/N gate for (B, 2208) rest-frame spectra."""
    fit = map_padded(lines.measure_lines_batch, (flux, ivar), MAX_CHUNK, _padded_size)
    result = {k: np.asarray(v) for k, v in lines.line_ratios(fit["line_flux"], scheme).items()}
    result.update(
        line_flux=fit["line_flux"], line_flux_err=fit["line_flux_err"], line_snr=fit["line_snr"],
        meets_snr=np.asarray(lines.meets_snr(fit["line_snr"])), line_velocity=fit["velocity"],
        line_sigma=fit["sigma"], line_fit_rchi2=fit["rchi2"],
    )
    return result


def _coverage_message(spectrum, mask: np.ndarray) -> str | None:
    n_uncovered, ranges = resample.coverage_report(mask)
    if not n_uncovered:
        return None
    return (f"{readers.describe(spectrum)}: {n_uncovered} of {N_BINS} rest-frame bins not covered "
            f"({ranges} at z={spectrum.z:.5f})")


def _snr_message(spec_id: str, snr: np.ndarray) -> str:
    low = [f"{name} {snr[lines.LINE_NAMES.index(name)]:.1f}" for name in lines.REQUIRED_LINES
           if not snr[lines.LINE_NAMES.index(name)] > lines.SNR_MIN]
    return f"{spec_id}: S/N <= {lines.SNR_MIN:g} in " + ", ".join(low)


def _select(arrays: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    return {k: (v[keep] if k in PER_SPECTRUM_KEYS else v) for k, v in arrays.items()}


def prepare_spectra(spectra: list[readers.Spectrum], coverage: str = "refuse", snr_policy: str = "skip",
                    scheme: str = "standard", log: Callable[[str], None] = log_line) -> dict[str, np.ndarray]:
    """Validated spectra -> the PREPARED arrays (module docstring). Reports each spectrum it
    drops, and the gate's count, through `log`. Raises DDMError if none is left."""
    if coverage not in COVERAGE_POLICIES or snr_policy not in SNR_POLICIES:
        raise DDMError(f"coverage must be one of {COVERAGE_POLICIES}, S/N policy one of {SNR_POLICIES}")
    if not spectra:
        raise DDMError("no readable spectrum; nothing written")
    grid = rebin_spectra(spectra)
    keep = np.ones(len(spectra), bool)
    for i, spectrum in enumerate(spectra):
        if not (grid["mask"][i] == 0).any():
            log(f"{readers.describe(spectrum)}: no good data on the rest-frame grid "
                f"(3700-8114 A at z={spectrum.z:.5f}); skipped")
            keep[i] = False
        elif (message := _coverage_message(spectrum, grid["mask"][i])) is not None:
            keep[i] = coverage == "fill"
            log(message + ("; filled (mask bit FILLED)" if keep[i] else "; skipped (--coverage fill keeps it)"))
    arrays = {k: v[keep] for k, v in grid.items()}
    kept = [s for s, k in zip(spectra, keep) if k]
    if not kept:
        raise DDMError("no spectrum left after the coverage check; nothing written")
    arrays.update(measure(arrays["flux"], arrays["ivar"], scheme))
    arrays.update(
        z=np.array([s.z for s in kept], np.float64), ids=np.array([s.id for s in kept], dtype=str),
        wavelength=wavelength_grid(), line_names=np.array(lines.LINE_NAMES, dtype=str), format=np.array(FORMAT),
    )
    return _gate(arrays, snr_policy, log)


def _gate(arrays: dict[str, np.ndarray], snr_policy: str, log) -> dict[str, np.ndarray]:
    failing = np.flatnonzero(~arrays["meets_snr"])
    for i in failing:
        log(_snr_message(str(arrays["ids"][i]), arrays["line_snr"][i]))
    if failing.size:
        action = ("skipped" if snr_policy == "skip"
                  else "kept with meets_snr = False (the DDM was not trained on such spectra)")
        log(f"{failing.size} of {len(arrays['ids'])} spectra fail the S/N > {lines.SNR_MIN:g} gate "
            f"({', '.join(lines.REQUIRED_LINES)}): {action}")
    if snr_policy == "skip":
        arrays = _select(arrays, arrays["meets_snr"])
        if not len(arrays["ids"]):
            raise DDMError("every spectrum fails the S/N gate; nothing written (--snr-policy warn keeps them)")
    return arrays


def write_prepared(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write atomically (a temporary file in the same directory, then a rename)."""
    try:
        save_npz_atomic(path, arrays)
    except OSError as err:
        raise DDMError(f"{path}: cannot write ({err.strerror or err})") from None


def run(inputs: list[str], output: str, coverage: str = "refuse", snr_policy: str = "skip",
        z: float | None = None, z_table: str | None = None, scheme: str = "standard",
        log: Callable[[str], None] = log_line) -> dict[str, np.ndarray]:
    """The `prepare` command: read every input (files or directories), write `output`.
    Unreadable or invalid files are reported through `log` and left out. Returns the arrays."""
    paths = readers.expand_inputs(inputs)
    if not paths:
        raise DDMError("no input files (directories are searched for "
                       f"{', '.join(readers.FITS_SUFFIXES + readers.ARRAY_SUFFIXES)})")
    z_override = readers.read_z_table(z_table) if z_table else None
    spectra, errors = readers.read_many(paths, z_override=z_override, z_all=z)
    for message in errors:
        log(message)
    arrays = prepare_spectra(spectra, coverage, snr_policy, scheme, log)
    write_prepared(output, arrays)
    log(f"wrote {output}: {len(arrays['ids'])} spectra from {len(paths)} file(s)"
        + (f"; {len(errors)} unreadable or invalid" if errors else ""))
    return arrays


def load_prepared(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read and check a PREPARED.npz; returns every array in it (module docstring).

    Raises DDMError naming the file if it is unreadable, lacks a REQUIRED_KEYS array, or the
    shapes disagree with one another or with the rest-frame grid.
    """
    path = Path(path)
    arrays = load_npz(path, "PREPARED.npz", REQUIRED_KEYS)
    _check_shapes(path, arrays)
    return arrays


def _check_shapes(path: Path, arrays: dict[str, np.ndarray]) -> None:
    n = len(arrays["ids"])
    n_lines = len(arrays["line_names"])
    expected = {"flux": (n, N_BINS), "ivar": (n, N_BINS), "mask": (n, N_BINS), "wavelength": (N_BINS,),
                "z": (n,), "ids": (n,), "line_names": (n_lines,), "line_flux": (n, n_lines),
                "line_flux_err": (n, n_lines), "line_snr": (n, n_lines), "meets_snr": (n,),
                "log_nii_ha": (n,), "log_oiii_hb": (n,), "log_sii_ha": (n,), "log_oi_ha": (n,)}
    for key, shape in expected.items():
        if arrays[key].shape != shape:
            raise DDMError(f"{path}: {key} has shape {arrays[key].shape}, expected {shape}")
    for key in ("ids", "line_names"):
        if arrays[key].dtype.kind != "U":
            raise DDMError(f"{path}: {key} must be strings, not {arrays[key].dtype}")
    for key in set(expected) - {"ids", "line_names"}:
        if arrays[key].dtype.kind not in "fiub":
            raise DDMError(f"{path}: {key} is not numeric (dtype {arrays[key].dtype})")
    if not np.allclose(arrays["wavelength"], wavelength_grid()):
        raise DDMError(f"{path}: wavelength is not the rest-frame grid 3700 + 2 i Angstrom")
