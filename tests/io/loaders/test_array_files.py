"""Plain-array inputs (io.loaders.arrays): .npz and .npy spectra in any layout, CSV files bounded as they
stream, and the redshift table; what has no clear meaning is refused in one line."""

import numpy as np
import pytest

from ddm_jax.errors import DDMError
from ddm_jax.io.loaders import arrays
from ddm_jax.io.loaders.arrays import read_array_file, read_z_table


def test_spectra_npz_shapes_are_declared_before_read(tmp_path):
    path = tmp_path / "spectra.npz"
    np.savez(path, wavelength=np.arange(10.0), flux=np.ones((2, 10)), ivar=np.ones((3, 10)))
    with pytest.raises(DDMError, match=r"ivar has shape \(3, 10\); with flux \(2, 10\) expected \(2, 10\)"):
        read_array_file(path)
    np.savez(path, wavelength=np.arange(10.0), flux=np.ones((2, 10, 1)), ivar=np.ones((2, 10)))
    with pytest.raises(DDMError, match=r"flux has shape \(2, 10, 1\); expected \(N,\) or \(M, N\)"):
        read_array_file(path)


# --- prepare's plain arrays: other dtypes, byte orders, memory orders ------------------------------

def _columns():
    wavelength = np.linspace(3800.0, 9000.0, 500)
    return np.stack([wavelength, np.ones(500), np.full(500, 4.0)], 1)


@pytest.mark.parametrize("store", [lambda c: c.astype(">f8"), lambda c: c.astype(np.float32), np.asfortranarray,
                                   lambda c: np.ascontiguousarray(c.T), lambda c: np.asfortranarray(c.T)],
                         ids=["big-endian", "float32", "Fortran (N, 3)", "(3, N)", "Fortran (3, N)"])
def test_prepare_npy_columns_in_any_layout(tmp_path, store):
    columns = _columns()
    np.save(tmp_path / "spectrum.npy", store(columns))
    (spectrum,) = read_array_file(tmp_path / "spectrum.npy")
    np.testing.assert_allclose(spectrum.wavelength, columns[:, 0], rtol=1e-6)
    np.testing.assert_array_equal(spectrum.ivar, 4.0)
    assert spectrum.flux.dtype == np.float64


def test_prepare_npz_float16_big_endian_and_integer_mask(tmp_path):
    columns = _columns()
    np.savez(tmp_path / "spectra.npz", wavelength=columns[:, 0].astype(">f8"), flux=columns[:, 1].astype(np.float16),
             ivar=columns[:, 2].astype(">f4"), mask=np.arange(500, dtype=">i2") % 2, z=np.float32(0.1))
    (spectrum,) = read_array_file(tmp_path / "spectra.npz")
    np.testing.assert_array_equal(spectrum.flux, 1.0)
    np.testing.assert_array_equal(spectrum.good, np.arange(500) % 2 == 0)
    assert spectrum.z == pytest.approx(0.1)


def test_prepare_npz_string_flux_is_refused(tmp_path):
    np.savez(tmp_path / "spectra.npz", wavelength=np.arange(3.0), flux=np.array(["a", "b", "c"]), ivar=np.ones(3))
    with pytest.raises(DDMError, match=r"flux is not numeric \(dtype <U1\)"):
        read_array_file(tmp_path / "spectra.npz")


# --- CSV -------------------------------------------------------------------------------------------

def test_csv_rows_are_counted_as_they_stream(tmp_path, monkeypatch):
    monkeypatch.setattr(arrays, "MAX_CSV_ROWS", 100)
    path = tmp_path / "long.csv"
    path.write_text("wavelength,flux,ivar\n" + "5000,1,1\n" * 101)
    with pytest.raises(DDMError, match="more than 100 rows"):
        read_array_file(path)


@pytest.mark.parametrize("content, message", [
    ("5000," + "1" * 10_000 + ",1\n", "line 1 is longer than 4096 characters"),
    (",".join(f"c{i}" for i in range(300)) + "\n", "header names 300 columns"),
    ("wavelength,flux,ivar\n5000,1,1,1,1\n", "the header names 3 columns, row 1 has 5"),
    ("wavelength,flux,ivar\n5000,\0,1\n", "unreadable .csv file"),
    ("wavelength,flux,flux\n5000,1,1\n", "each once"),
    ("wavelength,flux,ivar\n5000,abc,1\n", "unreadable .csv file"),
])
def test_csv_bounded_columns_and_lines(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DDMError, match=message) as err:
        read_array_file(path)
    assert "\n" not in str(err.value)


def test_csv_streams_in_blocks(tmp_path):
    rows = 70_000  # more than one conversion block
    wavelength = 3000 + np.arange(rows) * 0.1
    np.savetxt(tmp_path / "big.csv", np.stack([wavelength, np.ones(rows), np.ones(rows)], 1), delimiter=",",
               header="wavelength,flux,ivar", comments="")
    (spectrum,) = read_array_file(tmp_path / "big.csv")
    np.testing.assert_allclose(spectrum.wavelength, wavelength)


# --- the redshift table ----------------------------------------------------------------------------

@pytest.mark.parametrize("content, message", [
    ("id, z\na,0.1\n", None),
    ("id,z\na\n", "line 2 has 1 fields, the header 2"),
    ("id,z\na,x\n", "bad redshift table"),
    ("name,z\na,0.1\n", "needs a header with columns id,z"),
    ("id,z\n" + "a," + "1" * 5000 + "\n", "line 2 is longer than 4096 characters"),
    ("id,z\na,\0\n", "bad redshift table"),
])
def test_redshift_table_one_line_errors(tmp_path, content, message):
    path = tmp_path / "z.csv"
    path.write_text(content)
    if message is None:
        assert read_z_table(path) == {"a": 0.1}
        return
    with pytest.raises(DDMError, match=message) as err:
        read_z_table(path)
    assert "\n" not in str(err.value)
