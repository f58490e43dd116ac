"""A seeded fuzzer over every reader (issue 14): mutated bytes and header fields of weight files,
spectra, masses, PREPARED files, survey FITS files and CSV.

Each case takes a good file, mutates it (generic byte mutations, or a mutation that knows the
format: an .npy header's shape and dtype, FITS cards, HDF5 datasets, links and attributes, a
state_dict's tensors, CSV lines) and runs the reader behind a command on it. The invariants:
  - it succeeds, or it refuses with a DDMError of one non-empty line: no other exception;
  - a refusal writes nothing (decompose's output folder stays empty);
  - in a batch (prepare's `read_many`), a good file given with the bad one is still read, and
    every error is one line that starts with the bad file's path;
  - it ends within CASE_TIMEOUT_S, and the process's peak RSS stays under 2 GiB.

    python tests/fuzzing.py --seed 14 --cases 500          # what tests/house/test_fuzz_readers.py runs
    python tests/fuzzing.py --seed 1 --cases 5000 --keep-failures fuzz_failures/

It prints its seed first and a JSON summary last (cases per target, outcomes, failures with the
exception and the mutation, peak RSS); with --keep-failures each failing input is kept.
"""

from __future__ import annotations

import argparse
import collections
import csv
import gzip
import io
import json
import random
import re
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
import zipfile
from pathlib import Path

import h5py
import numpy as np

from ddm_jax.constants import LINE_NAMES

sys.path.insert(0, str(Path(__file__).resolve().parent))  # hostile_files, sdss_layouts, when run as a script

from hostile_files import as_model_save, strings, weighted_layers  # noqa: E402
from sdss_layouts import dr8_values, synthetic_values, write_eboss, write_spspec  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "ddm_jax" / "data"
REAL = DATA / "real_spectra"
RSS_LIMIT_KIB = 2 * 1024 * 1024
CASE_TIMEOUT_S = 60
INTERESTING = [0, 1, -1, 2, 3, 7, 255, 256, 2**15, 2**16 - 1, 2**31 - 1, 2**31, 2**32, 200_000, 10**9, 2**62]
DTYPES = ["<f4", ">f8", "<f2", "<i8", "|u1", "|b1", "<c8", "|O", "<U3", "|S4", "|V8", "<M8[s]"]


class CaseTimeout(Exception):
    pass


# --- generic byte mutations ------------------------------------------------------------------------

def flip_bytes(rng, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def interesting_int(rng, data: bytes) -> bytes:
    size, order = rng.choice([2, 4, 8]), rng.choice(["little", "big"])
    value = rng.choice(INTERESTING) % (1 << (8 * size))
    at = rng.randrange(max(1, len(data) - size))
    return data[:at] + value.to_bytes(size, order) + data[at + size:]


def truncate(rng, data: bytes) -> bytes:
    return data[: rng.randrange(len(data))]


def splice(rng, data: bytes) -> bytes:
    at, length = rng.randrange(len(data)), rng.randint(1, 4096)
    if rng.random() < 0.5:
        return data[:at] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 64))) + data[at:]
    return data[:at] + data[at + length:]


GENERIC = [flip_bytes, interesting_int, truncate, splice]


def mutate_bytes(rng, data: bytes) -> tuple[bytes, str]:
    mutation = rng.choice(GENERIC)
    return mutation(rng, data), mutation.__name__


def through_gzip(rng, data: bytes, mutate) -> tuple[bytes, str]:
    """Mostly the decompressed stream mutated and compressed again; sometimes the gzip bytes."""
    if rng.random() < 0.2:
        mutated, how = mutate_bytes(rng, data)
        return mutated, f"gzip bytes: {how}"
    mutated, how = mutate(rng, gzip.decompress(data))
    return gzip.compress(mutated, mtime=0), f"inside gzip: {how}"


# --- format-aware mutations ------------------------------------------------------------------------

