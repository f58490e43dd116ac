"""Shared test helpers: the parity tolerance, optional reference frameworks, fixture paths."""

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "ddm_jax" / "data"
TINY_DDM_KERAS = DATA / "tiny_ddm_keras.hdf5"
TINY_REGRESSOR_KERAS = DATA / "tiny_regressor_keras.hdf5"
TINY_KERAS_OUTPUTS = ROOT / "tests" / "fixtures" / "tiny_keras_outputs.npz"

# Tests (and the CLI processes they start) keep out of the user's ~/.cache; a test of the
# compilation cache names its own folder.
os.environ["DDM_JAX_COMPILATION_CACHE"] = "off"

# Parity with a reference framework: max |diff| <= PARITY_RTOL * max |reference| (README, Parity).
PARITY_RTOL = 1e-4


def assert_parity(actual, reference, what: str) -> None:
    actual, reference = np.asarray(actual, np.float64), np.asarray(reference, np.float64)
    assert actual.shape == reference.shape, f"{what}: shape {actual.shape} vs reference {reference.shape}"
    scale = np.abs(reference).max()
    assert scale > 0, f"{what}: the reference is all zeros, the comparison would prove nothing"
    diff = np.abs(actual - reference).max()
    assert diff <= PARITY_RTOL * scale, f"{what}: max |diff| {diff:.3g} > {PARITY_RTOL} x {scale:.3g}"


def keras_reference():
    """The Keras reference module; skips (saying why) where TensorFlow/tf_keras is not installed."""
    pytest.importorskip("tf_keras", reason="Keras parity needs the test extra: pip install -e '.[test]'")
    from ddm_jax.reference import keras_model

    return keras_model


def torch_reference():
    """The PyTorch port; skips (saying why) where torch is not installed."""
    pytest.importorskip("torch", reason="PyTorch parity needs the test extra: pip install -e '.[test]'")
    from ddm_jax.reference import torch_port

    return torch_port


def random_spectra(count: int, seed: int, n_bins: int = 2208) -> np.ndarray:
    """Positive, line-free-ish spectra with structure on all scales (fixed seed)."""
    rng = np.random.default_rng(seed)
    wave = np.linspace(0.0, 1.0, n_bins)
    slope = rng.uniform(-1.0, 1.0, (count, 1))
    return (5.0 + slope * wave + 0.3 * rng.normal(size=(count, n_bins))).astype(np.float32)
