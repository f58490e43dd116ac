"""Pure conversion rules: source arrays in, a Flax params tree out, checked against `eval_shape`.

One rule per source layout:
- Keras: weighted layers paired, in file order, with the model's weighted layers in Keras
  `model.layers` order (how Keras itself loads a file by topology); kernels already have
  Flax's layouts (Conv1D (k, in, out), Dense (in, out)).
- PyTorch port: keys are the Flax paths joined by '.', with `weight` for `kernel`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
from flax import traverse_util

from ddm_jax.config import DDMConfig, RegressorConfig
from ddm_jax.errors import DDMError

NETWORK_TITLES = {"ddm": "the DDM", "regressor": "the line-ratio regressor"}


class ConversionError(DDMError):
    """A source that does not fit one network; `matched` counts the layers that did, for diagnosis."""

    def __init__(self, message: str, matched: int = 0):
        super().__init__(message)
        self.matched = matched


@dataclasses.dataclass(frozen=True)
class DeclaredArray:
    """An array as its file declares it: shape and dtype (that of what `load()` returns) are known
    without reading, and `load()` reads the data. Rules compare every declared shape and dtype
    before any `load()`, so a file that declares a huge array is refused before memory is asked for."""

    shape: tuple[int, ...]
    dtype: np.dtype
    load: Callable[[], np.ndarray]


def keras_layer_order(network: str, config: DDMConfig | RegressorConfig) -> list[tuple[str, ...]]:
    """Flax paths of the weighted layers in the order of the Keras model's `model.layers`.

    Keras sorts layers by depth (longest path to an output, deepest first) and breaks ties by
    first visit in a depth-first walk from the outputs in output order (SF spectrum first).
    So the mirrored SF/AGN layers interleave SF first, the probability heads come level by
    level, and the depth-0 output layers come last: SF spectrum, AGN spectrum, Tot_Prob.
    """
    convs = [(prefix, f"conv_{i}") for i in range(1, len(config.convs) + 1)
             for prefix in (("trunk",) if network == "ddm" else ("convs",))]
    if network == "regressor":
        return convs + [("dense_1",), ("dense_2",), ("out",)]
    trunk = [(f"dense_{i}",) for i in range(1, len(config.trunk_units) + 1)]
    head_layers = [f"dense_{i}" for i in range(1, len(config.head_units) + 1)] + ["out"]
    heads = [(f"{side}_head", layer) for layer in head_layers for side in ("sf", "agn")]
    return (convs + trunk + [("sf_dense",), ("agn_dense",)] + heads
            + [("sf_spectrum",), ("agn_spectrum",), ("total",)])


def _layer_specs(abstract_params) -> dict[tuple[str, ...], dict[str, tuple[int, ...]]]:
    """{layer path: {'kernel': shape, 'bias': shape}} from an abstract (eval_shape) params tree."""
    specs: dict[tuple[str, ...], dict[str, tuple[int, ...]]] = {}
    for path, leaf in traverse_util.flatten_dict(abstract_params).items():
        specs.setdefault(path[:-1], {})[path[-1]] = tuple(leaf.shape)
    return specs


def _check_dtype(array: DeclaredArray, where: str, matched: int) -> None:
    if np.dtype(array.dtype).kind != "f":
        raise ConversionError(f"{where}: dtype {array.dtype} is not floating point", matched)


def _as_float32(array: DeclaredArray, where: str, matched: int) -> np.ndarray:
    # float16 and float64 files convert exactly or by rounding, as Keras itself loads them.
    values = np.asarray(array.load(), np.float32)
    if not np.all(np.isfinite(values)):
        raise ConversionError(f"{where}: holds NaN or infinite values", matched)
    return values


def check_params(params, abstract_params, network: str) -> None:
    """Key sets must match exactly and every leaf must have its expected shape."""
    title = NETWORK_TITLES[network]
    got = traverse_util.flatten_dict(params)
    expected = traverse_util.flatten_dict(abstract_params)
    missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    if missing or extra:
        raise ConversionError(f"{title}: params missing {['/'.join(k) for k in missing]}, "
                              f"unexpected {['/'.join(k) for k in extra]}")
    for key, leaf in expected.items():
        if tuple(got[key].shape) != tuple(leaf.shape):
            raise ConversionError(f"{title}: {'/'.join(key)} has shape {tuple(got[key].shape)}, "
                                  f"expected {tuple(leaf.shape)}")


def _leading_matches(sources: list[dict[str, DeclaredArray]], specs: list[dict[str, tuple]]) -> int:
    count = 0
    for source, spec in zip(sources, specs):
        if {k: tuple(v.shape) for k, v in source.items()} != spec:
            break
        count += 1
    return count


def params_from_keras(layers, network: str, config, abstract_params):
    """Flax params for `network` from `read_keras_weights` layers (in file order)."""
    title = NETWORK_TITLES[network]
    specs = _layer_specs(abstract_params)
    order = keras_layer_order(network, config)
    if sorted(order) != sorted(specs):
        raise AssertionError(f"keras_layer_order out of step with the {network} module")  # a bug here, not input
    expected = [specs[path] for path in order]
    if len(layers) != len(order):
        matched = _leading_matches([layer.weights for layer in layers], expected)
        raise ConversionError(f"{title}: the file has {len(layers)} weighted layers, {title} has {len(order)} "
                              f"(missing or extra layers; the first {matched} match)", matched)
    checked = []
    for index, (path, layer) in enumerate(zip(order, layers)):  # every declared shape first, then reads
        name = "/".join(path)
        spec = specs[path]
        if set(layer.weights) != set(spec):
            raise ConversionError(f"{title}: layer {name} (file layer {layer.name!r}): expected weights "
                                  f"{sorted(spec)}, the file has {sorted(layer.weights)}", index)
        for kind in sorted(spec, reverse=True):  # kernel before bias: the more telling shape
            shape, array = spec[kind], layer.weights[kind]
            where = f"{title}: layer {name} (file layer {layer.name!r}) {kind}"
            if tuple(array.shape) != shape:
                raise ConversionError(f"{where}: expected shape {shape}, got {tuple(array.shape)}", index)
            _check_dtype(array, where, index)
            checked.append((path + (kind,), array, where))
    # Keras Conv1D (k, in, out) and Dense (in, out) are already Flax's layouts.
    flat = {key: _as_float32(array, where, len(order)) for key, array, where in checked}
    params = traverse_util.unflatten_dict(flat)
    check_params(params, abstract_params, network)
    return params


def _torch_to_flax(array: np.ndarray) -> np.ndarray:
    # torch Conv1d (out, in, k) -> flax (k, in, out) and Linear (out, in) -> (in, out): both reverse the axes.
    return array.transpose(tuple(reversed(range(array.ndim))))


def params_from_state_dict(state: dict[str, DeclaredArray], network: str, abstract_params):
    """Flax params for `network` from a state_dict of `ddm_jax.reference.torch_port`."""
    title = NETWORK_TITLES[network]
    expected = traverse_util.flatten_dict(abstract_params)
    key_of = {path: ".".join(path[:-1] + ("weight" if path[-1] == "kernel" else "bias",)) for path in expected}
    missing = sorted(key for key in key_of.values() if key not in state)
    extra = sorted(set(state) - set(key_of.values()))
    matched = len(expected) - len(missing)
    if missing or extra:
        raise ConversionError(f"{title}: state_dict keys missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
                              f"unexpected {extra[:5]}{' ...' if len(extra) > 5 else ''}", matched)
    for path, leaf in expected.items():  # every declared shape first, then reads
        key = key_of[path]
        declared = tuple(state[key].shape)
        if declared[::-1] != tuple(leaf.shape):
            raise ConversionError(f"{title}: layer {'/'.join(path[:-1])} ({key}): expected shape "
                                  f"{tuple(leaf.shape)} in Flax layout, got {declared[::-1]} "
                                  f"(torch shape {declared})", matched)
        _check_dtype(state[key], f"{title}: {key}", matched)
    flat = {path: _torch_to_flax(_as_float32(state[key_of[path]], f"{title}: {key_of[path]}", matched))
            for path in expected}
    params = traverse_util.unflatten_dict(flat)
    check_params(params, abstract_params, network)
    return params
