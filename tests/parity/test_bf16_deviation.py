"""Opt-in bfloat16 compute (`DDM(..., dtype=jnp.bfloat16)`): float32 outputs within a documented tolerance.

Tolerances (benchmarks/README.md): with bfloat16's 8-bit mantissa, spectra and line ratios stay
within BF16_SPECTRA_RTOL of the float32 result's largest magnitude, and SF fractions within
BF16_FRACTION_ATOL (absolute), on random-weight networks.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import random_spectra
from ddm_jax.config import DDMConfig, RegressorConfig
from ddm_jax.model.forward import decompose_batch
from ddm_jax.model.models import COMPUTE_DTYPES, DDM, LineRatioRegressor, init_params

BF16_SPECTRA_RTOL = 5e-2
BF16_FRACTION_ATOL = 5e-2
CONFIGS = {"tiny": (DDMConfig.tiny(), RegressorConfig.tiny()), "released": (DDMConfig(), RegressorConfig())}


def max_rel(actual, reference) -> float:
    actual, reference = np.asarray(actual, np.float64), np.asarray(reference, np.float64)
    return float(np.abs(actual - reference).max() / np.abs(reference).max())


@pytest.mark.parametrize("preset", ["tiny", pytest.param("released", marks=pytest.mark.slow)])
def test_bf16_pipeline_stays_close_to_float32(preset):
    ddm_config, regressor_config = CONFIGS[preset]
    ddm_params = init_params(DDM(ddm_config), seed=1)
    regressor_params = init_params(LineRatioRegressor(regressor_config), seed=2)
    spectra = random_spectra(6, seed=3)
    mass = np.linspace(0.5, 2.0, 6, dtype=np.float32)
    results = {}
    for precision in ("float32", "bf16"):
        dtype = COMPUTE_DTYPES[precision]
        results[precision] = decompose_batch(ddm_params, regressor_params, spectra, mass,
                                             ddm=DDM(ddm_config, dtype=dtype),
                                             regressor=LineRatioRegressor(regressor_config, dtype=dtype))
    ref, low = results["float32"], results["bf16"]
    for key in ("sf_spectrum", "agn_spectrum", "p_sf", "p_agn", "p_total", "residual", "line_ratios"):
        assert low[key].dtype == jnp.float32, key
        assert max_rel(low[key], ref[key]) <= BF16_SPECTRA_RTOL, key
        assert max_rel(low[key], ref[key]) > 0, f"{key}: bf16 mode computed in float32"
    assert np.abs(np.asarray(low["sf_fraction"]) - np.asarray(ref["sf_fraction"])).max() <= BF16_FRACTION_ATOL


def test_float32_is_the_default_and_params_stay_float32():
    model = DDM(DDMConfig.tiny())
    assert model.dtype is None and COMPUTE_DTYPES["float32"] is None
    params = init_params(DDM(DDMConfig.tiny(), dtype=jnp.bfloat16), seed=0)
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    out = model.apply({"params": params}, random_spectra(2, seed=1))
    assert all(o.dtype == jnp.float32 for o in out)


def test_decompose_precision_option(tmp_path):
    from conftest import TINY_DDM_KERAS, TINY_REGRESSOR_KERAS
    from ddm_jax.cli import main

    assert main(["convert", str(TINY_DDM_KERAS), str(TINY_REGRESSOR_KERAS), "-o", str(tmp_path / "ckpt")]) == 0
    np.save(tmp_path / "s.npy", random_spectra(4, seed=5))
    np.save(tmp_path / "m.npy", np.ones(4))
    for precision in ("float32", "bf16"):
        assert main(["decompose", str(tmp_path / "s.npy"), "--mass", str(tmp_path / "m.npy"), "--weights",
                     str(tmp_path / "ckpt"), "--precision", precision, "-o", str(tmp_path / f"{precision}.npz")]) == 0
    with np.load(tmp_path / "float32.npz") as f32, np.load(tmp_path / "bf16.npz") as bf16:
        assert bf16["sf_spectrum"].dtype == np.float32
        assert not np.array_equal(f32["sf_spectrum"], bf16["sf_spectrum"])  # bf16 really ran
        assert max_rel(bf16["sf_spectrum"], f32["sf_spectrum"]) <= BF16_SPECTRA_RTOL
