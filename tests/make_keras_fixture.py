"""Regenerate the committed tiny Keras fixture and the Keras outputs it must reproduce.

    python tests/make_keras_fixture.py

Writes ddm_jax/data/tiny_{ddm,regressor}_keras.hdf5 (real tf_keras `save_weights` files of
the tiny configuration, random weights) and tests/fixtures/tiny_keras_outputs.npz (Keras
`predict` on fixed-seed inputs), so the converter is tested where TensorFlow is absent.
"""

from pathlib import Path

import numpy as np

from ddm_jax.config import DDMConfig, RegressorConfig
from ddm_jax.reference import keras_model

ROOT = Path(__file__).resolve().parent.parent
DDM_FILE = ROOT / "ddm_jax" / "data" / "tiny_ddm_keras.hdf5"
REGRESSOR_FILE = ROOT / "ddm_jax" / "data" / "tiny_regressor_keras.hdf5"
OUTPUTS_FILE = ROOT / "tests" / "fixtures" / "tiny_keras_outputs.npz"
DDM_SEED, REGRESSOR_SEED, INPUT_SEED = 11, 12, 13


def fixture_inputs(count: int = 6) -> np.ndarray:
    return np.random.default_rng(INPUT_SEED).normal(size=(count, DDMConfig().n_bins)).astype(np.float32)


def main() -> None:
    ddm = keras_model.build_ddm(DDMConfig.tiny())
    keras_model.randomize_weights(ddm, DDM_SEED)
    regressor = keras_model.build_regressor(RegressorConfig.tiny())
    keras_model.randomize_weights(regressor, REGRESSOR_SEED)
    ddm.save_weights(DDM_FILE)
    regressor.save_weights(REGRESSOR_FILE)
    inputs = fixture_inputs()
    outputs = keras_model.predict(ddm, inputs)
    np.savez(OUTPUTS_FILE, inputs=inputs, ddm=np.concatenate(outputs, axis=1),
             regressor=keras_model.predict(regressor, inputs)[0])
    print(f"wrote {DDM_FILE}, {REGRESSOR_FILE}, {OUTPUTS_FILE}")


if __name__ == "__main__":
    main()
