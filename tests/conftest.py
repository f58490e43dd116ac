"""Shared test helpers: the parity tolerance, optional reference frameworks, fixture paths."""

import importlib.util
import os
from pathlib import Path

import chex
import numpy as np
import pytest

from ddm_jax.runtime import disable_cpu_concurrent_scheduler

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "ddm_jax" / "data"
TINY_DDM_KERAS = DATA / "tiny_ddm_keras.hdf5"
TINY_REGRESSOR_KERAS = DATA / "tiny_regressor_keras.hdf5"
TINY_KERAS_OUTPUTS = ROOT / "tests" / "fixtures" / "tiny_keras_outputs.npz"
TOOLS = ROOT / "tools"  # the rebuild scripts of the bundled data (not part of the wheel)
# The trust tests' session-wide fixtures (networks, library, calibration, spectra), used by several rooms.
pytest_plugins = ["trust_fixtures"]


def load_tool(name: str):
    """A script of tools/ as a module (they are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

# Tests (and the CLI processes they start) keep out of the user's ~/.cache; a test of the
# compilation cache names its own folder.
os.environ["DDM_JAX_COMPILATION_CACHE"] = "off"
# One process runs every test: the XLA setting prepare's fits need goes in before any JAX work,
# as ddm_jax.runtime tells library users to do.
disable_cpu_concurrent_scheduler()

# Parity with a reference framework: max |diff| <= PARITY_RTOL * max |reference| (docs/parity.md).
PARITY_RTOL = 1e-4


def assert_parity(actual, reference, what: str) -> None:
    """The parity bound, checked by chex element by element: every |diff| <= atol = PARITY_RTOL * max
    |reference| (rtol 0) is max |diff| <= PARITY_RTOL * max |reference|, no weaker and no stronger."""
    actual, reference = np.asarray(actual, np.float64), np.asarray(reference, np.float64)
    chex.assert_shape(actual, reference.shape, custom_message=f"{what}: not the reference's shape")
    scale = np.abs(reference).max()
    assert scale > 0, f"{what}: the reference is all zeros, the comparison would prove nothing"
    chex.assert_trees_all_close(actual, reference, rtol=0.0, atol=PARITY_RTOL * scale,
                                custom_message=f"{what}: max |diff| > {PARITY_RTOL} x {scale:.3g}")


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
