"""Decompose jobs over files: an in-memory .npz, or a folder for inputs larger than memory with
incremental output and kill-safe resume; multi-host shares and their merge.

Inputs are `.npy` files (or folders of `.npy` chunks, taken in name order) read a chunk at a
time with `pread`, and results go straight to preallocated `.npy` files with `pwrite`: no file
is read or filled through a memory map (one only creates each output's header and sparse
body), so resident memory stays flat however large the survey is.

The job is built in `OUT.partial/`: `job.json` fingerprints the inputs and options,
`done.json` lists the finished chunks (rewritten atomically after each chunk's rows are
written), and `OUT.partial` becomes `OUT` (with `manifest.json`) only when every chunk is
done. Killed at any moment (kill -9 included), a run finishes with `--resume`: finished chunks
are kept, the chunk in flight is computed again into the same rows.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from pathlib import Path

import numpy as np

from ddm_jax import __version__
from ddm_jax.batching import batch_ranges, pipelined, prefetched
from ddm_jax.constants import MASS_ERR_MAX_DEX
from ddm_jax.errors import InputError, OutputExistsError
from ddm_jax.inference.decomposer import Decomposer
from ddm_jax.io.mass_table import join_masses, read_mass_table
from ddm_jax.io.outputs.base import ConcatenatedOutput, FolderOutput, is_fits_name, output_arrays, provenance_now
from ddm_jax.io.outputs.files import write_output
from ddm_jax.io.outputs.fits_writer import write_fits
from ddm_jax.io.safe import NpyArray, NpyWriter, RowSource, changed_settings, write_json_atomic, writing
from ddm_jax.model.inputs import validate_inputs, validate_ivar
from ddm_jax.schema import CARRIED_KEYS, DONE, GATE_KEYS, JOB, MANIFEST, MASS_USED, MEASURED_KEYS, SAME_JOB

MERGE_BLOCK = 8192  # rows copied at a time when merging shares


def default_output(spectra) -> Path:
    """SPECTRA's name + `_ddm.npz`, beside it."""
    return Path(Path(spectra).with_suffix("").as_posix() + "_ddm.npz")


def decompose_files(decomposer: Decomposer, spectra, mass=None, output=None, normalize: bool = True,
                    resume: bool = False, share: tuple[int, int] = (0, 1), progress=None, ivar=None,
                    mass_table=None) -> Path:
    """The `decompose` command: spectra (an .npy, a folder of .npy chunks or a PREPARED.npz),
    masses and inverse variances (each an .npy or folder, or None) into `output`; returns the path written.

    An output ending in `.npz` (the default, beside the input) is computed in memory and written
    at once; any other name is a folder filled chunk by chunk (`decompose_to_folder`), the
    only mode for several processes (`share` = (index, count); each writes OUT.shareIofN).
    A PREPARED.npz carries its ids, spaxel positions, stellar mass, frame, gate verdicts and measured
    line ratios into the output (`carried_keys`), and its ivar into the trust outputs (docs/trust.md).
    When the checkpoint needs a mass, a PREPARED input gives it: from `mass` if given, else from
    `mass_table` (a CSV or FITS table joined on survey_id, `io.mass_table`), else from its own
    `log_stellar_mass`, in the checkpoint's `mass_convention` (`Decomposer.mass_from_log`). Every
    output form records the mass each spectrum was divided by (MASS_USED) and, in its provenance,
    where it came from (`mass_source`) and in which convention.
    """
    output = Path(output) if output is not None else default_output(spectra)
    prepared = Path(spectra).suffix == ".npz" or is_fits_name(spectra)
    in_memory = (output.suffix == ".npz" or is_fits_name(output)) and share[1] == 1
    if prepared and not (in_memory and not resume):
        raise InputError("a PREPARED file is decomposed in memory: write an .npz or .fits output (-o OUT.npz)")
    if in_memory and resume:
        raise InputError("--resume works with a folder output (-o DIR), not with an .npz or .fits file")
    if prepared and ivar is not None:
        raise InputError("a PREPARED.npz carries its own ivar; drop --ivar")
    if mass_table is not None and (not prepared or mass is not None):
        raise InputError("--mass-table is joined on a PREPARED file's survey_id: give a PREPARED input, and "
                         "--mass-table or --mass, not both")
    if in_memory and output.is_dir():  # before the work, not after it
        raise InputError(f"{output}: is a folder; give a file name, or a folder name not ending in .npz")
    mass = None if mass is None else RowSource(mass, "mass", None)
    n_bins = decomposer.ddm.config.n_bins
    ivar = None if ivar is None else RowSource(ivar, "ivar", n_bins)
    if not in_memory:
        if share[1] > 1:
            output = output.with_name(f"{output.name}.share{share[0]}of{share[1]}")
        with writing(output):  # a full disk or an unwritable folder: finished chunks stay for --resume
            return decompose_to_folder(decomposer, RowSource(spectra, "spectra", n_bins), mass, output,
                                       normalize=normalize, chunk_size=decomposer.batch_size, resume=resume,
                                       share=share, progress=progress, ivar=ivar,
                                       provenance=provenance_now(**run_inputs(spectra, mass, ivar, normalize),
                                                                 **mass_provenance(decomposer, mass is not None
                                                                                   and normalize, "--mass"),
                                                                 **decomposer.provenance()))
    carried = {}
    if prepared:
        from ddm_jax.io.outputs.prepared import load_prepared

        arrays = load_prepared(spectra)
        _check_rows(len(arrays["ids"]), mass, ivar)
        flux, ivar_rows = arrays["flux"], arrays["ivar"]
        carried = carried_keys(arrays)
        masses, mass_source = prepared_masses(decomposer, arrays, spectra, mass, mass_table, normalize)
    else:
        source = RowSource(spectra, "spectra", n_bins)
        _check_rows(source.rows, mass, ivar)  # before reading: the counts are declared in the headers
        flux = source.read(0, source.rows)
        ivar_rows = None if ivar is None else ivar.read(0, ivar.rows)
        masses, mass_source = (None, None) if mass is None else (mass.read(0, mass.rows), "--mass")
    result = decomposer(flux, masses, normalize=normalize, progress=progress, ivar=ivar_rows)
    used = masses is not None and normalize
    if used:
        carried[MASS_USED] = mass_used(masses)
    return write_output(output, output_arrays(decomposer, result, carried,
                                              **mass_provenance(decomposer, used, mass_source),
                                              **run_inputs(spectra, mass, ivar, normalize)))