def npy_header(rng, data: bytes) -> tuple[bytes, str]:
    """An .npy whose header declares another shape, dtype or memory order (the data as they were)."""
    stream = io.BytesIO(data)
    version = np.lib.format.read_magic(stream)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(stream)
    body = data[stream.tell():]
    what = rng.choice(["shape", "dtype", "order", "ndim"])
    if what == "shape" and shape:
        shape = list(shape)
        shape[rng.randrange(len(shape))] = rng.choice(INTERESTING + [shape[0] + 1, max(0, shape[0] - 1)])
    elif what == "dtype":
        dtype = rng.choice(DTYPES)
    elif what == "order":
        fortran = not fortran
    else:
        shape = tuple(rng.choice(INTERESTING[:6]) for _ in range(rng.randint(0, 4)))
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": fortran,
              "shape": tuple(shape)}
    out = io.BytesIO()
    np.lib.format.write_array_header_2_0(out, header)
    return out.getvalue() + body, f"npy header {what}: {header}"


def npz_member(rng, data: bytes) -> tuple[bytes, str]:
    """An .npz with one member mutated (its header or its bytes), stored or deflated."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    name = rng.choice(sorted(members))
    if rng.random() < 0.6:
        members[name], how = npy_header(rng, members[name])
    else:
        members[name], how = mutate_bytes(rng, members[name])
    if rng.random() < 0.1:
        members.pop(rng.choice(sorted(members)))
        how += ", a member dropped"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", rng.choice([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])) as archive:
        for key, value in members.items():
            archive.writestr(key, value)
    return out.getvalue(), f"member {name}: {how}"


FITS_KEYS = rb"(NAXIS\d*|BITPIX|PCOUNT|GCOUNT|TFIELDS|NAXIS1|TFORM\d+|THEAP|XTENSION|EXTNAME|END)"


def fits_card(rng, data: bytes) -> tuple[bytes, str]:
    """A FITS file with one structural card given another value (same 80 bytes, nothing moved)."""
    cards = [m.start() for m in re.finditer(rb"(?m)" + FITS_KEYS, data) if m.start() % 80 == 0]
    if not cards:
        return mutate_bytes(rng, data)
    at = rng.choice(cards)
    key = data[at:at + 8].decode("ascii", "replace").strip()
    if key == "END":
        return data[:at] + b" " * 80 + data[at + 80:], "END card removed"
    if key.startswith("TFORM"):
        value = "'" + rng.choice(["E", "1000000000E", "PE(10)", "QD(5)", "0E", "D", "K", "10A", "X"]) + "'"
    elif key in ("XTENSION", "EXTNAME"):
        value = "'" + rng.choice(["IMAGE", "BINTABLE", "TABLE", "COADD", "FLUX", "WAVE", "B_FLUX", "FIBERMAP",
                                  "REDSHIFTS", "FOO"]) + "'"
    else:
        value = str(rng.choice(INTERESTING + [8, 16, 32, 64, -32, -64]))
    card = f"{key:<8}= {value:>20}".ljust(80)[:80].encode()
    return data[:at] + card + data[at + 80:], f"card {key} = {value}"


def catalog_layout(rng, data: bytes) -> tuple[bytes, str]:
    """A ddm-jax FITS catalogue whose layout card (DDMLAYOU) says something else than the file holds."""
    from astropy.io import fits

    with fits.open(io.BytesIO(data)) as hdul:
        layout = json.loads(hdul[0].header["DDMLAYOU"])
        key = rng.choice(sorted(layout["arrays"]))
        entry = layout["arrays"][key]
        what = rng.choice(["rows", "shape", "column", "dtype", "hdu", "shared", "truncated", "split", "type"])
        if what == "rows":
            layout["rows"] = rng.choice([-1, 0, layout["rows"] + 1, 10**12, "3", None])
        elif what == "shape":
            entry["shape"] = rng.choice([[], [3], [3, 8, 2], [-1], [10**9], [2208, 2], "8"])
        elif what == "column":
            entry["columns"] = rng.choice([["no_such_column"], [], None, ["p_sf", "p_sf"], "p_sf"])
        elif what == "dtype":
            entry["dtype"] = rng.choice(["|O", "|V8", "<M8[s]", "<c8", "nonsense", "<f4", "|b1", "U"])
        elif what == "hdu":
            entry["hdu"] = rng.choice(["PRIMARY", "CATALOG", "SF_SPECTRUM", "NOPE", 3])
        elif what == "shared":
            layout["shared"] = rng.choice([{"line_names": {"a": 1}}, {"format": 3}, {"other": "x"}, [], None])
        elif what == "split":
            entry["split"] = not entry.get("split")
        elif what == "type":
            layout["arrays"] = rng.choice([[], "x", {key: None}, {key: []}])
        text = json.dumps(layout)
        if what == "truncated":
            text = text[:rng.randrange(len(text))]
        hdul[0].header["DDMLAYOU"] = text
        out = io.BytesIO()
        hdul.writeto(out)
    return out.getvalue(), f"layout {what} of {key}"


def hdf5_structure(rng, data: bytes) -> tuple[bytes, str]:
    """A Keras HDF5 file edited with h5py: a weight replaced, retyped, linked away or deleted, or a
    names attribute changed."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "w.h5"
        path.write_bytes(data)
        with h5py.File(path, "r+") as f:
            root = f["model_weights"] if "model_weights" in f else f
            layer = rng.choice(weighted_layers(root))
            weight = rng.choice(strings(root[layer].attrs, "weight_names"))
            group_name, name = f"{layer}/{weight}".rsplit("/", 1)
            group = root[group_name]
            old = group[name][()]
            what = rng.choice(["huge", "group", "dtype", "external", "soft", "delete", "transpose", "nan",
                               "scalar", "empty", "layer_names", "weight_names", "chunks"])
            if what not in ("layer_names", "weight_names", "nan"):
                del group[name]
            if what == "huge":
                shape = tuple(rng.choice([200_000, 2**31, 10**9, n]) for n in old.shape) or (10**9,)
                group.create_dataset(name, shape=shape, dtype="<f4", chunks=tuple(min(n, 64) for n in shape),
                                     compression="gzip")
            elif what == "group":
                group.create_group(name)
            elif what == "dtype":
                group.create_dataset(name, old.shape, rng.choice(["<i4", "S4", "<f8", ">f4", "<f2", "|b1",
                                                                  [("a", "<f4")]]))
            elif what == "external":
                group[name] = h5py.ExternalLink("/etc/passwd", "/data")
            elif what == "soft":
                group[name] = h5py.SoftLink(f"/{layer}")
            elif what == "transpose":
                group[name] = old.T if old.ndim > 1 else old[::-1][:-1]
            elif what == "nan":
                group[name][...] = np.nan
            elif what == "scalar":
                group[name] = np.float32(1.0)
            elif what == "empty":
                group[name] = h5py.Empty("<f4")
            elif what == "chunks":
                group.create_dataset(name, data=old, maxshape=(None,) * old.ndim,
                                     chunks=(max(old.shape[0], 4096),) + old.shape[1:])
            elif what == "layer_names":
                names = strings(root.attrs, "layer_names")
                rng.shuffle(names) if rng.random() < 0.5 else names.append(rng.choice(["", "nope", names[0]]))
                root.attrs["layer_names"] = [n.encode() for n in names]
            else:
                root[layer].attrs["weight_names"] = [rng.choice([b"", b"x/kernel:0", b"../" + layer.encode()])]
        return path.read_bytes(), f"hdf5 {what} at {layer}/{weight}"


