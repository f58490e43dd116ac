"""Bad weight files stop the converter with an error naming the layer and shapes, and write nothing."""

import shutil

import h5py
import numpy as np
import pytest

from conftest import TINY_DDM_KERAS, TINY_REGRESSOR_KERAS, torch_reference
from ddm_jax.cli import main
from ddm_jax.errors import DDMError
from ddm_jax_convert import convert_file, convert_files


@pytest.fixture
def ddm_copy(tmp_path):
    path = tmp_path / "ddm.hdf5"
    shutil.copy(TINY_DDM_KERAS, path)
    return path


def strings(attrs, key):
    return [n.decode() if isinstance(n, bytes) else str(n) for n in attrs[key]]


def weighted_layers(f):
    return [n for n in strings(f.attrs, "layer_names") if len(f[n].attrs["weight_names"])]


def drop_layer(path, index_of_weighted_layer):
    with h5py.File(path, "r+") as f:
        names = strings(f.attrs, "layer_names")
        names.remove(weighted_layers(f)[index_of_weighted_layer])
        f.attrs["layer_names"] = [n.encode() for n in names]


def test_truncated_file(tmp_path):
    path = tmp_path / "truncated.hdf5"
    path.write_bytes(TINY_DDM_KERAS.read_bytes()[:50_000])
    with pytest.raises(DDMError, match="truncated"):
        convert_file(str(path))


@pytest.mark.parametrize("content, message", [
    (b"", "empty"),
    (b"just some text\n", "neither a Keras HDF5"),
    (b"\x93NUMPY\x01\x00", "neither a Keras HDF5"),
])
def test_foreign_files(tmp_path, content, message):
    path = tmp_path / "weights.hdf5"  # the name says HDF5; the content decides
    path.write_bytes(content)
    with pytest.raises(DDMError, match=message):
        convert_file(str(path))


def test_hdf5_that_is_not_keras(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["data"] = np.zeros(3)
    with pytest.raises(DDMError, match="not a Keras weight file"):
        convert_file(str(path))


def test_missing_layer_names_the_count(ddm_copy):
    drop_layer(ddm_copy, 13)  # the SF head's first Dense; the AGN head's, next, has the same shapes
    with pytest.raises(DDMError, match=r"the file has 21 weighted layers, the DDM has 22.*first 14 match"):
        convert_file(str(ddm_copy))


def test_shape_mismatch_names_layer_and_both_shapes(ddm_copy):
    with h5py.File(ddm_copy, "r+") as f:
        group = f[weighted_layers(f)[8]]  # the trunk's first Dense
        weight = strings(group.attrs, "weight_names")[0]
        old = group[weight][()]
        del group[weight]
        group[weight] = np.zeros((old.shape[0] + 1, old.shape[1]), np.float32)
    with pytest.raises(DDMError, match=r"layer dense_1 \(file layer 'dense'\) kernel: expected shape "
                                       r"\(324, 24\), got \(325, 24\)"):
        convert_file(str(ddm_copy), preset="tiny")


def test_released_config_mismatch_names_shapes():
    with pytest.raises(DDMError, match=r"released configuration.*expected shape \(11, 1, 64\), got \(11, 1, 4\)"):
        convert_file(str(TINY_DDM_KERAS), preset="released")


def test_two_files_of_the_same_network():
    with pytest.raises(DDMError, match="both hold ddm weights"):
        convert_files([str(TINY_DDM_KERAS), str(TINY_DDM_KERAS)])


def test_nan_weights_are_refused(ddm_copy):
    with h5py.File(ddm_copy, "r+") as f:
        name = weighted_layers(f)[-1]
        f[name][strings(f[name].attrs, "weight_names")[0]][...] = np.nan
    with pytest.raises(DDMError, match="NaN"):
        convert_file(str(ddm_copy))


def test_torch_state_dict_missing_and_extra_keys(tmp_path):
    torch_port = torch_reference()
    import torch

    from ddm_jax.config import RegressorConfig

    state = torch_port.TorchRegressor(RegressorConfig.tiny()).state_dict()
    state["extra.weight"] = state.pop("dense_2.weight")
    torch.save(state, tmp_path / "regressor.pt")
    with pytest.raises(DDMError, match=r"missing \['dense_2.weight'\], unexpected \['extra.weight'\]"):
        convert_file(str(tmp_path / "regressor.pt"))


def test_torch_file_that_needs_unpickling_code_is_refused(tmp_path):
    torch_reference()
    import torch

    torch.save({"conv": torch.nn.Conv1d(1, 2, 3)}, tmp_path / "module.pt")  # a module, not tensors
    with pytest.raises(DDMError, match="cannot load it as a PyTorch state_dict"):
        convert_file(str(tmp_path / "module.pt"))


def test_cli_failure_writes_no_checkpoint(tmp_path, ddm_copy, capsys):
    drop_layer(ddm_copy, 0)
    out = tmp_path / "ckpt"
    assert main(["convert", str(ddm_copy), str(TINY_REGRESSOR_KERAS), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "weighted layers" in err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["ddm.hdf5"]
