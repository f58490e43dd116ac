"""The committed Keras-written tiny fixture: converts and reproduces the Keras outputs stored with it.

These run without TensorFlow; the last test (with TensorFlow) checks the stored outputs are Keras's.
"""

import numpy as np

from conftest import TINY_DDM_KERAS, TINY_KERAS_OUTPUTS, TINY_REGRESSOR_KERAS, assert_parity, keras_reference
from ddm_jax.config import DDMConfig
from ddm_jax.model.models import DDM, LineRatioRegressor
from ddm_jax_convert import convert_files

N_BINS = DDMConfig().n_bins


def split_ddm_outputs(stacked):
    return [stacked[:, :N_BINS], stacked[:, N_BINS:2 * N_BINS]] + [stacked[:, 2 * N_BINS + i] for i in range(3)]


def test_fixture_converts_and_matches_stored_keras_outputs():
    stored = np.load(TINY_KERAS_OUTPUTS)
    ddm, regressor = convert_files([str(TINY_REGRESSOR_KERAS), str(TINY_DDM_KERAS)])  # any order
    assert (ddm.preset, regressor.preset) == ("tiny", "tiny")
    ours = DDM(ddm.config).apply({"params": ddm.params}, stored["inputs"])
    for i, (got, ref) in enumerate(zip(ours, split_ddm_outputs(stored["ddm"]))):
        assert_parity(got, ref, f"fixture DDM output {i}")
    ratios = LineRatioRegressor(regressor.config).apply({"params": regressor.params}, stored["inputs"])
    assert_parity(ratios, stored["regressor"], "fixture regressor")


def test_stored_outputs_are_what_keras_computes_from_the_fixture():
    keras_model = keras_reference()
    from ddm_jax.config import RegressorConfig

    stored = np.load(TINY_KERAS_OUTPUTS)
    model = keras_model.build_ddm(DDMConfig.tiny())
    model.load_weights(TINY_DDM_KERAS)
    for i, (got, ref) in enumerate(zip(keras_model.predict(model, stored["inputs"]), split_ddm_outputs(stored["ddm"]))):
        assert_parity(got.reshape(ref.shape), ref, f"Keras on fixture, DDM output {i}")
    regressor = keras_model.build_regressor(RegressorConfig.tiny())
    regressor.load_weights(TINY_REGRESSOR_KERAS)
    assert_parity(keras_model.predict(regressor, stored["inputs"])[0], stored["regressor"], "Keras regressor")
