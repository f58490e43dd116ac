"""Decompose on odd but honest array files: other dtypes, byte orders, memory orders and a column.
Accepted and converted where the meaning is clear, refused in one line where it is not."""

import numpy as np
import pytest

from conftest import TINY_DDM_KERAS, TINY_REGRESSOR_KERAS, random_spectra
from ddm_jax.errors import DDMError
from ddm_jax.inference.decomposer import Decomposer
from ddm_jax.inference.streaming import decompose_files
from ddm_jax.io.checkpoint import convert_to_checkpoint
from ddm_jax.schema import OUTPUT_KEYS

COUNT = 6


@pytest.fixture(scope="module")
def decomposer(tmp_path_factory):
    path = tmp_path_factory.mktemp("odd") / "ckpt"
    convert_to_checkpoint([TINY_DDM_KERAS, TINY_REGRESSOR_KERAS], path)
    return Decomposer.from_checkpoint(path, batch_size=4)


@pytest.fixture(scope="module")
def flux():
    return np.round(random_spectra(COUNT, seed=7) * 8) / 8  # exact in float16 and in integers x 8


MASS = np.linspace(1.0, 2.0, COUNT)

SPECTRA = {  # name: (how the array is stored, the float32 values it means)
    "float64": (lambda f: f.astype(np.float64), lambda f: f),
    "float16": (lambda f: f.astype(np.float16), lambda f: f),
    "int32 x 8": (lambda f: (f * 8).astype(np.int32), lambda f: f * 8),
    "big-endian float32": (lambda f: f.astype(">f4"), lambda f: f),
    "big-endian float64": (lambda f: f.astype(">f8"), lambda f: f),
    "Fortran order": (lambda f: np.asfortranarray(f), lambda f: f),
    "Fortran big-endian": (lambda f: np.asfortranarray(f.astype(">f8")), lambda f: f),
}


def run(decomposer, tmp_path, spectra, mass=MASS, output="out.npz"):
    np.save(tmp_path / "s.npy", spectra)
    np.save(tmp_path / "m.npy", mass)
    written = decompose_files(decomposer, tmp_path / "s.npy", tmp_path / "m.npy", tmp_path / output)
    if written.suffix == ".npz":
        with np.load(written) as result:
            return {key: result[key] for key in OUTPUT_KEYS}
    return {key: np.load(written / f"{key}.npy") for key in OUTPUT_KEYS}


@pytest.mark.parametrize("output", ["out.npz", "out_folder"])
@pytest.mark.parametrize("case", list(SPECTRA))
def test_spectra_in_any_numeric_dtype_byte_order_and_memory_order(decomposer, tmp_path, flux, case, output):
    store, meaning = SPECTRA[case]
    result = run(decomposer, tmp_path, store(flux), output=output)
    reference = decomposer(meaning(flux).astype(np.float32), MASS)
    for key in OUTPUT_KEYS:
        np.testing.assert_array_equal(result[key], reference[key], err_msg=key)


@pytest.mark.parametrize("mass", [MASS[:, None], MASS.astype(">f8"), (MASS * 4).astype(np.int16)])
def test_masses_as_a_column_big_endian_or_integer(decomposer, tmp_path, flux, mass):
    result = run(decomposer, tmp_path, flux, mass=mass)
    reference = decomposer(flux.astype(np.float32), np.asarray(mass, np.float32).ravel())
    np.testing.assert_array_equal(result["p_sf"], reference["p_sf"])


def test_one_spectrum_as_a_column(decomposer, tmp_path, flux):
    result = run(decomposer, tmp_path, flux[0][:, None], mass=MASS[:1])
    np.testing.assert_array_equal(result["p_sf"], decomposer(flux[:1].astype(np.float32), MASS[:1])["p_sf"])


@pytest.mark.parametrize("spectra, mass, message", [
    (np.ones((2208, 2)), MASS[:1], r"has shape \(2208, 2\); need \(B, 2208\)"),
    (np.ones((3, 2208), np.complex64), MASS[:3], r"is not numeric \(dtype complex64\)"),
    (np.ones((3, 2208), bool), MASS[:3], r"is not numeric \(dtype bool\)"),  # refused as the file is opened
    (np.asfortranarray(np.ones((3, 2208, 1))), MASS[:3], "Fortran-ordered 3-d array"),
    (np.ones((3, 2208)), np.ones((3, 2)), r"has shape \(3, 2\); need one value per spectrum"),
    (np.ones((3, 2208)), np.array(["1", "2", "3"]), "not numeric"),
    # float64 values that float32 cannot hold: inf after the cast, so refused rather than passed on
    (np.where(np.arange(2208) == 9, 1e300, np.ones((3, 2208))), MASS[:3], "beyond float32's range"),
    (np.ones((3, 2208)), np.array([1.0, 1e300, 1.0]), "mass must be finite and positive"),
])
def test_what_has_no_clear_meaning_is_refused_in_one_line(decomposer, tmp_path, spectra, mass, message):
    with pytest.raises(DDMError, match=message) as err:
        run(decomposer, tmp_path, spectra, mass=mass)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out.npz").exists()
