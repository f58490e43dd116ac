"""Converted weights reproduce real Keras (tf_keras, Keras 2 semantics) output for output."""

import h5py
import pytest

from conftest import assert_parity, keras_reference, random_spectra
from ddm_jax.config import DDMConfig, RegressorConfig
from ddm_jax.model.models import DDM, LineRatioRegressor
from ddm_jax_convert import convert_file

DDM_OUTPUTS = ("sf_spectrum", "agn_spectrum", "p_sf", "p_agn", "p_total")
CONFIGS = {"released": (DDMConfig(), RegressorConfig()), "tiny": (DDMConfig.tiny(), RegressorConfig.tiny())}


def keras_ddm_file(tmp_path, config, seed, agn_branch_first=True, full_model=False):
    keras_model = keras_reference()
    model = keras_model.build_ddm(config, agn_branch_first=agn_branch_first)
    keras_model.randomize_weights(model, seed)
    path = tmp_path / ("ddm_model.h5" if full_model else "ddm_weights.hdf5")
    model.save(path) if full_model else model.save_weights(path)
    return model, path


def assert_ddm_parity(model, path, preset, spectra):
    keras_model = keras_reference()
    converted = convert_file(str(path))
    assert (converted.network, converted.preset) == ("ddm", preset)
    ours = DDM(converted.config).apply({"params": converted.params}, spectra)
    for name, got, ref in zip(DDM_OUTPUTS, ours, keras_model.predict(model, spectra)):
        assert_parity(got, ref.reshape(got.shape), f"{preset} DDM {name}")


@pytest.mark.parametrize("preset", ["tiny", pytest.param("released", marks=pytest.mark.slow)])
def test_ddm_matches_keras(tmp_path, preset):
    model, path = keras_ddm_file(tmp_path, CONFIGS[preset][0], seed=1)
    assert_ddm_parity(model, path, preset, random_spectra(5, seed=7))


@pytest.mark.parametrize("preset", ["tiny", pytest.param("released", marks=pytest.mark.slow)])
def test_regressor_matches_keras(tmp_path, preset):
    keras_model = keras_reference()
    model = keras_model.build_regressor(CONFIGS[preset][1])
    keras_model.randomize_weights(model, seed=2)
    path = tmp_path / "regressor.hdf5"
    model.save_weights(path)
    converted = convert_file(str(path))
    assert (converted.network, converted.preset) == ("regressor", preset)
    spectra = random_spectra(5, seed=8) - 5.0
    ours = LineRatioRegressor(converted.config).apply({"params": converted.params}, spectra)
    assert_parity(ours, keras_model.predict(model, spectra)[0], f"{preset} regressor")


def test_layer_creation_order_and_names_do_not_matter(tmp_path):
    """Built SF-first, after other models (so every auto-name shifts): the same mapping holds."""
    keras_model = keras_reference()
    keras_model.build_regressor(RegressorConfig.tiny())  # shifts the auto-generated layer names
    model, path = keras_ddm_file(tmp_path, DDMConfig.tiny(), seed=3, agn_branch_first=False)
    assert_ddm_parity(model, path, "tiny", random_spectra(3, seed=9))


def test_model_save_h5_layout(tmp_path):
    """`model.save(...h5)` keeps the weights under a `model_weights` group."""
    model, path = keras_ddm_file(tmp_path, DDMConfig.tiny(), seed=4, full_model=True)
    with h5py.File(path) as f:
        assert "model_weights" in f and "layer_names" not in f.attrs
    assert convert_file(str(path)).source["format"] == "keras-hdf5 (model.save)"
    assert_ddm_parity(model, path, "tiny", random_spectra(3, seed=10))


def test_long_layer_name_list_split_over_attributes(tmp_path):
    """Keras splits a long `layer_names` attribute into layer_names0, layer_names1, ...; read them all."""
    model, path = keras_ddm_file(tmp_path, DDMConfig.tiny(), seed=5)
    with h5py.File(path, "r+") as f:
        names = list(f.attrs["layer_names"])
        del f.attrs["layer_names"]
        half = len(names) // 2
        f.attrs["layer_names0"], f.attrs["layer_names1"] = names[:half], names[half:]
    assert_ddm_parity(model, path, "tiny", random_spectra(2, seed=11))


def test_branch_swap_would_be_caught(tmp_path):
    """The SF and AGN branches have identical shapes: a swapped mapping must fail the parity check."""
    keras_model = keras_reference()
    model, path = keras_ddm_file(tmp_path, DDMConfig.tiny(), seed=6)
    converted = convert_file(str(path))
    params = dict(converted.params)
    params["sf_dense"], params["agn_dense"] = params["agn_dense"], params["sf_dense"]
    spectra = random_spectra(3, seed=12)
    swapped = DDM(converted.config).apply({"params": params}, spectra)
    with pytest.raises(AssertionError):
        assert_parity(swapped.sf_spectrum, keras_model.predict(model, spectra)[0], "swapped")
