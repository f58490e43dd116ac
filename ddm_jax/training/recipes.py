"""Training recipes: the data, architecture and schedule that make a trained model, by name.

    ddm-jax train runs/r --recipe realistic        # or: workflow.train_recipe("realistic", "runs/r")
    ddm-jax demo                                   # the same recipe, cached, then `evaluate`

| recipe | data | budget | for |
|---|---|---|---|
| `realistic` | `ddm_jax.realistic` (templates, photoionisation grids, dust, survey noise) | 5 min | the demo |
| `realistic-hour` | the same, 4x the library | 1 hour | the longer run of docs/demo.md |
| `formula` | `ddm_jax.synthetic` (formula continua, the earlier demo) | 5 min | comparison |
| `tiny` | realistic, tiny networks | seconds | tests |

Budget: the step counts are planned from the budget with the recipe's nominal speeds (a 2-core
CPU) and `train`'s `max_seconds` caps each network's share, so a slower machine stops early
(checkpointed; the same command continues) instead of overrunning.

The exported checkpoint says what it expects (`expects`: no fibre mass, the grid, the data it was
trained on) and carries a trust calibration made on held-out spectra of the same distribution
(docs/trust.md).
"""

from __future__ import annotations

import dataclasses

from ddm_jax.config import OptimizerConfig, TrainConfig
from ddm_jax.constants import SNR_MIN
from ddm_jax.errors import InputError
from ddm_jax.schema import MASS_NONE

