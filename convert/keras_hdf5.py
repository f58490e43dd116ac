"""Read a Keras 2 legacy HDF5 weight file (`save_weights(...hdf5)` or `model.save(...h5)`).

Returns the weighted layers in file order, which is the saving model's `model.layers`
order; names are kept only for messages, since Keras's auto-generated names depend on what
else the saving process had built.
"""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np

from ddm_jax.errors import DDMError


@dataclasses.dataclass
class KerasLayer:
    name: str
    weights: dict[str, np.ndarray]  # 'kernel' / 'bias' -> array


def _string_list_attr(group: h5py.Group, name: str) -> list[str] | None:
    """A list-of-strings attribute; Keras splits long ones into `name0`, `name1`, ..."""
    if name in group.attrs:
        values = list(group.attrs[name])
    elif f"{name}0" in group.attrs:
        values, chunk = [], 0
        while f"{name}{chunk}" in group.attrs:
            values.extend(group.attrs[f"{name}{chunk}"])
            chunk += 1
    else:
        return None
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _weight_kind(weight_name: str) -> str:
    # 'conv1d_3/kernel:0' -> 'kernel'
    return weight_name.split("/")[-1].split(":")[0]


def read_keras_weights(path: str) -> tuple[list[KerasLayer], str]:
    """The weighted layers of a Keras HDF5 file, in file order, and the layout's name."""
    try:
        with h5py.File(path, "r") as f:
            layout = "keras-hdf5 (save_weights)"
            root = f
            if "layer_names" not in f.attrs and "layer_names0" not in f.attrs and "model_weights" in f:
                root, layout = f["model_weights"], "keras-hdf5 (model.save)"
            layer_names = _string_list_attr(root, "layer_names")
            if layer_names is None:
                raise DDMError(f"{path}: an HDF5 file but not a Keras weight file (no 'layer_names' attribute)")
            layers = []
            for name in layer_names:
                if name not in root:
                    raise DDMError(f"{path}: layer {name!r} is listed in 'layer_names' but has no group "
                                   "(truncated or edited file?)")
                group = root[name]
                weight_names = _string_list_attr(group, "weight_names") or []
                if not weight_names:
                    continue
                weights = {}
                for weight_name in weight_names:
                    if weight_name not in group:
                        raise DDMError(f"{path}: layer {name!r} lists weight {weight_name!r} but the dataset "
                                       "is missing (truncated or edited file?)")
                    weights[_weight_kind(weight_name)] = np.asarray(group[weight_name][()])
                layers.append(KerasLayer(name, weights))
            return layers, layout
    except DDMError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise DDMError(f"{path}: cannot read the HDF5 file (truncated or corrupt?): {err}") from err