def csv_lines(rng, data: bytes) -> tuple[bytes, str]:
    lines = data.decode().splitlines()
    at = rng.randrange(len(lines))
    what = rng.choice(["field", "extra", "missing", "junk", "header", "duplicate", "long"])
    fields = next(csv.reader([lines[at]])) if lines[at] else [""]
    if what == "field":
        fields[rng.randrange(len(fields))] = rng.choice(["nan", "inf", "-inf", "", "1e999", "abc", "0x10", " ",
                                                         "1,5", "\x00", "--1"])
        lines[at] = ",".join(fields)
    elif what == "extra":
        lines[at] += ",1" * rng.choice([1, 2, 50])
    elif what == "missing":
        lines[at] = ",".join(fields[:-1])
    elif what == "junk":
        lines.insert(at, "".join(chr(rng.randrange(1, 0x3000)) for _ in range(rng.randint(1, 40))))
    elif what == "header":
        lines[0] = rng.choice(["wavelength,flux", "flux,wavelength,ivar", "a,b,c,d,e", "wavelength;flux;ivar",
                               "\ufeffwavelength,flux,ivar", "mask,ivar,flux,wavelength"])
    elif what == "duplicate":
        lines = lines[: at + 1] + lines[at:]
    else:
        lines[at] = "1" * rng.choice([5000, 200_000])
    return ("\n".join(lines) + "\n").encode(), f"csv {what} at line {at}"


