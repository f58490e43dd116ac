"""A PyTorch port of both networks with Keras semantics: the project's reference for parity and speed.

Module paths mirror the Flax parameter paths (`trunk.conv_1.weight` <-> `trunk/conv_1/kernel`),
so a `state_dict` of these modules converts with one rule per layer type.
Needs the optional package `torch`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ddm_jax.config import ConvSpec, DDMConfig, RegressorConfig, conv_lengths, same_padding


class SameConv1d(nn.Conv1d):
    """Conv1d with Keras `padding='same'`: the odd pad element goes on the right."""

    def __init__(self, in_channels: int, spec: ConvSpec, in_length: int):
        super().__init__(in_channels, spec.features, spec.kernel, stride=spec.stride, bias=spec.bias)
        self.keras_pad = same_padding(in_length, spec.kernel, spec.stride)

    def forward(self, x):
        return super().forward(F.pad(x, self.keras_pad))


def _conv_stack(n_bins: int, convs: tuple[ConvSpec, ...]) -> nn.ModuleDict:
    in_lengths = [n_bins] + conv_lengths(n_bins, convs)[:-1]
    in_channels = [1] + [c.features for c in convs[:-1]]
    return nn.ModuleDict({f"conv_{i}": SameConv1d(ch, spec, length)
                          for i, (ch, spec, length) in enumerate(zip(in_channels, convs, in_lengths), start=1)})


def _run_convs(convs: nn.ModuleDict, spectra, slope: float):
    x = spectra[:, None, :]
    for conv in convs.values():
        x = F.leaky_relu(conv(x), slope)
    return x.transpose(1, 2).flatten(1)  # Keras flattens (length, channels)


class TorchDDM(nn.Module):
    """(B, n_bins) normalised spectra -> (sf_spectrum, agn_spectrum, p_sf, p_agn, p_total)."""

    def __init__(self, config: DDMConfig = DDMConfig()):
        super().__init__()
        self.config = config
        self.trunk = _conv_stack(config.n_bins, config.convs)
        widths = (config.flat_features,) + config.trunk_units
        for i in range(len(config.trunk_units)):
            self.add_module(f"dense_{i + 1}", nn.Linear(widths[i], widths[i + 1]))
        for name in ("sf", "agn"):
            self.add_module(f"{name}_dense", nn.Linear(config.trunk_units[-1], config.branch_units))
            self.add_module(f"{name}_spectrum", nn.Linear(config.branch_units, config.n_bins))
            head_widths = (2 * config.branch_units,) + config.head_units + (1,)
            names = [f"dense_{i + 1}" for i in range(len(config.head_units))] + ["out"]
            self.add_module(f"{name}_head", nn.ModuleDict(
                {n: nn.Linear(head_widths[i], head_widths[i + 1]) for i, n in enumerate(names)}))
        self.total = nn.Linear(1, 1)

    def forward(self, spectra):
        slope = self.config.negative_slope
        act = lambda y: F.leaky_relu(y, slope)  # noqa: E731  (dropout is the identity at inference)
        h = _run_convs(self.trunk, spectra, slope)
        for i in range(len(self.config.trunk_units)):
            h = act(getattr(self, f"dense_{i + 1}")(h))
        sf_hidden, agn_hidden = act(self.sf_dense(h)), act(self.agn_dense(h))
        both = torch.cat([sf_hidden, agn_hidden], dim=-1)

        def head(layers):
            x = both
            for name, layer in layers.items():
                x = layer(x) if name == "out" else act(layer(x))
            return x[:, 0]

        p_sf, p_agn = head(self.sf_head), head(self.agn_head)
        p_total = self.total(act(p_sf + p_agn)[:, None])[:, 0]
        return self.sf_spectrum(sf_hidden), self.agn_spectrum(agn_hidden), p_sf, p_agn, p_total


class TorchRegressor(nn.Module):
    """(B, n_bins) centred spectra -> (B, n_outputs) line ratios."""

    def __init__(self, config: RegressorConfig = RegressorConfig()):
        super().__init__()
        self.config = config
        self.convs = _conv_stack(config.n_bins, config.convs)
        self.dense_1 = nn.Linear(config.flat_features, config.dense_units[0])
        self.dense_2 = nn.Linear(config.dense_units[0], config.dense_units[1])
        self.out = nn.Linear(config.dense_units[1], config.n_outputs)

    def forward(self, spectra):
        slope = self.config.negative_slope
        h = _run_convs(self.convs, spectra, slope)
        h = F.leaky_relu(F.leaky_relu(self.dense_1(h), slope), slope)
        return self.out(F.leaky_relu(self.dense_2(h), slope))


def load_flax_params(module: nn.Module, params) -> nn.Module:
    """Load a Flax params tree into `module` (the inverse of the converter's transposes); returns it."""
    state = {}
    for key in module.state_dict():
        *path, kind = key.split(".")
        leaf = params
        for part in path:
            leaf = leaf[part]
        value = np.asarray(leaf["kernel" if kind == "weight" else "bias"])
        # flax Conv (k, in, out) -> torch Conv1d (out, in, k); flax Dense (in, out) -> torch Linear (out, in)
        value = value.transpose(2, 1, 0) if value.ndim == 3 else value.T
        state[key] = torch.from_numpy(np.ascontiguousarray(value))  # a copy: torch wants writable memory
    module.load_state_dict(state)
    return module
