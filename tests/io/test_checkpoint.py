"""Orbax checkpoint: exact save/restore round trip, metadata, atomic writes, clear failures."""

import chex
import jax
import numpy as np
import pytest

from conftest import TINY_DDM_KERAS, TINY_REGRESSOR_KERAS
from ddm_jax.config import DDMConfig, RegressorConfig, config_from_dict, config_to_dict
from ddm_jax.errors import DDMError
from ddm_jax.io.checkpoint import convert_to_checkpoint, load_checkpoint, read_metadata, save_checkpoint
from ddm_jax.model.models import DDM, LineRatioRegressor, init_params

METADATA = {"ddm_config": config_to_dict(DDMConfig.tiny()), "regressor_config": config_to_dict(RegressorConfig.tiny())}


def tiny_params():
    return init_params(DDM(DDMConfig.tiny()), 1), init_params(LineRatioRegressor(RegressorConfig.tiny()), 2)


def test_round_trip_is_exact(tmp_path):
    ddm, regressor = tiny_params()
    save_checkpoint(tmp_path / "ckpt", ddm, regressor, METADATA)
    ddm2, regressor2, metadata = load_checkpoint(tmp_path / "ckpt")
    for a, b in ((ddm, ddm2), (regressor, regressor2)):
        chex.assert_type(jax.tree.leaves(b), np.float32)
        chex.assert_trees_all_equal(a, b, strict=True)  # the same tree, shapes, dtypes and values
    assert config_from_dict(DDMConfig, metadata["ddm_config"]) == DDMConfig.tiny()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary left behind


def test_converted_checkpoint_records_its_sources(tmp_path):
    convert_to_checkpoint([TINY_DDM_KERAS, TINY_REGRESSOR_KERAS], tmp_path / "ckpt")
    metadata = read_metadata(tmp_path / "ckpt")
    ddm_source = metadata["sources"]["ddm"]
    assert ddm_source["file"] == "tiny_ddm_keras.hdf5"
    assert ddm_source["format"] == "keras-hdf5 (save_weights)"
    import hashlib

    assert ddm_source["sha256"] == hashlib.sha256(TINY_DDM_KERAS.read_bytes()).hexdigest()
    assert ddm_source["layer_map"]["conv1d"] == "trunk/conv_1"
    assert metadata["converter_version"] and metadata["presets"] == {"ddm": "tiny", "regressor": "tiny"}


def test_existing_checkpoint_is_kept_unless_overwrite(tmp_path):
    ddm, regressor = tiny_params()
    save_checkpoint(tmp_path / "ckpt", ddm, regressor, METADATA)
    with pytest.raises(DDMError, match="already exists"):
        save_checkpoint(tmp_path / "ckpt", regressor, ddm, METADATA)
    other = jax.tree.map(lambda a: a + 1, ddm)
    save_checkpoint(tmp_path / "ckpt", other, regressor, METADATA, overwrite=True)
    restored = load_checkpoint(tmp_path / "ckpt")[0]
    np.testing.assert_array_equal(restored["total"]["bias"], np.asarray(other["total"]["bias"]))
    chex.assert_trees_all_equal(restored, other)  # every leaf of the overwriting params, not only one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_failed_save_leaves_nothing(tmp_path):
    ddm, regressor = tiny_params()
    # An object leaf cannot be written: Orbax (tensorstore) raises ValueError, which save_checkpoint
    # lets through after removing its staging folder; the message is Orbax's, so no match= on it.
    with pytest.raises(ValueError):
        save_checkpoint(tmp_path / "ckpt", ddm, {"bad": object()}, METADATA)
    assert list(tmp_path.iterdir()) == []


def test_missing_and_damaged_checkpoints(tmp_path):
    with pytest.raises(DDMError, match="no checkpoint at .*ddm-jax convert"):
        load_checkpoint(tmp_path / "nowhere")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("not a checkpoint")
    with pytest.raises(DDMError, match="not a readable ddm-jax checkpoint"):
        load_checkpoint(tmp_path / "junk")