def state_dict_change(rng, data: bytes) -> tuple[bytes, str]:
    """A state_dict with a tensor reshaped, retyped, replaced by a non-tensor, or keys changed."""
    import torch

    state = torch.load(io.BytesIO(data), weights_only=True)
    key = rng.choice(sorted(state))
    what = rng.choice(["huge", "dtype", "value", "extra", "drop", "nested", "scalar"])
    if what == "huge":
        state[key] = torch.zeros(rng.choice([(4000, 4000), (1, 10**6), (0,), (3, 0, 5)]))
    elif what == "dtype":
        state[key] = state[key].to(rng.choice([torch.int64, torch.bool, torch.float16, torch.complex64,
                                               torch.bfloat16, torch.uint8]))
    elif what == "value":
        state[key] = rng.choice([1, "text", [1.0, 2.0], None, {"a": torch.zeros(2)}])
    elif what == "extra":
        state["extra.weight"] = torch.zeros(3)
    elif what == "drop":
        state.pop(key)
    elif what == "nested":
        state = {"state_dict": state}
    else:
        state = rng.choice([[torch.zeros(2)], torch.zeros(3), 7])
    out = io.BytesIO()
    torch.save(state, out)
    return out.getvalue(), f"state_dict {what} at {key}"


# --- the good files and the readers under test -----------------------------------------------------

def _either(*mutations):
    """One of several format-aware mutations, picked at random per case."""
    def mutate(rng, data: bytes) -> tuple[bytes, str]:
        return rng.choice(mutations)(rng, data)

    return mutate


def _prepared(rng_np) -> dict[str, np.ndarray]:
    from ddm_jax.constants import N_BINS, wavelength_grid

    n, n_lines = 2, len(LINE_NAMES)
    flux = (5 + rng_np.normal(size=(n, N_BINS))).astype(np.float32)
    return {"flux": flux, "ivar": np.ones((n, N_BINS), np.float32), "mask": np.zeros((n, N_BINS), np.uint8),
            "wavelength": wavelength_grid().astype(np.float32), "z": np.full(n, 0.05), "ids": np.array(["a", "b"]),
            "line_names": np.array(LINE_NAMES), "line_flux": np.ones((n, n_lines), np.float32),
            "line_flux_err": np.ones((n, n_lines), np.float32), "line_snr": np.ones((n, n_lines), np.float32),
            "meets_snr": np.ones(n, bool), "line_fit_ok": np.ones(n, bool), "broad_balmer": np.zeros(n, bool),
            "passes_gate": np.ones(n, bool), "log_nii_ha": np.zeros(n, np.float32),
            "log_oiii_hb": np.zeros(n, np.float32), "log_sii_ha": np.zeros(n, np.float32),
            "log_oi_ha": np.zeros(n, np.float32), "bpt_nii": np.zeros(n, np.int8),
            "position": np.full((n, 2), -1, np.int32), "format": np.array("ddm-jax-prepared/2")}


