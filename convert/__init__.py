"""Port the released Keras weights (or a state_dict of the PyTorch port) to Flax params.

Installed as `ddm_jax_convert`. `convert_files` reads the files, recognises each one's format
from its bytes and its network and configuration from its layers, and returns params checked
against `jax.eval_shape(model.init, ...)`. Writing the checkpoint is `ddm_jax.checkpoint`'s job.
"""

from __future__ import annotations

import dataclasses
import functools
import os

from ddm_jax.config import PRESETS, DDMConfig, RegressorConfig
from ddm_jax.errors import InputError, MissingFileError
from ddm_jax.io.safe import sha256_file
from ddm_jax.model.models import DDM, LineRatioRegressor, abstract_params

from .keras_hdf5 import open_keras_weights
from .rules import ConversionError, keras_layer_order, params_from_keras, params_from_state_dict
from .torch_state_dict import read_state_dict

FORMAT_KERAS, FORMAT_TORCH = "keras-hdf5", "pytorch-state-dict"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format is a zip archive
_PICKLE_PROTO = b"\x80"  # torch.save's legacy format starts with a pickle protocol opcode


@dataclasses.dataclass
class ConvertedNetwork:
    network: str  # 'ddm' or 'regressor'
    preset: str  # a key of ddm_jax.config.PRESETS
    config: DDMConfig | RegressorConfig
    params: dict
    source: dict  # file name, sha256, format: goes into the checkpoint metadata


def detect_format(path: str) -> str:
    """'keras-hdf5' or 'pytorch-state-dict', from the file's first bytes (not its name)."""
    if not os.path.isfile(path):
        raise MissingFileError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(8)
    if head == _HDF5_MAGIC:
        return FORMAT_KERAS
    if head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_PROTO):
        return FORMAT_TORCH
    if not head:
        raise InputError(f"{path}: the file is empty")
    raise InputError(f"{path}: neither a Keras HDF5 weight file nor a PyTorch state_dict")


@functools.cache
def _abstract(network: str, config):
    return abstract_params(DDM(config) if network == "ddm" else LineRatioRegressor(config))


def _candidates(preset: str):
    names = list(PRESETS) if preset == "auto" else [preset]
    for name in names:
        if name not in PRESETS:
            raise InputError(f"unknown configuration {name!r}; choose 'auto' or one of {sorted(PRESETS)}")
        ddm_config, regressor_config = PRESETS[name]
        yield "ddm", name, ddm_config
        yield "regressor", name, regressor_config


def convert_file(path: str, preset: str = "auto") -> ConvertedNetwork:
    """Convert one file; its network (and, with preset 'auto', its configuration) come from its layers."""
    fmt = detect_format(path)
    if fmt == FORMAT_TORCH:
        state = read_state_dict(path)
        return _first_fit(path, preset, {"format": FORMAT_TORCH},
                          lambda network, config: params_from_state_dict(state, network, _abstract(network, config)))
    with open_keras_weights(path) as (layers, layout):
        source = {"format": layout, "file_layers": [layer.name for layer in layers]}
        return _first_fit(path, preset, source, lambda network, config: params_from_keras(
            layers, network, config, _abstract(network, config)))


def _first_fit(path: str, preset: str, source: dict, convert) -> ConvertedNetwork:
    """The first candidate network and configuration that `convert(network, config)` fits."""
    failures = []
    for network, name, config in _candidates(preset):
        try:
            params = convert(network, config)
        except ConversionError as err:
            failures.append(err)
            continue
        if "file_layers" in source:  # Keras: record which file layer became which Flax layer, for audit
            source["layer_map"] = dict(zip(source.pop("file_layers"),
                                           ("/".join(p) for p in keras_layer_order(network, config))))
        source.update(file=os.path.basename(path), sha256=sha256_file(path))
        return ConvertedNetwork(network, name, config, params, source)
    best = max(failures, key=lambda err: err.matched)  # max keeps the first (released DDM) on ties
    raise InputError(f"{path}: not a weight file of the DDM or the line-ratio regressor"
                     f"{'' if preset == 'auto' else f' ({preset} configuration)'}: {best}")


def convert_files(paths: list[str], preset: str = "auto") -> tuple[ConvertedNetwork, ConvertedNetwork]:
    """Convert the DDM's and the regressor's files, given in any order: (ddm, regressor)."""
    if len(paths) != 2:
        raise InputError(f"give two weight files, the DDM's and the regressor's (got {len(paths)})")
    converted = {}
    for path in paths:
        result = convert_file(path, preset)
        if result.network in converted:
            raise InputError(f"{paths[0]} and {paths[1]} both hold {result.network} weights; "
                             "give one DDM file and one regressor file")
        converted[result.network] = result
    return converted["ddm"], converted["regressor"]
