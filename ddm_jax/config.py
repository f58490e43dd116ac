"""Architecture as data: frozen configs for the DDM and the line-ratio regressor.

The defaults are the released networks (SPEC's layer tables); `tiny()` keeps the same
topology (layer count, kernels, strides, 2208-bin input and output) with few channels
and units, for fast tests and the bundled example.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

N_BINS = 2208
WAVELENGTH_START = 3700.0  # Angstrom, rest frame
WAVELENGTH_STEP = 2.0
SPEED_OF_LIGHT_KMS = 299_792.458
# Normalisation window: 4000 < lambda <= 7000 Angstrom.
NORM_WINDOW = (4000.0, 7000.0)


def wavelength_grid(n_bins: int = N_BINS) -> np.ndarray:
    """The DDM's rest-frame grid, `3700 + 2 i` Angstrom, float32 of shape (n_bins,)."""
    return (WAVELENGTH_START + WAVELENGTH_STEP * np.arange(n_bins)).astype(np.float32)


def norm_window_slice(n_bins: int = N_BINS) -> slice:
    """Index range of the normalisation window on the grid (static, so jit sees a slice)."""
    wl = wavelength_grid(n_bins).astype(np.float64)
    idx = np.flatnonzero((wl > NORM_WINDOW[0]) & (wl <= NORM_WINDOW[1]))
    return slice(int(idx[0]), int(idx[-1]) + 1)


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    features: int
    kernel: int
    stride: int
    bias: bool = True


def same_padding(length: int, kernel: int, stride: int) -> tuple[int, int]:
    """Keras `padding='same'`: the odd pad element goes on the right (unlike PyTorch)."""
    total = max((math.ceil(length / stride) - 1) * stride + kernel - length, 0)
    return total // 2, total - total // 2


def conv_lengths(n_bins: int, convs: tuple[ConvSpec, ...]) -> list[int]:
    """Output length after each 'same' conv."""
    lengths, length = [], n_bins
    for conv in convs:
        length = math.ceil(length / conv.stride)
        lengths.append(length)
    return lengths


@dataclasses.dataclass(frozen=True)
class DDMConfig:
    """The Deep Decomposition Model: conv trunk, SF/AGN branches, probability heads."""

    n_bins: int = N_BINS
    convs: tuple[ConvSpec, ...] = (
        ConvSpec(64, 11, 2, bias=True),
        ConvSpec(96, 9, 2, bias=False),
        ConvSpec(128, 7, 2, bias=False),
        ConvSpec(160, 7, 2, bias=False),
        ConvSpec(192, 5, 2, bias=False),
        ConvSpec(256, 5, 2, bias=False),
        ConvSpec(320, 5, 2, bias=False),
        ConvSpec(352, 5, 1, bias=False),
    )
    trunk_units: tuple[int, ...] = (512, 512, 768)
    trunk_dropout: tuple[float, ...] = (0.25, 0.25, 0.35)
    branch_units: int = 1024
    branch_dropout: float = 0.3
    head_units: tuple[int, ...] = (100, 10)
    head_dropout: float = 0.3
    negative_slope: float = 0.3  # Keras LeakyReLU default

    @classmethod
    def tiny(cls) -> "DDMConfig":
        return cls(
            convs=tuple(dataclasses.replace(c, features=4 + 2 * i) for i, c in enumerate(cls.convs)),
            trunk_units=(24, 16, 20),
            branch_units=12,
            head_units=(6, 3),
        )

    @property
    def flat_features(self) -> int:
        return conv_lengths(self.n_bins, self.convs)[-1] * self.convs[-1].features


@dataclasses.dataclass(frozen=True)
class RegressorConfig:
    """The line-ratio regressor: conv stack, Dense -> LReLU -> LReLU -> Dense -> out."""

    n_bins: int = N_BINS
    convs: tuple[ConvSpec, ...] = (
        ConvSpec(128, 10, 2),
        ConvSpec(160, 8, 2),
        ConvSpec(192, 6, 2),
        ConvSpec(224, 6, 2),
        ConvSpec(224, 6, 2),
        ConvSpec(256, 6, 2),
        ConvSpec(256, 6, 1),
        ConvSpec(256, 6, 1),
    )
    dense_units: tuple[int, int] = (1024, 512)
    dropout: float = 0.25
    n_outputs: int = 8
    negative_slope: float = 0.3

    @classmethod
    def tiny(cls) -> "RegressorConfig":
        return cls(
            convs=tuple(dataclasses.replace(c, features=3 + i) for i, c in enumerate(cls.convs)),
            dense_units=(16, 12),
        )

    @property
    def flat_features(self) -> int:
        return conv_lengths(self.n_bins, self.convs)[-1] * self.convs[-1].features


# Indices of the regressor outputs that upstream documents; the other five are unnamed.
LINE_RATIO_NAMES = {0: "log_nii_ha", 1: "log_oiii_hb", 6: "log_sii_ha"}

PRESETS = {"released": (DDMConfig(), RegressorConfig()), "tiny": (DDMConfig.tiny(), RegressorConfig.tiny())}


def config_to_dict(config: DDMConfig | RegressorConfig) -> dict:
    return dataclasses.asdict(config)


def config_from_dict(cls, data: dict):
    """Inverse of `config_to_dict` (JSON turns tuples into lists)."""
    fields = dict(data)
    fields["convs"] = tuple(ConvSpec(**c) for c in fields["convs"])
    for name, value in fields.items():
        if isinstance(value, list):
            fields[name] = tuple(value)
    return cls(**fields)