def _manga_cube(path: Path) -> Path:
    from astropy.io import fits

    wave = np.exp(np.linspace(np.log(3600.0), np.log(10300.0), 300))
    flux = np.ones((300, 3, 3), np.float32)
    header = fits.Header({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 10.0, "CRVAL2": 20.0,
                          "CDELT1": -0.5 / 3600, "CDELT2": 0.5 / 3600, "CRPIX1": 2, "CRPIX2": 2})
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(flux, header, name="FLUX"),
                  fits.ImageHDU(np.ones_like(flux), name="IVAR"), fits.ImageHDU(np.zeros(flux.shape, np.int32),
                                                                                   name="MASK"),
                  fits.ImageHDU(wave, name="WAVE")]).writeto(path)
    return path


class Fuzzer:
    def __init__(self, work: Path, seed: int):
        from ddm_jax.inference.decomposer import Decomposer
        from ddm_jax.inference.streaming import decompose_files
        from ddm_jax.io.checkpoint import convert_to_checkpoint
        from ddm_jax.io.outputs.files import write_output

        self.work, self.rng = work, random.Random(seed)
        good = work / "good"
        good.mkdir()
        rng_np = np.random.default_rng(seed)
        flux = (5 + rng_np.normal(size=(3, 2208))).astype(np.float32)
        np.save(good / "spectra.npy", flux)
        np.save(good / "mass.npy", np.array([1.0, 1.5, 2.0]))
        np.save(good / "mass2.npy", np.array([1.0, 2.0]))
        np.savez(good / "prepared.npz", **_prepared(rng_np))
        wavelength = np.linspace(3600.0, 9500.0, 800)
        columns = np.stack([wavelength, 1 + 0.1 * rng_np.normal(size=800), np.full(800, 100.0)], 1)
        np.savez(good / "arrays.npz", wavelength=wavelength, flux=np.stack([columns[:, 1]] * 2),
                 ivar=np.full((2, 800), 100.0), mask=np.zeros((2, 800), np.uint8), z=np.array([0.05, 0.06]))
        np.save(good / "columns.npy", columns)
        np.savetxt(good / "spectrum.csv", columns, delimiter=",", header="wavelength,flux,ivar", comments="")
        np.savetxt(good / "companion.csv", columns, delimiter=",", header="wavelength,flux,ivar", comments="")
        (good / "z.csv").write_text("id,z\nspectrum,0.05\nmanga-1-2,0.03\ncoadd-4-80613-thru20210324,0.1\n")
        shutil.copy(DATA / "tiny_ddm_keras.hdf5", good / "ddm.hdf5")
        as_model_save(DATA / "tiny_regressor_keras.hdf5", good / "regressor.h5")
        _manga_cube(good / "manga-1-2-LOGCUBE.fits")
        self.companion = good / "companion.csv"
        checkpoint = work / "checkpoint"
        convert_to_checkpoint([good / "ddm.hdf5", DATA / "tiny_regressor_keras.hdf5"], checkpoint)
        self.decomposer = Decomposer.from_checkpoint(checkpoint, batch_size=4)
        write_output(good / "prepared.fits", _prepared(rng_np))
        decompose_files(self.decomposer, good / "prepared.npz", good / "mass2.npy", good / "decomposed.fits")
        self.seeds = {  # target: (good file, the format-aware mutation)
            "keras (save_weights)": (good / "ddm.hdf5", hdf5_structure),
            "keras (model.save)": (good / "regressor.h5", hdf5_structure),
            "spectra .npy (decompose)": (good / "spectra.npy", npy_header),
            "masses .npy (decompose)": (good / "mass.npy", npy_header),
            "PREPARED .npz (decompose)": (good / "prepared.npz", npz_member),
            "spectra .npz (prepare)": (good / "arrays.npz", npz_member),
            "columns .npy (prepare)": (good / "columns.npy", npy_header),
            "CSV (prepare)": (good / "spectrum.csv", csv_lines),
            "redshift table CSV (prepare)": (good / "z.csv", csv_lines),
            "SDSS spec FITS (prepare)": (self._sdss(good), fits_card),
            "SDSS DR7 spSpec FITS (prepare)": (write_spspec(self._sdss_values(good), good / "spSpec.fit"), fits_card),
            "SDSS eBOSS spec FITS (prepare)": (write_eboss(self._sdss_values(good), good / "eboss.fits"), fits_card),
            "DESI coadd FITS.gz (prepare)": (REAL / "coadd-4-80613-thru20210324.fits.gz", fits_card),
            "DESI redrock FITS.gz (prepare)": (REAL / "redrock-4-80613-thru20210324.fits.gz", fits_card),
            "MaNGA DAP FITS.gz (prepare)": (REAL / "MaNGA_test_spectra.fits.gz", fits_card),
            "MaNGA cube FITS (prepare)": (good / "manga-1-2-LOGCUBE.fits", fits_card),
            "PREPARED .fits (decompose)": (good / "prepared.fits", _either(fits_card, catalog_layout)),
            "FITS catalogue (export)": (good / "decomposed.fits", _either(fits_card, catalog_layout)),
        }
        try:
            self.seeds["PyTorch state_dict"] = (self._state_dict(good), state_dict_change)
        except ImportError:
            print("torch is not installed: state_dicts are not fuzzed", file=sys.stderr)
        self.good = good

    @staticmethod
    def _sdss(good: Path) -> Path:
        try:
            import ppxf
        except ImportError:  # the test extra installs it; without it, a file the reader makes stands in
            return _manga_cube(good / "sdss-standin.fits")
        return Path(ppxf.__file__).parent / "spectra" / "NGC3073_SDSS_DR18.fits"

    @staticmethod
    def _sdss_values(good: Path) -> dict:
        """A real SDSS spectrum's values (pPXF's) for the layouts no package ships, else made-up ones."""
        try:
            import ppxf
        except ImportError:
            return synthetic_values()
        return dr8_values(Path(ppxf.__file__).parent / "spectra" / "NGC3073_SDSS_DR18.fits")

    @staticmethod
    def _state_dict(good: Path) -> Path:
        import torch

        from ddm_jax.config import RegressorConfig
        from ddm_jax.reference.torch_port import TorchRegressor

        torch.manual_seed(0)
        torch.save(TorchRegressor(RegressorConfig.tiny()).state_dict(), good / "regressor.pt")
        return good / "regressor.pt"

    def mutate(self, target: str) -> tuple[bytes, str, str]:
        path, aware = self.seeds[target]
        data = path.read_bytes()
        mutate = aware if self.rng.random() < 0.6 else mutate_bytes
        if path.name.endswith(".gz"):
            mutated, how = through_gzip(self.rng, data, mutate)
        else:
            mutated, how = mutate(self.rng, data)
        return mutated, how, path.name

    def run(self, target: str, case: Path) -> str:
        """Run the reader of `target` on the mutated file `case`; 'ok' or 'refused' (a DDMError
        checked to be one line), or raise AssertionError for a broken invariant."""
        from ddm_jax.errors import DDMError
        from ddm_jax.inference.streaming import decompose_files
        from ddm_jax.io.loaders.arrays import read_z_table
        from ddm_jax.io.loaders.registry import read_many
        from ddm_jax.io.outputs.files import export
        from ddm_jax_convert import convert_file

        out = case.parent / "out"
        out.mkdir()
        try:
            if target.startswith(("keras", "PyTorch")):
                convert_file(str(case))
            elif target.startswith("FITS catalogue"):
                export(case, out / "result.npz")
            elif target.startswith("redshift table"):
                read_z_table(case)
            elif target.endswith("(decompose)"):
                spectra, mass = case, self.good / "mass.npy"
                if target.startswith("masses"):
                    spectra, mass = self.good / "spectra.npy", case
                elif target.startswith("PREPARED"):
                    mass = self.good / "mass2.npy"
                output = out / ("result.npz" if target.startswith("PREPARED") or self.rng.random() < 0.7
                                else "result")
                decompose_files(self.decomposer, spectra, mass, output)
            else:
                if target.startswith("DESI redrock"):
                    shutil.copy(self.seeds["DESI coadd FITS.gz (prepare)"][0], case.parent)
                    case = case.parent / self.seeds["DESI coadd FITS.gz (prepare)"][0].name
                spectra, errors = read_many([case, self.companion], z_all=0.05)
                for message in errors:  # the bad file (or its redshift catalogue beside it), on one line
                    assert "\n" not in message and message.startswith(str(case.parent)), f"batch message {message!r}"
                assert any(s.source == str(self.companion) for s in spectra), "the good file was not read"
                return "refused" if errors else "ok"
        except DDMError as err:
            message = str(err)
            assert message and "\n" not in message, f"DDMError of {len(message.splitlines())} lines: {message!r}"
            leftovers = sorted(p.name for p in out.iterdir())
            assert not leftovers, f"refused, but wrote {leftovers}"
            return "refused"
        return "ok"


