"""Read a Keras 2 legacy HDF5 weight file (`save_weights(...hdf5)` or `model.save(...h5)`).

Yields the weighted layers in file order, which is the saving model's `model.layers` order;
names are kept only for messages, since Keras's auto-generated names depend on what else the
saving process had built.

Nothing is read before it is known to be small: every weight is a `DeclaredArray` (the
dataset's declared shape and dtype; `load()` reads it while the file is open), and attributes
are read only after their declared size is checked. Weight files hold their own data: external
links, external storage and virtual datasets (which would read other files) are refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import subprocess
import sys
from collections.abc import Iterator

import h5py
import numpy as np

from ddm_jax.errors import DDMError, InputError, first_line

from .rules import DeclaredArray

# Bounds on what is read before the layer shapes are compared: the released DDM lists 60
# layers; a chunk bigger than this and than its whole dataset only serves to make a read huge.
MAX_NAMES = 10_000
MAX_CHUNK_BYTES = 1 << 22


@dataclasses.dataclass
class KerasLayer:
    name: str
    weights: dict[str, DeclaredArray]  # 'kernel' / 'bias' -> declared array


def _string_list_attr(path: str, group: h5py.Group, name: str) -> list[str] | None:
    """A list-of-strings attribute; Keras splits long ones into `name0`, `name1`, ..."""
    if name in group.attrs:
        keys = [name]
    elif f"{name}0" in group.attrs:
        keys = []
        while f"{name}{len(keys)}" in group.attrs:
            keys.append(f"{name}{len(keys)}")
    else:
        return None
    values = []
    for key in keys:
        shape = group.attrs.get_id(key).shape or ()
        count = int(np.prod(shape, dtype=np.float64))
        if len(values) + count > MAX_NAMES:
            raise InputError(f"{path}: attribute {key!r} of {group.name!r} declares shape {shape}; "
                             f"a Keras weight file lists at most {MAX_NAMES} names")
        values.extend(np.atleast_1d(group.attrs[key]).ravel())
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _weight_kind(weight_name: str) -> str:
    # 'conv1d_3/kernel:0' -> 'kernel'
    return weight_name.split("/")[-1].split(":")[0]


def _hard_link(path: str, group: h5py.Group, name: str, what: str):
    """`group[name]`, following hard links only: an external or soft link anywhere on the way is refused."""
    node = group
    for part in (p for p in name.split("/") if p):
        link = node.get(part, getlink=True)
        if link is None:
            return None
        if isinstance(link, h5py.ExternalLink):
            raise InputError(f"{path}: {what} is an external link to {link.filename}:{link.path}; "
                             "a weight file must hold its own data")
        if not isinstance(link, h5py.HardLink):
            raise InputError(f"{path}: {what} is a {type(link).__name__} to {link.path}; Keras writes no links")
        node = node[part]
    return node


def _declared(path: str, dataset, where: str) -> DeclaredArray:
    if not isinstance(dataset, h5py.Dataset):
        raise InputError(f"{path}: {where} is a {type(dataset).__name__}, not a dataset")
    if dataset.is_virtual or dataset.external:
        raise InputError(f"{path}: {where} keeps its data in other files (virtual or external storage); "
                         "a weight file must hold its own data")
    if dataset.shape is None:
        raise InputError(f"{path}: {where} declares no dataspace (an empty dataset)")
    dtype = dataset.dtype
    if dataset.chunks is not None:
        chunk_bytes = int(np.prod(dataset.chunks, dtype=np.float64)) * dtype.itemsize
        if chunk_bytes > max(MAX_CHUNK_BYTES, dataset.size * dtype.itemsize):
            raise InputError(f"{path}: {where} declares chunks {dataset.chunks} larger than the dataset "
                             f"{dataset.shape}")

    def load() -> np.ndarray:
        try:
            return np.asarray(dataset[()])
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise InputError(f"{path}: cannot read {where} (truncated or corrupt?): {err}") from None

    return DeclaredArray(tuple(dataset.shape), dtype, load)


# Touches, in a child process, every attribute and dataset the reader could touch: libhdf5 can
# crash (SIGSEGV) on a corrupted attribute or chunk, and that must be a refusal, not the end of
# the command. Python errors are left to the reader, which reports them in its own words.
_PROBE = """
import sys
import h5py
import numpy as np

