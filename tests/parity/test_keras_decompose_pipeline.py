"""The whole decompose pipeline against the formulas of docs/model.md in NumPy on top of real Keras outputs."""

import numpy as np
import pytest

from conftest import assert_parity, keras_reference, random_spectra
from ddm_jax.config import DDMConfig, RegressorConfig
from ddm_jax.inference.decomposer import Decomposer
from ddm_jax.schema import OUTPUT_KEYS, TRUST_KEYS
from ddm_jax_convert import convert_files

WAVE = 3700.0 + 2.0 * np.arange(2208)
WINDOW = (WAVE > 4000) & (WAVE <= 7000)


def numpy_bpt_standard(x, y):
    """The standard [NII] scheme (docs/model.md#bpt-classification), written independently of ddm_jax.model.bpt."""
    out = np.full(x.shape, -1, np.int8)
    ok = np.isfinite(x) & np.isfinite(y)
    with np.errstate(divide="ignore", invalid="ignore"):
        sf = ok & (x < 0.05) & (y < 0.61 / (x - 0.05) + 1.3)
        comp = ok & ~sf & (x < 0.47) & (y < 0.61 / (x - 0.47) + 1.19)
    agn = ok & ~sf & ~comp
    out[sf], out[comp] = 0, 1
    out[agn & (y > 1.05 * x + 0.45)] = 2
    out[agn & (y <= 1.05 * x + 0.45)] = 3
    return out


def numpy_pipeline(keras_model, keras_ddm, keras_regressor, flux, mass):
    flux = flux.astype(np.float64)
    window = flux[:, WINDOW]
    x = (flux - np.median(window, 1, keepdims=True)) / window.std(1, keepdims=True) / mass[:, None]
    sf, agn, p_sf, p_agn, p_total = [o.astype(np.float64) for o in keras_model.predict(keras_ddm, x)]
    p_sf, p_agn, p_total = p_sf[:, 0], p_agn[:, 0], p_total[:, 0]
    fraction = np.clip(p_sf, 0.0, 1.0)
    residual = fraction[:, None] * sf + (1 - fraction[:, None]) * agn - x
    parts = np.stack([x, sf, agn], axis=1)
    centred = parts - np.median(parts[..., WINDOW], axis=-1, keepdims=True)
    ratios = keras_model.predict(keras_regressor, centred.reshape(-1, 2208))[0].reshape(len(flux), 3, -1)
    return {"sf_spectrum": sf, "agn_spectrum": agn, "p_sf": p_sf, "p_agn": p_agn, "p_total": p_total,
            "sf_fraction": fraction, "residual": residual, "line_ratios": ratios,
            "bpt_class": numpy_bpt_standard(ratios[..., 0], ratios[..., 1])}


def spread_sf_prob(keras_model, keras_ddm, flux, mass):
    """Rescale the SF_Prob layer so p_sf spreads over about -0.5..1.5: clipping is exercised both ways."""
    window = flux[:, WINDOW]
    x = (flux - np.median(window, 1, keepdims=True)) / window.std(1, keepdims=True) / mass[:, None]
    p_sf = keras_model.predict(keras_ddm, x)[2][:, 0]
    layer = keras_ddm.get_layer("SF_Prob")
    kernel, bias = layer.get_weights()
    scale = 1.0 / p_sf.std()
    layer.set_weights([kernel * scale, (bias - p_sf.mean()) * scale + 0.5])


@pytest.mark.parametrize("preset", ["tiny", pytest.param("released", marks=pytest.mark.slow)])
def test_decompose_matches_numpy_and_keras(tmp_path, preset):
    keras_model = keras_reference()
    ddm_config, regressor_config = (DDMConfig.tiny(), RegressorConfig.tiny()) if preset == "tiny" else \
        (DDMConfig(), RegressorConfig())
    keras_ddm = keras_model.build_ddm(ddm_config)
    keras_model.randomize_weights(keras_ddm, seed=21)
    keras_regressor = keras_model.build_regressor(regressor_config)
    keras_model.randomize_weights(keras_regressor, seed=22)
    flux = random_spectra(10, seed=23) * 1e-17  # erg/s/cm2/A-like magnitudes
    mass = np.linspace(0.8, 1.6, 10)
    spread_sf_prob(keras_model, keras_ddm, flux, mass)
    keras_ddm.save_weights(tmp_path / "ddm.hdf5")
    keras_regressor.save_weights(tmp_path / "regressor.hdf5")
    ddm, regressor = convert_files([str(tmp_path / "ddm.hdf5"), str(tmp_path / "regressor.hdf5")])
    decomposer = Decomposer(ddm.params, regressor.params, ddm.config, regressor.config, batch_size=4)
    ours = decomposer(flux, mass)  # three batches, the last one padded
    reference = numpy_pipeline(keras_model, keras_ddm, keras_regressor, flux, mass)
    assert list(ours) == list(OUTPUT_KEYS + TRUST_KEYS)
    assert 0 < np.mean(reference["sf_fraction"] == 0) < 1 and 0 < np.mean(reference["sf_fraction"] == 1) < 1
    for key in OUTPUT_KEYS[:-1]:
        assert ours[key].dtype == np.float32
        assert_parity(ours[key], reference[key], f"{preset} {key}")
    assert ours["bpt_class"].dtype == np.int8
    np.testing.assert_array_equal(ours["bpt_class"], reference["bpt_class"])
