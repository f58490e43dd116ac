"""Pickle-free .npz reading (io.safe.load_npz): each member's declared shape is checked against the
bytes the archive holds, and the declared total against the memory available, before anything is read."""

import io
import zipfile

import numpy as np
import pytest

import ddm_jax.io.safe as ddm_io
from ddm_jax.errors import DDMError
from ddm_jax.io.safe import load_npz
from hostile_files import npy_bytes, write_npz


def test_npz_member_declaring_more_than_it_holds(tmp_path):
    path = write_npz(tmp_path / "lie.npz", {"flux": npy_bytes((10**9, 2208), data=b"\0" * 64)})
    with pytest.raises(DDMError, match=r"lie.npz: flux declares shape \(1000000000, 2208\) float32 "
                                       r"\(8832000000000 bytes\) but its member holds 64 bytes"):
        load_npz(path, "test file")


def test_npz_member_that_is_not_an_array_and_a_pickle(tmp_path):
    with zipfile.ZipFile(tmp_path / "other.npz", "w") as archive:
        archive.writestr("notes.txt", "hello")
    with pytest.raises(DDMError, match="member 'notes.txt' is not an .npy array"):
        load_npz(tmp_path / "other.npz", "test file")
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    write_npz(tmp_path / "pickle.npz", {"flux": buffer.getvalue()})
    with pytest.raises(DDMError, match="flux holds pickled Python objects"):
        load_npz(tmp_path / "pickle.npz", "test file")


def test_npz_negative_dimension_is_refused(tmp_path):
    path = write_npz(tmp_path / "neg.npz", {"flux": npy_bytes((-3, 2208))})
    with pytest.raises(DDMError, match="negative dimension"):
        load_npz(path, "test file")


def test_npz_declared_total_beyond_available_memory(tmp_path, monkeypatch):
    path = tmp_path / "big.npz"
    np.savez(path, flux=np.zeros((100, 2208), np.float32))
    monkeypatch.setattr(ddm_io, "available_memory", lambda: 1000)
    with pytest.raises(DDMError, match=r"declares 0.0 GiB of data, more than the 0.0 GiB of memory available"):
        load_npz(path, "test file")
