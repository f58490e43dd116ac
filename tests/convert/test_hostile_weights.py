"""Hostile weight files: what a file declares is compared with what the layer expects
before any data is read, and a file that reaches outside itself is refused."""

import chex
import h5py
import numpy as np
import pytest

import ddm_jax_convert.keras_hdf5 as keras_hdf5
from conftest import TINY_DDM_KERAS, TINY_REGRESSOR_KERAS, torch_reference
from ddm_jax.errors import DDMError
from ddm_jax_convert import convert_file
from ddm_jax_convert.rules import DeclaredArray
from hostile_files import (
    FIRST,
    HUGE,
    LAST,
    TRUNK_DENSE,
    as_model_save,
    copy_of,
    expected_shape,
    huge_dataset,
    peak_rss,
    replace_weight,
)

LAYOUTS = ["save_weights", "model.save"]


@pytest.fixture(params=LAYOUTS)
def ddm_file(request, tmp_path):
    """A copy of the tiny DDM in each Keras layout, and the group its layers live under."""
    if request.param == "save_weights":
        return copy_of(TINY_DDM_KERAS, tmp_path / "ddm.hdf5"), "/"
    return as_model_save(TINY_DDM_KERAS, tmp_path / "ddm.h5"), "/model_weights"


def test_both_layouts_convert(ddm_file):
    path, _ = ddm_file
    result = convert_file(str(path))
    assert result.network == "ddm" and result.preset == "tiny"
    chex.assert_trees_all_equal(result.params, convert_file(str(TINY_DDM_KERAS)).params, strict=True)


