"""Survey-scale decomposition: inputs larger than memory, incremental output, kill-safe resume.

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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ddm_jax import __version__
from ddm_jax.errors import DDMError
from ddm_jax.inference import Decomposer, validate_inputs
from ddm_jax.io import write_json_atomic

MANIFEST, JOB, DONE = "manifest.json", "job.json", "done.json"
MERGE_BLOCK = 8192  # rows copied at a time when merging shares


class NpyArray:
    """Rows of a C-ordered `.npy` file, read with `pread` (no pickles, no memory map)."""

    def __init__(self, path: Path, what: str):
        self.path, self.what = Path(path), what
        try:
            with open(self.path, "rb") as f:
                version = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran_order, dtype = read_header(f)
                self.offset = f.tell()
        except FileNotFoundError as err:
            raise DDMError(f"{what} file {self.path} does not exist") from err
        except (ValueError, OSError) as err:
            raise DDMError(f"{what} file {self.path} is not a readable .npy array: {err}") from err
        if dtype.hasobject:
            raise DDMError(f"{what} file {self.path} holds pickled Python objects; only numeric .npy arrays "
                           "are accepted")
        if dtype.kind not in "fiu":
            raise DDMError(f"{what} file {self.path} is not numeric (dtype {dtype})")
        if fortran_order and len(shape) > 1:
            raise DDMError(f"{what} file {self.path} is Fortran-ordered; save it with np.ascontiguousarray")
        self.dtype, self.shape = dtype, shape
        self._set_rows(shape[0] if shape else 1, shape[1:])
        expected = self.offset + self.rows * self.row_bytes
        if self.path.stat().st_size < expected:
            raise DDMError(f"{what} file {self.path} is truncated: {self.path.stat().st_size} bytes, "
                           f"its header promises {expected}")

    def _set_rows(self, rows: int, row_shape: tuple[int, ...]) -> None:
        self.rows, self.row_shape = rows, row_shape
        self.row_bytes = self.dtype.itemsize * int(np.prod(row_shape, dtype=np.int64))

    def as_one_row(self) -> None:
        """Read a 1-D array as a single row (one spectrum of shape (n_bins,))."""
        self._set_rows(1, self.shape)

    def read(self, start: int, stop: int) -> np.ndarray:
        with open(self.path, "rb") as f:
            raw = os.pread(f.fileno(), (stop - start) * self.row_bytes, self.offset + start * self.row_bytes)
        return np.frombuffer(raw, self.dtype).reshape((stop - start,) + self.row_shape)


class RowSource:
    """One logical array over a `.npy` file or a folder of `.npy` chunks (concatenated on axis 0).

    A 1-D spectra file of shape (n_bins,) is one spectrum; a 0-D mass file is one mass.
    """

    def __init__(self, path, what: str, row_width: int | None):
        path = Path(path)
        files = sorted(path.glob("*.npy")) if path.is_dir() else [path]
        if not files:
            raise DDMError(f"{what} folder {path} holds no .npy files")
        self.what, self.paths = what, files
        self.parts = [NpyArray(f, what) for f in files]
        for part in self.parts:
            if row_width is not None and part.shape == (row_width,):
                part.as_one_row()
            if row_width is not None and part.row_shape != (row_width,):
                raise DDMError(f"{what} file {part.path} has shape {part.shape}; need (B, {row_width})")
            if row_width is None and len(part.shape) > 1:
                raise DDMError(f"{what} file {part.path} has shape {part.shape}; need one value per spectrum")
        self.starts = np.cumsum([0] + [p.rows for p in self.parts])
        self.rows = int(self.starts[-1])
        if self.rows == 0:
            raise DDMError(f"the {what} array is empty ({path})")

    def read(self, start: int, stop: int) -> np.ndarray:
        pieces = []
        for index, part in enumerate(self.parts):
            lo, hi = max(start, self.starts[index]), min(stop, self.starts[index + 1])
            if lo < hi:
                pieces.append(part.read(lo - self.starts[index], hi - self.starts[index]))
        return np.concatenate(pieces) if len(pieces) > 1 else pieces[0]

    def fingerprint(self) -> list:
        return [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in self.paths]


class NpyWriter:
    """A preallocated `.npy` file filled row block by row block with `pwrite`."""

    def __init__(self, path: Path, dtype, shape: tuple[int, ...], create: bool):
        if create:
            np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape).flush()  # header + sparse body
        self.array = NpyArray(path, "output")
        self.path = path

    def write(self, start: int, values: np.ndarray) -> None:
        data = np.ascontiguousarray(values, self.array.dtype).tobytes()
        fd = os.open(self.path, os.O_WRONLY)
        try:
            os.pwrite(fd, data, self.array.offset + start * self.array.row_bytes)
        finally:
            os.close(fd)


def share_range(rows: int, process_index: int, process_count: int) -> tuple[int, int]:
    """The rows [start, stop) one of `process_count` processes takes (contiguous, disjoint, covering)."""
    return rows * process_index // process_count, rows * (process_index + 1) // process_count


def _output_specs(decomposer: Decomposer, rows: int) -> dict[str, tuple]:
    probe = decomposer.output_shapes()
    return {key: ((rows,) + shape, dtype) for key, (shape, dtype) in probe.items()}


def validate_stream(spectra: RowSource, mass: RowSource | None, start: int, stop: int, chunk: int,
                    n_bins: int, normalize: bool) -> None:
    """Check every input row before any work, a chunk at a time: errors name the row in the whole input."""
    for lo in range(start, stop, chunk):
        hi = min(lo + chunk, stop)
        validate_inputs(spectra.read(lo, hi), None if mass is None else mass.read(lo, hi), n_bins, normalize,
                        first_row=lo)


def decompose_to_folder(decomposer: Decomposer, spectra: RowSource, mass: RowSource | None, output,
                        normalize: bool = True, chunk_size: int = 4096, resume: bool = False,
                        share: tuple[int, int] = (0, 1), progress=None, stop_after_chunks: int | None = None) -> Path:
    """Decompose rows of `share` (process index, count) into the folder `output`; returns its path.

    `stop_after_chunks` stops early (as an interruption would), for tests and partial runs.
    """
    output = Path(output)
    partial = output.with_name(output.name + ".partial")
    if output.exists():
        raise DDMError(f"{output} already exists; choose another output or remove it")
    if mass is not None and mass.rows != spectra.rows:
        raise DDMError(f"need one mass per spectrum: {spectra.rows} spectra, {mass.rows} masses")
    start, stop = share_range(spectra.rows, *share)
    chunk = decomposer.padded_batch(chunk_size)
    job = {"spectra": spectra.fingerprint(), "mass": None if mass is None else mass.fingerprint(),
           "normalize": normalize, "chunk": chunk, "share": list(share), "rows": [start, stop],
           "total": spectra.rows,
           "decomposer": decomposer.describe()}
    job = json.loads(json.dumps(job))  # as it will read back from job.json (tuples become lists)
    if partial.exists() and not resume:
        raise DDMError(f"an interrupted run left {partial}; pass --resume to finish it, or remove it")
    if resume and partial.exists() and not (partial / JOB).is_file():
        shutil.rmtree(partial)  # killed while setting up (job.json comes last): no chunk was computed
    if resume and partial.exists():
        old_job = json.loads((partial / JOB).read_text())
        if old_job != job:
            changed = sorted(k for k in job if job[k] != old_job.get(k))
            raise DDMError(f"cannot resume {partial}: {', '.join(changed)} changed since the interrupted run")
        done = set(json.loads((partial / DONE).read_text()))
        create = False
    else:
        if mass is None and normalize:
            raise DDMError("a mass per spectrum (--mass) is needed to normalise; for spectra that are "
                           "already normalised pass --no-normalize")
        validate_stream(spectra, mass, start, stop, chunk, decomposer.ddm.config.n_bins, normalize)
        partial.mkdir(parents=True)
        write_json_atomic(partial / DONE, [])
        np.save(partial / "wavelength.npy", decomposer.wavelength)
        done, create = set(), True
    specs = _output_specs(decomposer, stop - start)
    writers = {key: NpyWriter(partial / f"{key}.npy", dtype, shape, create) for key, (shape, dtype) in specs.items()}
    if create:  # last: a folder with job.json holds every file a resume needs
        write_json_atomic(partial / JOB, job)
    todo = [c for c in range(start, stop, chunk) if c not in done]
    total, finished = stop - start, sum(min(c + chunk, stop) - c for c in done)
    if progress is not None:
        progress.begin(finished)

    def load(lo):  # runs on the I/O thread while the device computes the previous chunk
        hi = min(lo + chunk, stop)
        return lo, hi, spectra.read(lo, hi), None if mass is None else mass.read(lo, hi)

    def commit(lo, hi, result):  # on the main thread only: rows first, then the record that they are done
        for key, writer in writers.items():
            writer.write(lo - start, result[key])
        done.add(lo)
        write_json_atomic(partial / DONE, sorted(done))

    with ThreadPoolExecutor(max_workers=1) as io:
        pending, queue = None, [io.submit(load, lo) for lo in todo[:1]]
        for index in range(len(todo)):
            if stop_after_chunks is not None and index >= stop_after_chunks:
                break
            lo, hi, flux, masses = queue.pop(0).result()
            if index + 1 < len(todo):
                queue.append(io.submit(load, todo[index + 1]))
            launched = decomposer.launch(flux, masses, normalize, chunk, first_row=lo)  # asynchronous dispatch
            if pending is not None:
                commit(*pending[:2], decomposer.collect(*pending[2:]))
                finished += pending[1] - pending[0]
                if progress is not None:
                    progress(finished, total)
            pending = (lo, hi, launched, hi - lo)
        if pending is not None:
            commit(*pending[:2], decomposer.collect(*pending[2:]))
            finished += pending[1] - pending[0]
            if progress is not None:
                progress(finished, total)
    if len(done) < len(range(start, stop, chunk)):
        return partial
    manifest = {"keys": {k: {"shape": list(s), "dtype": np.dtype(d).name} for k, (s, d) in specs.items()},
                "wavelength": "wavelength.npy", **job, "ddm_jax_version": __version__,
                "completed": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    write_json_atomic(partial / MANIFEST, manifest)
    (partial / DONE).unlink()
    (partial / JOB).unlink()  # the manifest holds the job description
    os.replace(partial, output)
    return output


def merge_folders(parts: list, output) -> Path:
    """Concatenate the folders of one job's process shares (any order) into one folder."""
    output = Path(output)
    if output.exists():
        raise DDMError(f"{output} already exists")
    manifests = []
    for part in map(Path, parts):
        if not (part / MANIFEST).is_file():
            raise DDMError(f"{part} is not a finished decompose output (no {MANIFEST})")
        manifests.append((json.loads((part / MANIFEST).read_text()), part))
    manifests.sort(key=lambda m: m[0]["rows"][0])
    first = manifests[0][0]
    same = ("spectra", "mass", "normalize", "decomposer", "total")
    expected_start = 0
    for manifest, part in manifests:
        if any(manifest[k] != first[k] for k in same):
            raise DDMError(f"{part} comes from a different job (inputs or options differ)")
        if manifest["rows"][0] != expected_start:
            raise DDMError(f"shares do not join up: {part} starts at row {manifest['rows'][0]}, "
                           f"expected {expected_start}")
        expected_start = manifest["rows"][1]
    total_rows = first["total"]
    if expected_start != total_rows:
        raise DDMError(f"the shares cover rows 0-{expected_start - 1} of {total_rows}: a share is missing")
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
    merged = {**{k: first[k] for k in same}, "keys": keys, "rows": [0, total_rows],
              "merged_from": [str(p) for _, p in manifests], "ddm_jax_version": __version__}
    write_json_atomic(partial / MANIFEST, merged)
    os.replace(partial, output)
    return output
