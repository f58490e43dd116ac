"""Hostile and odd input files: weight files made from the committed tiny Keras files (tests and the fuzzer),
and .npy / .npz / FITS bytes that declare more than they hold."""

import io
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np

# The crafted file of issue 14: a dense kernel declared 200,000 x 200,000 float32 (149 GiB),
# chunked and gzip-compressed; unwritten chunks read as zeros, so the file stays small.
HUGE = (200_000, 200_000)
FIRST, TRUNK_DENSE, LAST = 0, 8, -1  # weighted layers of the DDM: conv_1, dense_1, total

# Runs argv (a `ddm-jax` command line) in a child process and prints the child's peak RSS in KiB,
# its exit code and its stderr: the measurement counts nothing of the process that asks.
_PEAK_RSS = """
import json, resource, subprocess, sys
done = subprocess.run([sys.executable, "-m", "ddm_jax.cli", *sys.argv[1:]], capture_output=True, text=True)
print(json.dumps({"peak_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                  "returncode": done.returncode, "stderr": done.stderr}))
"""


def peak_rss(argv: list[str], cwd=None) -> dict:
    """{'peak_kib', 'returncode', 'stderr'} of `ddm-jax *argv` run in a fresh process."""
    import json

    done = subprocess.run([sys.executable, "-c", _PEAK_RSS, *map(str, argv)], capture_output=True, text=True,
                          cwd=cwd, check=True)
    return json.loads(done.stdout)


def strings(attrs, key):
    return [n.decode() if isinstance(n, bytes) else str(n) for n in attrs[key]]


def weighted_layers(root) -> list[str]:
    return [n for n in strings(root.attrs, "layer_names") if len(root[n].attrs["weight_names"])]


def weight_path(root, layer_index: int, kind: str = "kernel") -> str:
    """'<layer>/<weight name>' of a weighted layer's kernel or bias."""
    layer = weighted_layers(root)[layer_index]
    (name,) = [w for w in strings(root[layer].attrs, "weight_names") if w.split("/")[-1].startswith(kind)]
    return f"{layer}/{name}"


def copy_of(source: Path, path: Path) -> Path:
    shutil.copy(source, path)
    return path


def replace_weight(path: Path, layer_index: int, make, kind: str = "kernel", root: str = "/") -> str:
    """Delete a weight's dataset and let `make(group, name, old_values)` put something in its place."""
    with h5py.File(path, "r+") as f:
        weight = weight_path(f[root], layer_index, kind)
        group_name, name = weight.rsplit("/", 1)
        group = f[root][group_name]
        old = group[name][()]
        del group[name]
        make(group, name, old)
    return weight


def huge_dataset(shape=HUGE):
    def make(group, name, old):
        group.create_dataset(name, shape=shape, dtype="<f4", chunks=(1000, 1000) if len(shape) == 2 else True,
                             compression="gzip", fillvalue=0.0)
    return make


def as_model_save(source: Path, path: Path) -> Path:
    """The same weights in `model.save(...h5)`'s layout: everything under a `model_weights` group."""
    with h5py.File(source, "r") as src, h5py.File(path, "w") as dst:
        group = dst.create_group("model_weights")
        for key, value in src.attrs.items():
            group.attrs[key] = value
        for name in src:
            src.copy(src[name], group, name=name)
        dst.attrs["model_config"] = "{}"
    return path


def expected_shape(source: Path, layer_index: int, kind: str = "kernel") -> tuple:
    with h5py.File(source, "r") as f:
        return tuple(f[weight_path(f, layer_index, kind)].shape)


def values(source: Path, layer_index: int, kind: str = "kernel") -> np.ndarray:
    with h5py.File(source, "r") as f:
        return f[weight_path(f, layer_index, kind)][()]


# --- files that declare more than they hold -----------------------------------------------------

def npy_bytes(shape, dtype="<f4", data=b"") -> bytes:
    """An .npy header declaring `shape` and `dtype`, followed by `data` (whatever it declares)."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + data


def write_npz(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(f"{name}.npy", content)
    return path


def array_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asarray(array))
    return buffer.getvalue()


def with_card(raw: bytes, card: str, value: int) -> bytes:
    """`raw` with the first header card `card` set to `value` (same 80-byte card, nothing moved)."""
    start = raw.index(card.ljust(8).encode() + b"= ")
    return raw[:start] + f"{card:<8}= {value:>20}".ljust(80).encode() + raw[start + 80:]