def mass_used(masses) -> np.ndarray:
    """The masses (B,) as the network divides by them (`Decomposer.launch`: float32, one per row)."""
    return np.asarray(masses, np.float32).reshape(-1)


def mass_provenance(decomposer: Decomposer, used: bool, source: str | None) -> dict:
    """Provenance items of the masses a run divided by: where from, and in which convention (none if unused)."""
    if not used:
        return {}
    return {"mass_source": source, "mass_convention": decomposer.mass_convention}


def prepared_masses(decomposer: Decomposer, arrays: dict[str, np.ndarray], path, mass: RowSource | None,
                    mass_table, normalize: bool) -> tuple[np.ndarray | None, str | None]:
    """The masses (B,) a PREPARED file's spectra are divided by, and where they came from (provenance):
    `mass` as given, else (when the checkpoint needs one) the table's joined on survey_id, else the
    file's log_stellar_mass; None when no mass is needed. A DDMError naming the way out where a
    mass is needed and none is available."""
    if mass is not None:
        return mass.read(0, mass.rows), "--mass"
    if mass_table is not None:
        log_mass = join_masses(read_mass_table(mass_table), arrays.get("survey_id", [""] * len(arrays["ids"])),
                               f"{path} with {mass_table}")
        return decomposer.mass_from_log(log_mass, str(mass_table)), f"mass table {mass_table}"
    if not (normalize and decomposer.needs_mass):
        return None, None
    if "log_stellar_mass" not in arrays:
        raise InputError(f"{path}: no log_stellar_mass (written by an older ddm-jax prepare) and this checkpoint needs "
                         "a mass: prepare the spectra again, or give --mass-table or --mass")
    log_mass = np.asarray(arrays["log_stellar_mass"], np.float64)
    bad = np.flatnonzero(~np.isfinite(log_mass))
    if bad.size:
        raise InputError(f"{path}: {bad.size} spectra have no stellar mass (first: {arrays['ids'][bad[0]]}: z <= 0 or "
                         "no stellar light in the fit); give --mass-table or --mass")
    error = np.asarray(arrays.get("log_stellar_mass_err", np.zeros_like(log_mass)), np.float64)
    loose = np.flatnonzero(~(error <= MASS_ERR_MAX_DEX))
    if loose.size:
        raise InputError(f"{path}: {loose.size} spectra have a stellar mass less certain than {MASS_ERR_MAX_DEX:g} dex "
                         f"(first: {arrays['ids'][loose[0]]}: {log_mass[loose[0]]:.2f} +- {error[loose[0]]:.2f}); "
                         "give --mass-table or --mass")
    return decomposer.mass_from_log(log_mass, str(path)), f"{path} log_stellar_mass (prepare)"


def run_inputs(spectra, mass: RowSource | None, ivar: RowSource | None, normalize: bool) -> dict:
    """A decompose run's inputs and options, for its provenance (docs/fits.md#provenance)."""
    def name(source):
        return None if source is None else ", ".join(str(p) for p in source.paths)

    return {"command": "decompose", "input": str(spectra), "mass": name(mass), "ivar": name(ivar),
            "normalize": normalize}