@pytest.mark.parametrize("layer", [FIRST, TRUNK_DENSE, LAST])
def test_huge_declared_kernel_is_refused_before_reading(ddm_file, layer, monkeypatch):
    path, root = ddm_file
    expected = expected_shape(TINY_DDM_KERAS, layer)
    shape = HUGE if len(expected) == 2 else (200_000, 1, 200_000)
    replace_weight(path, layer, huge_dataset(shape), root=root)
    loads = []
    declared = keras_hdf5._declared

    def counting(*args):
        array = declared(*args)
        return DeclaredArray(array.shape, array.dtype, lambda: loads.append(1) or array.load())

    monkeypatch.setattr(keras_hdf5, "_declared", counting)
    with pytest.raises(DDMError) as err:
        convert_file(str(path), preset="tiny")  # with 'auto', a broken first layer is reported against 'released'

    message = str(err.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert f"expected shape {expected}, got {shape}" in message
    assert not loads  # not even the layers before it: every shape is compared first


def test_the_crafted_file_of_the_issue_in_a_command_stays_small(tmp_path):
    path = copy_of(TINY_DDM_KERAS, tmp_path / "crafted.hdf5")
    replace_weight(path, TRUNK_DENSE, huge_dataset())
    assert path.stat().st_size < 1 << 20
    out = tmp_path / "ckpt"
    run = peak_rss(["convert", path, TINY_REGRESSOR_KERAS, "-o", out])
    assert run["returncode"] == 2, run["stderr"]
    (line,) = run["stderr"].strip().splitlines()
    assert "expected shape (324, 24), got (200000, 200000)" in line and str(path) in line
    assert run["peak_kib"] < 1 << 20, f"peak RSS {run['peak_kib'] / 1024:.0f} MiB"  # 1 GiB, half the bound
    assert not out.exists()


@pytest.mark.parametrize("dtype, message", [
    ("<i4", r"dtype int32 is not floating point"),
    ("S4", r"dtype \|S4 is not floating point"),
    ([("a", "<f4"), ("b", "<f4")], r"dtype \[\('a', '<f4'\), \('b', '<f4'\)\] is not floating point"),
])
def test_wrong_dtype_is_refused_by_its_declaration(ddm_file, dtype, message):
    path, root = ddm_file
    replace_weight(path, TRUNK_DENSE, lambda group, name, old: group.create_dataset(name, old.shape, dtype),
                   root=root)
    with pytest.raises(DDMError, match=f"layer dense_1 .*kernel: {message}"):
        convert_file(str(path))


def test_dataset_replaced_by_a_group(ddm_file):
    path, root = ddm_file
    weight = replace_weight(path, TRUNK_DENSE, lambda group, name, old: group.create_group(name), root=root)
    with pytest.raises(DDMError, match=f"weight '{weight.split('/', 1)[1]}' is a Group, not a dataset"):
        convert_file(str(path))


def test_layer_replaced_by_a_dataset(tmp_path):
    path = copy_of(TINY_DDM_KERAS, tmp_path / "ddm.hdf5")
    with h5py.File(path, "r+") as f:
        del f["dense"]
        f["dense"] = np.zeros(3)
    with pytest.raises(DDMError, match="layer 'dense' is a Dataset, not a group"):
        convert_file(str(path))


def test_external_link_to_another_file(ddm_file, tmp_path):
    path, root = ddm_file
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:  # the right shape and values, but in another file
        f["kernel"] = np.zeros((324, 24), np.float32)
    replace_weight(path, TRUNK_DENSE, lambda group, name, old: group.__setitem__(
        name, h5py.ExternalLink(str(other), "/kernel")), root=root)
    with pytest.raises(DDMError, match=r"is an external link to .*other.h5:/kernel; a weight file must hold"):
        convert_file(str(path))


def test_external_link_in_place_of_a_layer_group(tmp_path):
    path = copy_of(TINY_DDM_KERAS, tmp_path / "ddm.hdf5")
    other = copy_of(TINY_DDM_KERAS, tmp_path / "other.hdf5")
    with h5py.File(path, "r+") as f:
        del f["dense"]
        f["dense"] = h5py.ExternalLink(str(other), "/dense")
    with pytest.raises(DDMError, match="layer 'dense' is an external link"):
        convert_file(str(path))


def test_soft_link_is_refused(tmp_path):
    path = copy_of(TINY_DDM_KERAS, tmp_path / "ddm.hdf5")
    weight = replace_weight(path, TRUNK_DENSE, lambda group, name, old: group.__setitem__(
        name, h5py.SoftLink("/dense_1/dense_1/kernel:0")))
    with pytest.raises(DDMError, match=f"'{weight.split('/', 1)[1]}' is a SoftLink"):
        convert_file(str(path))


def test_external_storage_is_refused(tmp_path):
    path = copy_of(TINY_DDM_KERAS, tmp_path / "ddm.hdf5")
    raw = tmp_path / "kernel.raw"
    np.zeros((324, 24), np.float32).tofile(raw)
    replace_weight(path, TRUNK_DENSE, lambda group, name, old: group.create_dataset(
        name, old.shape, "<f4", external=[(str(raw), 0, h5py.h5f.UNLIMITED)]))
    with pytest.raises(DDMError, match="keeps its data in other files"):
        convert_file(str(path))


def test_virtual_dataset_is_refused(tmp_path):
    path = copy_of(TINY_DDM_KERAS, tmp_path / "ddm.hdf5")
    other = tmp_path / "source.h5"
    with h5py.File(other, "w") as f:
        f["kernel"] = np.zeros((324, 24), np.float32)

    def virtual(group, name, old):
        layout = h5py.VirtualLayout(old.shape, "<f4")
        layout[:] = h5py.VirtualSource(str(other), "kernel", shape=old.shape)
        group.create_virtual_dataset(name, layout)

    replace_weight(path, TRUNK_DENSE, virtual)
    with pytest.raises(DDMError, match="keeps its data in other files"):
        convert_file(str(path))


def test_chunks_larger_than_the_dataset_are_refused(tmp_path):
    path = copy_of(TINY_DDM_KERAS, tmp_path / "ddm.hdf5")
    replace_weight(path, TRUNK_DENSE, lambda group, name, old: group.create_dataset(
        name, data=old, maxshape=(None, None), chunks=(4096, 4096), compression="gzip"))
    with pytest.raises(DDMError, match=r"declares chunks \(4096, 4096\) larger than the dataset \(324, 24\)"):
        convert_file(str(path))


def test_huge_layer_names_attribute_is_refused_unread(tmp_path):
    path = tmp_path / "names.h5"
    with h5py.File(path, "w", libver="latest") as f:  # dense attribute storage: no 64 KiB limit
        f.attrs.create("layer_names", np.array([b"x"] * 20_000))
    with pytest.raises(DDMError, match=r"attribute 'layer_names' of '/' declares shape \(20000,\)"):
        convert_file(str(path))


def test_a_file_that_crashes_the_hdf5_library_is_refused(tmp_path):
    data = bytearray(TINY_DDM_KERAS.read_bytes())
    assert data[240_969] == 1
    data[240_969] = 3  # one byte of an attribute's metadata: libhdf5 segfaults reading it (found by the fuzzer)
    path = tmp_path / "crash.hdf5"
    path.write_bytes(bytes(data))
    with pytest.raises(DDMError, match=r"crash.hdf5: the HDF5 library crashed reading it \(SIG"):
        convert_file(str(path))


@pytest.mark.parametrize("dtype", ["<f2", "<f8", ">f4", ">f8"])
def test_other_float_dtypes_convert_to_float32(tmp_path, dtype):
    path = copy_of(TINY_DDM_KERAS, tmp_path / "ddm.hdf5")
    replace_weight(path, TRUNK_DENSE, lambda group, name, old: group.create_dataset(name, data=old.astype(dtype)))
    reference = convert_file(str(TINY_DDM_KERAS)).params["dense_1"]["kernel"]
    kernel = convert_file(str(path)).params["dense_1"]["kernel"]
    chex.assert_type(kernel, np.float32)
    chex.assert_shape(kernel, reference.shape)
    chex.assert_trees_all_close(kernel, reference, rtol=1e-3 if dtype == "<f2" else 0)


def test_fortran_ordered_hdf5_does_not_exist_but_a_transposed_kernel_is_a_shape_error(tmp_path):
    path = copy_of(TINY_DDM_KERAS, tmp_path / "ddm.hdf5")
    replace_weight(path, TRUNK_DENSE, lambda group, name, old: group.create_dataset(name, data=old.T))
    with pytest.raises(DDMError, match=r"expected shape \(324, 24\), got \(24, 324\)"):
        convert_file(str(path))


# --- PyTorch state_dicts ---------------------------------------------------------------------------

@pytest.fixture
def regressor_state():
    torch_port = torch_reference()
    from ddm_jax.config import RegressorConfig

    return torch_port.TorchRegressor(RegressorConfig.tiny()).state_dict()


def test_state_dict_shapes_are_compared_before_any_copy(tmp_path, regressor_state, monkeypatch):
    import torch

    import ddm_jax_convert
    from ddm_jax_convert import torch_state_dict

    regressor_state["out.weight"] = torch.zeros(4000, 4000)  # the last layer, declared too big
    torch.save(regressor_state, tmp_path / "regressor.pt")
    loads = []
    read = torch_state_dict.read_state_dict

    def counting(path):
        return {key: DeclaredArray(value.shape, value.dtype, lambda value=value: loads.append(1) or value.load())
                for key, value in read(path).items()}

    monkeypatch.setattr(ddm_jax_convert, "read_state_dict", counting)
    with pytest.raises(DDMError, match=r"out.weight\): expected shape \(\d+, 8\) in Flax layout, got \(4000, 4000\)"):
        convert_file(str(tmp_path / "regressor.pt"), preset="tiny")
    assert not loads


@pytest.mark.parametrize("dtype", ["float16", "float64", "bfloat16"])
def test_state_dict_float_dtypes_convert(tmp_path, regressor_state, dtype):
    import torch

    torch.save({k: v.to(getattr(torch, dtype)) for k, v in regressor_state.items()}, tmp_path / "r.pt")
    params = convert_file(str(tmp_path / "r.pt")).params
    chex.assert_trees_all_close(params["out"]["bias"], regressor_state["out.bias"].float().numpy(), rtol=1e-2)
    chex.assert_type(params["out"]["kernel"], np.float32)


def test_state_dict_integer_tensor_is_refused(tmp_path, regressor_state):
    import torch

    regressor_state["out.bias"] = torch.zeros(8, dtype=torch.int64)
    torch.save(regressor_state, tmp_path / "r.pt")
    with pytest.raises(DDMError, match="tensor 'out.bias' is torch.int64, not floating point"):
        convert_file(str(tmp_path / "r.pt"))


def test_legacy_torch_format_is_refused(tmp_path, regressor_state):
    import torch

    torch.save(regressor_state, tmp_path / "r.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(DDMError, match="legacy .* format"):
        convert_file(str(tmp_path / "r.pt"))
