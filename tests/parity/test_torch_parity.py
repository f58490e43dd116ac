"""A state_dict of the PyTorch port converts and reproduces the port's outputs."""

import pytest

from conftest import assert_parity, keras_reference, random_spectra, torch_reference
from ddm_jax.config import DDMConfig, RegressorConfig
from ddm_jax.model.models import DDM, LineRatioRegressor
from ddm_jax_convert import convert_file

DDM_OUTPUTS = ("sf_spectrum", "agn_spectrum", "p_sf", "p_agn", "p_total")


def saved_port(tmp_path, network, config, seed):
    torch_port = torch_reference()
    import torch

    torch.manual_seed(seed)  # PyTorch's default init gives non-zero biases
    module = (torch_port.TorchDDM if network == "ddm" else torch_port.TorchRegressor)(config).eval()
    path = tmp_path / f"{network}.pt"
    torch.save(module.state_dict(), path)
    return module, path


def run_port(module, spectra):
    import torch

    with torch.no_grad():
        out = module(torch.from_numpy(spectra))
    return [o.numpy() for o in out] if isinstance(out, tuple) else out.numpy()


@pytest.mark.parametrize("preset, config", [
    ("tiny", DDMConfig.tiny()), pytest.param("released", DDMConfig(), marks=pytest.mark.slow)])
def test_ddm_state_dict_matches_port(tmp_path, preset, config):
    module, path = saved_port(tmp_path, "ddm", config, seed=1)
    converted = convert_file(str(path))
    assert (converted.network, converted.preset, converted.source["format"]) == ("ddm", preset, "pytorch-state-dict")
    spectra = random_spectra(4, seed=3)
    ours = DDM(converted.config).apply({"params": converted.params}, spectra)
    for name, got, ref in zip(DDM_OUTPUTS, ours, run_port(module, spectra)):
        assert_parity(got, ref, f"{preset} DDM {name}")


@pytest.mark.parametrize("preset, config", [
    ("tiny", RegressorConfig.tiny()), pytest.param("released", RegressorConfig(), marks=pytest.mark.slow)])
def test_regressor_state_dict_matches_port(tmp_path, preset, config):
    module, path = saved_port(tmp_path, "regressor", config, seed=2)
    converted = convert_file(str(path))
    assert (converted.network, converted.preset) == ("regressor", preset)
    spectra = random_spectra(4, seed=4) - 5.0
    ours = LineRatioRegressor(converted.config).apply({"params": converted.params}, spectra)
    assert_parity(ours, run_port(module, spectra), f"{preset} regressor")


def test_port_has_keras_semantics(tmp_path):
    """The port itself matches real Keras once given the same weights (via the converter's params)."""
    keras_model = keras_reference()
    torch_port = torch_reference()

    config = DDMConfig.tiny()
    model = keras_model.build_ddm(config)
    keras_model.randomize_weights(model, seed=5)
    model.save_weights(tmp_path / "ddm.hdf5")
    params = convert_file(str(tmp_path / "ddm.hdf5")).params
    module = torch_port.load_flax_params(torch_port.TorchDDM(config), params).eval()
    spectra = random_spectra(3, seed=6)
    for name, got, ref in zip(DDM_OUTPUTS, run_port(module, spectra), keras_model.predict(model, spectra)):
        assert_parity(got, ref.reshape(got.shape), f"port vs Keras {name}")