def peak_rss_kib() -> int:
    """This process's peak resident memory: VmHWM, since ru_maxrss also counts the parent's memory
    at the fork that started this process (Linux keeps it across exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _timeout(signum, frame):
    signal.alarm(5)  # again, should this one land where it is swallowed (a garbage-collection callback)
    raise CaseTimeout(f"no answer within {CASE_TIMEOUT_S} s")


def fuzz(seed: int, cases: int, budget_s: float, keep: Path | None) -> dict:
    start = time.monotonic()
    summary = {"seed": seed, "cases": 0, "targets": collections.defaultdict(collections.Counter), "failures": []}
    with tempfile.TemporaryDirectory(prefix="ddm-fuzz-") as folder:
        work = Path(folder)
        fuzzer = Fuzzer(work, seed)
        targets = list(fuzzer.seeds)
        summary["setup_s"] = round(time.monotonic() - start, 1)
        signal.signal(signal.SIGALRM, _timeout)
        for index in range(cases):
            if time.monotonic() - start > budget_s:
                break
            target = targets[index % len(targets)]
            data, how, name = fuzzer.mutate(target)
            case_dir = work / f"case{index}"
            case_dir.mkdir()
            case = case_dir / name
            case.write_bytes(data)
            signal.alarm(CASE_TIMEOUT_S)
            try:
                outcome = fuzzer.run(target, case)
            except Exception as err:  # an invariant broken: any exception but a one-line DDMError
                outcome = "FAILED"
                frames = traceback.extract_tb(err.__traceback__)
                summary["failures"].append({"case": index, "target": target, "mutation": how,
                                            "error": f"{type(err).__name__}: {str(err)[:300]}",
                                            "where": [f"{Path(f.filename).name}:{f.lineno}" for f in frames[-3:]]})
                if keep is not None:
                    keep.mkdir(parents=True, exist_ok=True)
                    shutil.copy(case, keep / f"case{index}-{name}")
            finally:
                signal.alarm(0)
            peak_kib = peak_rss_kib()
            if peak_kib > RSS_LIMIT_KIB and not any(f.get("rss") for f in summary["failures"]):
                summary["failures"].append({"case": index, "target": target, "mutation": how, "rss": peak_kib})
            summary["targets"][target][outcome] += 1
            summary["cases"] += 1
            shutil.rmtree(case_dir)
    summary["peak_rss_mib"] = round(peak_rss_kib() / 1024)
    summary["seconds"] = round(time.monotonic() - start, 1)
    summary["targets"] = {k: dict(v) for k, v in summary["targets"].items()}
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--cases", type=int, default=300)
    parser.add_argument("--budget-seconds", type=float, default=float("inf"), help="stop starting cases after this")
    parser.add_argument("--keep-failures", type=Path, default=None, metavar="DIR")
    args = parser.parse_args(argv)
    print(f"fuzzing seed {args.seed}", flush=True)
    summary = fuzz(args.seed, args.cases, args.budget_seconds, args.keep_failures)
    print(json.dumps(summary, indent=1))
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