def carried_keys(prepared: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What a decomposition of PREPARED arrays carries over from them (the keys it has): ids, survey ids,
    redshift, position, source and WCS, prepare's stellar mass and frame (schema.CARRIED_KEYS), the gate's
    verdicts and the measured line ratios (as measured_<key>)."""
    return {**{key: prepared[key] for key in CARRIED_KEYS if key in prepared},
            **{key: prepared[key] for key in GATE_KEYS},
            **{f"measured_{key}": prepared[key] for key in MEASURED_KEYS if key in prepared}}


def _check_rows(count: int, mass: RowSource | None, ivar: RowSource | None) -> None:
    if mass is not None and mass.rows != count:
        raise InputError(f"need one mass per spectrum: {count} spectra, {mass.rows} masses")
    if ivar is not None and ivar.rows != count:
        raise InputError(f"need one ivar row per spectrum: {count} spectra, {ivar.rows} ivar rows")


def share_range(rows: int, process_index: int, process_count: int) -> tuple[int, int]:
    """The rows [start, stop) one of `process_count` processes takes (contiguous, disjoint, covering)."""
    return rows * process_index // process_count, rows * (process_index + 1) // process_count


def _output_specs(decomposer: Decomposer, rows: int) -> dict[str, tuple]:
    probe = decomposer.output_shapes()
    return {key: ((rows,) + shape, dtype) for key, (shape, dtype) in probe.items()}


def validate_stream(decomposer: Decomposer, spectra: RowSource, mass: RowSource | None, start: int, stop: int,
                    chunk: int, normalize: bool, ivar: RowSource | None = None) -> None:
    """Check every input row before any work, a chunk at a time: errors name the row in the whole input."""
    n_bins = decomposer.ddm.config.n_bins
    for lo, hi in batch_ranges(stop, chunk, start):
        rows = decomposer.default_mass(None if mass is None else mass.read(lo, hi), hi - lo, normalize)
        validate_inputs(spectra.read(lo, hi), rows, n_bins, normalize, first_row=lo)
        if ivar is not None:
            validate_ivar(ivar.read(lo, hi), hi - lo, n_bins, first_row=lo)


def decompose_to_folder(decomposer: Decomposer, spectra: RowSource, mass: RowSource | None, output,
                        normalize: bool = True, chunk_size: int = 4096, resume: bool = False,
                        share: tuple[int, int] = (0, 1), progress=None, stop_after_chunks: int | None = None,
                        ivar: RowSource | None = None, provenance: dict | None = None) -> Path:
    """Decompose rows of `share` (process index, count) into the folder `output`; returns its path.

    `stop_after_chunks` stops early (as an interruption would), for tests and partial runs.
    """
    output = Path(output)
    partial = output.with_name(output.name + ".partial")
    if output.exists():
        raise OutputExistsError(f"{output} already exists; choose another output or remove it")
    _check_rows(spectra.rows, mass, ivar)
    start, stop = share_range(spectra.rows, *share)
    chunk = decomposer.padded_batch(chunk_size)
    job = {"spectra": spectra.fingerprint(), "mass": None if mass is None else mass.fingerprint(),
           "ivar": None if ivar is None else ivar.fingerprint(), "normalize": normalize, "chunk": chunk,
           "share": list(share), "rows": [start, stop],
           "total": spectra.rows,
           "decomposer": decomposer.describe()}
    job = json.loads(json.dumps(job))  # as it will read back from job.json (tuples become lists)
    if partial.exists() and not resume:
        raise InputError(f"an interrupted run left {partial}; pass --resume to finish it, or remove it")
    if resume and partial.exists() and not (partial / JOB).is_file():
        shutil.rmtree(partial)  # killed while setting up (job.json comes last): no chunk was computed
    if resume and partial.exists():
        changed = changed_settings(partial / JOB, job)
        if changed:
            raise InputError(f"cannot resume {partial}: {', '.join(changed)} changed since the interrupted run")
        done = set(json.loads((partial / DONE).read_text()))
        create = False
    else:
        validate_stream(decomposer, spectra, mass, start, stop, chunk, normalize, ivar)
        partial.mkdir(parents=True)
        write_json_atomic(partial / DONE, [])
        np.save(partial / "wavelength.npy", decomposer.wavelength)
        done, create = set(), True
    specs = _output_specs(decomposer, stop - start)
    if mass is not None and normalize:
        specs[MASS_USED] = ((stop - start,), np.dtype(np.float32))
    writers = {key: NpyWriter(partial / f"{key}.npy", dtype, shape, create) for key, (shape, dtype) in specs.items()}
    if create:  # last: a folder with job.json holds every file a resume needs
        write_json_atomic(partial / JOB, job)
    todo = [(lo, hi) for lo, hi in batch_ranges(stop, chunk, start) if lo not in done]
    total, finished = stop - start, sum(min(lo + chunk, stop) - lo for lo in done)
    if progress is not None:
        progress.begin(finished)

    def load(rows):  # on a thread, while the device computes the chunk before
        lo, hi = rows
        return tuple(None if source is None else source.read(lo, hi) for source in (spectra, mass, ivar))

    def launch(loaded):
        (lo, _), (flux, masses, ivars) = loaded
        return decomposer.launch(flux, masses, normalize, chunk, first_row=lo, ivar=ivars)  # asynchronous dispatch

    def collect(loaded, launched):
        (lo, hi), (_, masses, _) = loaded
        out = decomposer.collect(launched, hi - lo)
        return {**out, MASS_USED: mass_used(masses)} if MASS_USED in specs else out

    for ((lo, hi), _), result in pipelined(prefetched(todo[:stop_after_chunks], load), launch, collect):
        for key, writer in writers.items():  # rows first, then the record that they are done
            writer.write(lo - start, result[key])
        done.add(lo)
        write_json_atomic(partial / DONE, sorted(done))
        finished += hi - lo
        if progress is not None:
            progress(finished, total)
    if len(done) < len(range(start, stop, chunk)):
        return partial
    manifest = {"keys": {k: {"shape": list(s), "dtype": np.dtype(d).name} for k, (s, d) in specs.items()},
                "wavelength": "wavelength.npy", **job, "ddm_jax_version": __version__,
                "completed": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "provenance": provenance or {}}
    write_json_atomic(partial / MANIFEST, manifest)
    (partial / DONE).unlink()
    (partial / JOB).unlink()  # the manifest holds the job description
    os.replace(partial, output)
    return output


def merge_folders(parts: list, output) -> Path:
    """Concatenate the folders of one job's process shares (any order) into one folder, or, for an
    output ending in .fits, straight into a FITS catalogue (a block of rows at a time)."""
    output = Path(output)
    if output.exists():
        raise OutputExistsError(f"{output} already exists")
    if is_fits_name(output):
        manifests = _shares_in_order(parts)
        return write_fits(output, ConcatenatedOutput([FolderOutput(part) for _, part in manifests]))
    with writing(output):
        return _merge(parts, output)


def _shares_in_order(parts: list) -> list[tuple[dict, Path]]:
    """(manifest, folder) of each share, in row order, checked to be one job's and to cover every row once."""
    manifests = []
    for part in map(Path, parts):
        if not (part / MANIFEST).is_file():
            raise InputError(f"{part} is not a finished decompose output (no {MANIFEST})")
        manifests.append((json.loads((part / MANIFEST).read_text()), part))
    manifests.sort(key=lambda m: m[0]["rows"][0])
    first = manifests[0][0]
    expected_start = 0
    for manifest, part in manifests:
        if any(manifest.get(k) != first.get(k) for k in SAME_JOB):
            raise InputError(f"{part} comes from a different job (inputs or options differ)")
        if manifest["rows"][0] != expected_start:
            raise InputError(f"shares do not join up: {part} starts at row {manifest['rows'][0]}, "
                             f"expected {expected_start}")
        expected_start = manifest["rows"][1]
    total_rows = first["total"]
    if expected_start != total_rows:
        raise InputError(f"the shares cover rows 0-{expected_start - 1} of {total_rows}: a share is missing")
    return manifests


def _merge(parts: list, output: Path) -> Path:
    manifests = _shares_in_order(parts)
    first, total_rows = manifests[0][0], manifests[0][0]["total"]
    partial = output.with_name(output.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    shutil.copy(manifests[0][1] / "wavelength.npy", partial / "wavelength.npy")
    keys = {}
    for key, spec in first["keys"].items():
        shape = (total_rows,) + tuple(spec["shape"][1:])
        writer = NpyWriter(partial / f"{key}.npy", spec["dtype"], shape, create=True)
        for manifest, part in manifests:
            source = NpyArray(part / f"{key}.npy", "part")
            for lo in range(0, source.rows, MERGE_BLOCK):
                writer.write(manifest["rows"][0] + lo, source.read(lo, min(lo + MERGE_BLOCK, source.rows)))
        keys[key] = {"shape": list(shape), "dtype": spec["dtype"]}
    merged = {**{k: first.get(k) for k in SAME_JOB}, "keys": keys, "rows": [0, total_rows],
              "provenance": first.get("provenance", {}),
              "merged_from": [str(p) for _, p in manifests], "ddm_jax_version": __version__}
    write_json_atomic(partial / MANIFEST, merged)
    os.replace(partial, output)
    return output