def touch(name, node):
    try:
        for key in node.attrs:
            if np.prod(node.attrs.get_id(key).shape or ()) <= int(sys.argv[2]):
                node.attrs[key]
        if isinstance(node, h5py.Dataset) and node.shape is not None and not node.is_virtual and not node.external:
            if node.size * node.dtype.itemsize <= int(sys.argv[3]):
                node[()]
    except Exception:
        pass

try:
    with h5py.File(sys.argv[1], "r") as f:
        touch("/", f)
        f.visititems(touch)
except Exception:
    pass
"""
PROBE_TIMEOUT_S = 120
PROBE_MAX_BYTES = 1 << 28  # the released networks' largest kernel is 48 MB


def _check_libhdf5_survives(path: str) -> None:
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE, path, str(MAX_NAMES), str(PROBE_MAX_BYTES)],
                              capture_output=True, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise InputError(f"{path}: the HDF5 library did not finish reading it in {PROBE_TIMEOUT_S} s (a corrupt "
                         "file?)") from None
    if done.returncode < 0:
        raise InputError(f"{path}: the HDF5 library crashed reading it ({signal.Signals(-done.returncode).name}): "
                         "a corrupt file")


@contextlib.contextmanager
def open_keras_weights(path: str) -> Iterator[tuple[list[KerasLayer], str]]:
    """The weighted layers of a Keras HDF5 file, in file order, and the layout's name; the file
    stays open (for `DeclaredArray.load`) until the `with` block ends. A child process reads it
    first (`_check_libhdf5_survives`)."""
    _check_libhdf5_survives(path)
    try:
        with h5py.File(path, "r") as f:
            yield _layers(path, f)
    except DDMError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as err:
        raise InputError(f"{path}: cannot read the HDF5 file (truncated or corrupt?): "
                         f"{first_line(err)}") from None


def _layers(path: str, f: h5py.File) -> tuple[list[KerasLayer], str]:
    layout, root = "keras-hdf5 (save_weights)", f
    if "layer_names" not in f.attrs and "layer_names0" not in f.attrs and "model_weights" in f:
        root, layout = _hard_link(path, f, "model_weights", "'model_weights'"), "keras-hdf5 (model.save)"
        if not isinstance(root, h5py.Group):
            raise InputError(f"{path}: 'model_weights' is not a group")
    layer_names = _string_list_attr(path, root, "layer_names")
    if layer_names is None:
        raise InputError(f"{path}: an HDF5 file but not a Keras weight file (no 'layer_names' attribute)")
    layers = []
    for name in layer_names:
        group = _hard_link(path, root, name, f"layer {name!r}")
        if group is None:
            raise InputError(f"{path}: layer {name!r} is listed in 'layer_names' but has no group "
                             "(truncated or edited file?)")
        if not isinstance(group, h5py.Group):
            raise InputError(f"{path}: layer {name!r} is a {type(group).__name__}, not a group")
        weights = {}
        for weight_name in _string_list_attr(path, group, "weight_names") or []:
            where = f"layer {name!r} weight {weight_name!r}"
            dataset = _hard_link(path, group, weight_name, where)
            if dataset is None:
                raise InputError(f"{path}: layer {name!r} lists weight {weight_name!r} but the dataset "
                                 "is missing (truncated or edited file?)")
            weights[_weight_kind(weight_name)] = _declared(path, dataset, where)
        if weights:
            layers.append(KerasLayer(name, weights))
    return layers, layout