DDM_OPTIMIZER = OptimizerConfig(learning_rate=2e-3, warmup_steps=20)
LONG_DDM_OPTIMIZER = OptimizerConfig(learning_rate=2e-3, warmup_steps=100)
LONG_REGRESSOR_OPTIMIZER = OptimizerConfig(learning_rate=5e-4, warmup_steps=50)
REGRESSOR_OPTIMIZER = OptimizerConfig(learning_rate=5e-4, warmup_steps=10)
TINY_OPTIMIZER = OptimizerConfig(learning_rate=3e-3, warmup_steps=2)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Everything that fixes a trained model: data, architecture, schedule and budget."""

    data: str = "realistic"  # "realistic" (ddm_jax.realistic) or "formula" (ddm_jax.synthetic)
    preset: str = "released"  # architecture (config.PRESETS)
    budget_seconds: float = 300.0
    library_seed: int = 0
    library_size: int = 2048  # SF and AGN spectra each, for training
    held_out_size: int = 256  # SF and AGN spectra each, never trained on; also the number of composites
    composite_seed: int = 1
    seyfert_fraction: float = 0.5  # realistic AGN: Seyferts, the rest LINERs
    snr: float = 30.0  # formula data only
    spread: float = 0.25  # formula data only: near-homogeneous classes (docs/model.md#training)
    ddm_batch: int = 32
    regressor_batch: int = 32
    # Spectrum losses are ~10x the probability losses at the start; the fractions are the target
    # (on realistic data, weights 10 and a peak rate of 2e-3 gave an SF-fraction MAE of 0.109 against
    # 0.115 with 10 and 1e-3, and 0.123 with 4 and 1e-3, in the same 5-minute budget: development runs,
    # on the generator before its dust and rebin fixes, not recorded).
    loss_weights: tuple[float, ...] = (1.0, 1.0, 10.0, 10.0, 1.0)
    ddm_optimizer: OptimizerConfig = DDM_OPTIMIZER
    regressor_optimizer: OptimizerConfig = REGRESSOR_OPTIMIZER
    # The last steps without dropout: they remove the SF fraction's bias (TrainConfig.dropout_free_steps).
    dropout_free_fraction: float = 0.15
    ddm_share: float = 0.75  # of the training time; the regressor costs ~2x the DDM per sample
    # Nominal speeds on a 2-core CPU, to plan the steps (measured idle at batch 32: 3.0 and 1.6 steps/s
    # on an AVX2 AMD EPYC, 6.6 and 3.4 on an AVX-512/AMX Xeon): the slower machine fits the budget.
    ddm_steps_per_second: float = 3.2
    regressor_steps_per_second: float = 1.9
    startup_seconds: float = 25.0  # per network: initial params and compiling its two train steps
    overhead_seconds: float = 45.0  # generating the library, calibration, evaluation, figures

    def plan(self, budget_seconds: float | None = None) -> dict[str, tuple[TrainConfig, float]]:
        """{network: (TrainConfig, max_seconds)}: the budget less the overhead and start-ups is
        split by `ddm_share`, and steps planned at the nominal speeds."""
        budget_seconds = self.budget_seconds if budget_seconds is None else budget_seconds
        training = budget_seconds - self.overhead_seconds - 2 * self.startup_seconds
        if training <= 0:
            raise InputError(f"a budget of {budget_seconds:g} s leaves no time to train: this recipe needs more than "
                             f"{self.overhead_seconds + 2 * self.startup_seconds:g} s for data, compilation and "
                             "evaluation")
        shares = (self.ddm_share * training, (1 - self.ddm_share) * training)
        common = {"seed": self.library_seed, "checkpoint_every": 50, "log_every": 5, "keep_checkpoints": 1}
        ddm_steps = max(1, round(shares[0] * self.ddm_steps_per_second))
        regressor_steps = max(1, round(shares[1] * self.regressor_steps_per_second))
        ddm = TrainConfig(steps=ddm_steps, batch_size=self.ddm_batch, optimizer=self.ddm_optimizer,
                          loss_weights=self.loss_weights,
                          dropout_free_steps=round(self.dropout_free_fraction * ddm_steps), **common)
        regressor = TrainConfig(steps=regressor_steps, batch_size=self.regressor_batch,
                                optimizer=self.regressor_optimizer,
                                dropout_free_steps=round(self.dropout_free_fraction * regressor_steps), **common)
        return {"ddm": (ddm, self.startup_seconds + shares[0]),
                "regressor": (regressor, self.startup_seconds + shares[1])}


RECIPES = {
    "realistic": Recipe(),
    # About an hour on 2 cores: 4x the library, batches of 64, ~21x the demo's DDM samples.
    "realistic-hour": Recipe(budget_seconds=3600.0, library_size=8192, ddm_batch=64, regressor_batch=64,
                             ddm_optimizer=LONG_DDM_OPTIMIZER, regressor_optimizer=LONG_REGRESSOR_OPTIMIZER,
                             ddm_steps_per_second=2.0, regressor_steps_per_second=1.0, overhead_seconds=120.0),
    "formula": Recipe(data="formula", library_size=512, loss_weights=(1.0, 1.0, 4.0, 4.0, 1.0),
                      ddm_optimizer=OptimizerConfig(learning_rate=1e-3, warmup_steps=20),
                      ddm_steps_per_second=2.5, regressor_steps_per_second=1.4, overhead_seconds=30.0),
    # The tiny networks, for tests: the whole pipeline in seconds (not a real decomposition).
    "tiny": Recipe(preset="tiny", budget_seconds=300.0, library_size=64, held_out_size=16, ddm_batch=8,
                   regressor_batch=8, ddm_optimizer=TINY_OPTIMIZER, regressor_optimizer=TINY_OPTIMIZER,
                   ddm_steps_per_second=1.0, regressor_steps_per_second=1.0, startup_seconds=120.0,
                   overhead_seconds=0.0),
}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise InputError(f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}")
    return RECIPES[name]


def expects(recipe: Recipe) -> dict:
    """What a model trained by `recipe` expects of its inputs (checkpoint metadata)."""
    described = {"realistic": "ddm_jax.training.realistic: BC03 populations, NebulaBayes HII/NLR line grids, dust, "
                              "survey-like noise (docs/realistic.md)",
                 "formula": "ddm_jax.training.synthetic: formula continua and line ratios"}
    return {"needs_mass": False, "mass_convention": MASS_NONE, "grid": "rest-frame vacuum, 3700 + 2 i A, 2208 bins",
            "normalisation": "(x - median) / std over 4000 < lambda <= 7000 A, mass 1",
            "trained_on": described[recipe.data], "line_snr_min": SNR_MIN}
