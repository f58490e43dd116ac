"""`decompose` on the bundled example gives the outputs recorded before the package's layout
changed (tests/fixtures/example_decomposition.npz, written by the code of 2026-11-25).

On the machine that recorded them the outputs are bit-identical; XLA's CPU kernels may round
differently on other vector extensions, hence a tolerance far below any meaningful change.
"""

import numpy as np
import pytest

from conftest import ROOT
from ddm_jax.evaluation.demo import bundled
from ddm_jax.inference.decomposer import Decomposer
from ddm_jax.io.checkpoint import convert_to_checkpoint
from ddm_jax.schema import OUTPUT_KEYS, TRUST_KEYS

PINNED = ROOT / "tests" / "fixtures" / "example_decomposition.npz"
PIN_RTOL = 1e-6  # of each output's largest magnitude


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("pin") / "checkpoint"
    convert_to_checkpoint([bundled("tiny_ddm_keras.hdf5"), bundled("tiny_regressor_keras.hdf5")], path)
    return path


def test_example_outputs_match_the_pinned_ones(checkpoint):
    examples = np.load(bundled("example_spectra.npz"), allow_pickle=False)
    result = Decomposer.from_checkpoint(checkpoint)(examples["flux"], examples["mass"])
    with np.load(PINNED, allow_pickle=False) as pinned:
        assert set(result) == set(OUTPUT_KEYS + TRUST_KEYS)  # the trust keys are not pinned: no calibration
        for key in OUTPUT_KEYS:
            expected = pinned[key]
            assert result[key].shape == expected.shape and result[key].dtype == expected.dtype, key
            if key == "bpt_class":
                np.testing.assert_array_equal(result[key], expected)
            else:
                scale = np.abs(expected).max()
                assert np.abs(result[key] - expected).max() <= PIN_RTOL * scale, key
