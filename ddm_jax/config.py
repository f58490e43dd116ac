"""Architecture and training as data: frozen configs.

`DDMConfig` and `RegressorConfig` default to the released networks (docs/model.md#the-ddm,
#the-line-ratio-regressor); `tiny()` keeps the same topology (layer count, kernels, strides,
2208-bin input and output) with few channels and units, for fast tests and the bundled
example. `OptimizerConfig` and `TrainConfig` describe one training run of one network.
"""

from __future__ import annotations

import dataclasses
import math

from ddm_jax.constants import N_BINS
from ddm_jax.errors import InputError


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


class _ConvNetwork:
    """What both networks' configs derive from their conv stack (`n_bins`, `convs`)."""

    @property
    def flat_features(self) -> int:
        """Features after the conv stack's Flatten."""
        return conv_lengths(self.n_bins, self.convs)[-1] * self.convs[-1].features


@dataclasses.dataclass(frozen=True)
class DDMConfig(_ConvNetwork):
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
    def tiny(cls) -> DDMConfig:
        return cls(
            convs=tuple(dataclasses.replace(c, features=4 + 2 * i) for i, c in enumerate(cls.convs)),
            trunk_units=(24, 16, 20),
            branch_units=12,
            head_units=(6, 3),
        )


@dataclasses.dataclass(frozen=True)
class RegressorConfig(_ConvNetwork):
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
    def tiny(cls) -> RegressorConfig:
        return cls(
            convs=tuple(dataclasses.replace(c, features=3 + i) for i, c in enumerate(cls.convs)),
            dense_units=(16, 12),
        )


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """An optax optimiser and learning-rate schedule (decaying over the run's steps)."""

    name: str = "adam"  # adam | adamw | rmsprop | sgd
    learning_rate: float = 1e-3  # peak value of the schedule
    schedule: str = "warmup_cosine"  # constant | cosine | warmup_cosine
    warmup_steps: int = 50
    end_fraction: float = 0.05  # final / peak learning rate for the cosine schedules
    weight_decay: float = 0.0  # adamw only
    rmsprop_decay: float = 0.9
    momentum: float = 0.0  # rmsprop and sgd
    eps: float = 1e-8
    grad_clip_norm: float = 1.0  # 0 disables clipping


# Upstream compiled the regressor with Keras RMSprop(2e-4, rho .9, momentum .005, eps 1e-7).
UPSTREAM_REGRESSOR_OPTIMIZER = OptimizerConfig(name="rmsprop", learning_rate=2e-4, schedule="constant",
                                               warmup_steps=0, momentum=0.005, eps=1e-7, grad_clip_norm=0.0)
NETWORKS = ("ddm", "regressor")
DEFAULT_OPTIMIZERS = {"ddm": OptimizerConfig(), "regressor": UPSTREAM_REGRESSOR_OPTIMIZER}
DDM_LOSS_NAMES = ("sf_spectrum", "agn_spectrum", "p_sf", "p_agn", "p_total")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run of one network (docs/model.md#training).

    `optimizer` None takes the network's default (`DEFAULT_OPTIMIZERS`). `loss_weights` (in
    `DDM_LOSS_NAMES` order; upstream: all 1) and `total_prob_target` concern the DDM only.
    """

    steps: int = 2000
    batch_size: int = 64
    seed: int = 0
    optimizer: OptimizerConfig | None = None
    loss_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0)
    total_prob_target: float = 1.0  # Tot_Prob -> 1 ("TO_ONE"), upstream's default
    mass_range: tuple[float, float] = (1.0, 1.0)  # composite masses ~ U(low, high)
    # The last N steps are taken with dropout off. Inference runs without dropout, and a network
    # trained briefly with it drifts in its outputs: in the demo this phase took the held-out
    # SF-fraction bias from about -0.05 to 0.00 (MAE 0.062 -> 0.036 after 60 steps).
    dropout_free_steps: int = 0
    checkpoint_every: int = 100
    log_every: int = 10
    keep_checkpoints: int = 2

    def optimizer_for(self, network: str) -> OptimizerConfig:
        return self.optimizer or DEFAULT_OPTIMIZERS[network]

    def validate(self, n_devices: int) -> None:
        """A DDMError naming the first setting that cannot work."""
        if self.steps < 1 or self.batch_size < 1:
            raise InputError(f"steps and batch_size must be positive (got {self.steps}, {self.batch_size})")
        if self.batch_size % n_devices:
            raise InputError(f"batch_size {self.batch_size} must be a multiple of the {n_devices} devices")
        if len(self.loss_weights) != len(DDM_LOSS_NAMES):
            raise InputError(f"loss_weights needs {len(DDM_LOSS_NAMES)} values {DDM_LOSS_NAMES}")
        low, high = self.mass_range
        if not 0 < low <= high:
            raise InputError(f"mass_range must satisfy 0 < low <= high (got {self.mass_range})")
        if self.checkpoint_every < 1 or self.log_every < 1:
            raise InputError("checkpoint_every and log_every must be positive")
        if not 0 <= self.dropout_free_steps <= self.steps:
            raise InputError(f"dropout_free_steps must be between 0 and steps ({self.steps}), "
                             f"got {self.dropout_free_steps}")


PRESETS = {"released": (DDMConfig(), RegressorConfig()), "tiny": (DDMConfig.tiny(), RegressorConfig.tiny())}


def config_to_dict(config) -> dict:
    return dataclasses.asdict(config)


def config_from_dict(cls, data: dict):
    """Inverse of `config_to_dict` for any config here: nested configs rebuilt, JSON lists back to
    tuples; an unknown key is a DDMError naming it."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise InputError(f"unknown {cls.__name__} settings {sorted(unknown)}; known: {sorted(fields)}")
    values = {}
    for name, value in data.items():
        if name == "convs":
            value = tuple(ConvSpec(**c) for c in value)
        elif isinstance(value, dict):
            value = config_from_dict(OptimizerConfig, value)
        elif isinstance(value, list):
            value = tuple(value)
        values[name] = value
    return cls(**values)
