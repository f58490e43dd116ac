"""Input files are checked as they declare themselves before their data are read (issue 14):
.npz members against their size in the archive, PREPARED shapes against one another, FITS HDUs
against the file's length, CSV rows and columns as they stream; and memory as a last bound."""

import gzip
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

import ddm_jax
import ddm_jax.io.safe as ddm_io
from ddm_jax.errors import DDMError
from ddm_jax.io.loaders import arrays
from ddm_jax.io.loaders.arrays import read_array_file, read_z_table
from ddm_jax.io.loaders.registry import read_any
from ddm_jax.io.outputs.prepared import load_prepared
from ddm_jax.io.safe import load_npz
from ddm_jax.prepare import pipeline
from spectra_helpers import STRONG, ppxf_sdss_path

fits = pytest.importorskip("astropy.io.fits")
REAL = Path(ddm_jax.__file__).parent / "data" / "real_spectra"


def npy_bytes(shape, dtype="<f4", data=b"") -> bytes:
    """An .npy header declaring `shape` and `dtype`, followed by `data` (whatever it declares)."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + data


def write_npz(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(f"{name}.npy", content)
    return path


def array_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asarray(array))
    return buffer.getvalue()


# --- .npz ------------------------------------------------------------------------------------------

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


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A small PREPARED.npz, made by `prepare` from a real SDSS spectrum."""
    out = tmp_path_factory.mktemp("prepared") / "prepared.npz"
    pipeline.run([str(ppxf_sdss_path(STRONG))], str(out), coverage="fill", snr_policy="warn", log=lambda _: None)
    return load_prepared(out)


def test_prepared_shapes_are_compared_before_the_data_are_read(prepared, tmp_path, monkeypatch):
    reads = []
    original = np.lib.format.read_array
    monkeypatch.setattr(np.lib.format, "read_array", lambda *a, **k: reads.append(1) or original(*a, **k))
    for key, value in {"flux": np.zeros((5, 2208), np.float32), "template_weights": np.zeros((7, 3))}.items():
        path = tmp_path / f"{key}.npz"
        np.savez(path, **dict(prepared, **{key: value}))
        with pytest.raises(DDMError, match=rf"{key} has shape \({value.shape[0]}, \d+\), expected"):
            load_prepared(path)
    assert not reads


def test_prepared_with_ids_of_no_dimension(prepared, tmp_path):
    path = tmp_path / "scalar_ids.npz"
    np.savez(path, **dict(prepared, ids=np.array("one")))
    with pytest.raises(DDMError, match=r"ids has shape \(\), expected \(n,\)"):
        load_prepared(path)


def test_spectra_npz_shapes_are_declared_before_read(tmp_path):
    path = tmp_path / "spectra.npz"
    np.savez(path, wavelength=np.arange(10.0), flux=np.ones((2, 10)), ivar=np.ones((3, 10)))
    with pytest.raises(DDMError, match=r"ivar has shape \(3, 10\); with flux \(2, 10\) expected \(2, 10\)"):
        read_array_file(path)
    np.savez(path, wavelength=np.arange(10.0), flux=np.ones((2, 10, 1)), ivar=np.ones((2, 10)))
    with pytest.raises(DDMError, match=r"flux has shape \(2, 10, 1\); expected \(N,\) or \(M, N\)"):
        read_array_file(path)


# --- FITS ------------------------------------------------------------------------------------------

def _with_card(raw: bytes, card: str, value: int) -> bytes:
    """`raw` with the first header card `card` set to `value` (same 80-byte card, nothing moved)."""
    start = raw.index(card.ljust(8).encode() + b"= ")
    return raw[:start] + f"{card:<8}= {value:>20}".ljust(80).encode() + raw[start + 80:]


def test_sdss_table_declaring_more_rows_than_the_file_holds(tmp_path):
    raw = ppxf_sdss_path(STRONG).read_bytes()
    coadd = raw.index(b"EXTNAME = 'COADD")
    header_start = raw.rindex(b"XTENSION", 0, coadd)
    path = tmp_path / "spec-huge.fits"
    path.write_bytes(raw[:header_start] + _with_card(raw[header_start:], "NAXIS2", 10**9))
    with pytest.raises(DDMError, match=r"spec-huge.fits: truncated FITS file: HDU COADD declares 32000002560 "
                                       r"bytes of data \(NAXIS 32 x 1000000000, BITPIX 8\) from byte 14400, "
                                       r"but the file holds 748800 bytes"):
        read_any(path)
    zipped = tmp_path / "spec-huge.fits.gz"  # checked against the decompressed length
    zipped.write_bytes(gzip.compress(path.read_bytes()))
    with pytest.raises(DDMError, match=r"spec-huge.fits.gz: truncated FITS file: HDU COADD .* holds 748800 bytes"):
        read_any(zipped)


def test_gzipped_cube_declaring_more_than_its_decompressed_stream(tmp_path):
    raw = ppxf_sdss_path(STRONG).read_bytes()
    path = tmp_path / "spec-huge.fits.gz"
    path.write_bytes(gzip.compress(_with_card(raw, "NAXIS", 2)[:2880] + raw[2880:]))  # primary claims 2 axes
    with pytest.raises(DDMError, match=r"spec-huge.fits.gz: "):
        read_any(path)
    # a gzipped cube whose FLUX declares more planes than the decompressed stream holds
    cube = tmp_path / "cube.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((4, 3, 3), np.float32), name="FLUX")]).writeto(cube)
    raw = cube.read_bytes()
    start = raw.rindex(b"XTENSION", 0, raw.index(b"EXTNAME = 'FLUX"))
    raw = raw[:start] + _with_card(raw[start:], "NAXIS3", 4000)
    zipped = tmp_path / "manga-1-2-LOGCUBE.fits.gz"
    zipped.write_bytes(gzip.compress(raw))
    with pytest.raises(DDMError, match=rf"manga-1-2-LOGCUBE.fits.gz: truncated FITS file: HDU FLUX .* holds "
                                       rf"{len(raw)} bytes"):
        read_any(zipped)


def test_last_hdu_declaring_more_than_the_file_holds_is_named(tmp_path):
    path = tmp_path / "cube.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((4, 3, 3), np.float32), name="FLUX")]).writeto(path)
    raw = path.read_bytes()
    second = raw.index(b"XTENSION")
    path.write_bytes(raw[:second] + _with_card(raw[second:], "NAXIS3", 10**7))
    with pytest.raises(DDMError) as err:
        read_any(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert "HDU FLUX declares 360000000 bytes of data (NAXIS 3 x 3 x 10000000, BITPIX -32)" in message


def test_a_structural_card_given_twice_is_refused(tmp_path):
    raw = ppxf_sdss_path(STRONG).read_bytes()
    coadd = raw.index(b"EXTNAME = 'COADD")
    header_start = raw.rindex(b"XTENSION", 0, coadd)
    extname = raw.index(b"EXTNAME", header_start)  # EXTNAME becomes a second NAXIS2, declaring 10^9 rows
    path = tmp_path / "spec-twice.fits"
    path.write_bytes(raw[:extname] + f"{'NAXIS2':<8}= {10**9:>20}".ljust(80).encode() + raw[extname + 80:])
    with pytest.raises(DDMError, match="spec-twice.fits: header 1 has two NAXIS2 cards"):
        read_any(path)


def test_a_table_column_without_its_name_card(tmp_path):
    raw = ppxf_sdss_path(STRONG).read_bytes()
    coadd = raw.index(b"EXTNAME = 'COADD")
    ttype = raw.index(b"TTYPE2  =", raw.rindex(b"XTENSION", 0, coadd))
    path = tmp_path / "spec-unnamed.fits"  # astropy names the column None (found by the fuzzer)
    path.write_bytes(raw[:ttype] + b"COMMENT " + raw[ttype + 8:])
    with pytest.raises(DDMError, match="spec-unnamed.fits: COADD table lacks column"):
        read_any(path)


def test_bzip2_fits_is_refused(tmp_path):
    import bz2

    path = tmp_path / "spec.fits"
    path.write_bytes(bz2.compress(ppxf_sdss_path(STRONG).read_bytes()[:2880]))
    with pytest.raises(DDMError, match="a bzip2-compressed file"):
        read_any(path)


def test_fits_beyond_available_memory(monkeypatch):
    monkeypatch.setattr(ddm_io, "available_memory", lambda: 1000)
    with pytest.raises(DDMError, match="more than the 0.0 GiB of memory available"):
        read_any(REAL / "MaNGA_test_spectra.fits.gz")


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


# --- peak memory of the commands on hostile inputs -------------------------------------------------

def _hostile_inputs(folder: Path, weights: Path) -> dict[str, list]:
    """A command line per hostile input, each a file that declares far more than it holds."""
    (folder / "spectra.npy").write_bytes(npy_bytes((10**9, 2208), data=b"\0" * 4096))
    np.save(folder / "mass.npy", np.ones(3))
    prepared = write_npz(folder / "prepared.npz", {"flux": npy_bytes((10**9, 2208), data=b"\0" * 64),
                                                   "ids": array_bytes(np.array(["a"]))})
    raw = ppxf_sdss_path(STRONG).read_bytes()
    header_start = raw.rindex(b"XTENSION", 0, raw.index(b"EXTNAME = 'COADD"))
    fits_file = folder / "spec-huge.fits.gz"
    fits_file.write_bytes(gzip.compress(raw[:header_start] + _with_card(raw[header_start:], "NAXIS2", 10**9)))
    decompose = ["decompose", "--weights", weights, "--mass", folder / "mass.npy", "-o", folder / "out.npz"]
    return {"decompose .npy": [*decompose, folder / "spectra.npy"], "decompose PREPARED.npz": [*decompose, prepared],
            "prepare FITS": ["prepare", fits_file, "-o", folder / "prepared_out.npz"]}


@pytest.mark.parametrize("case", ["decompose .npy", "decompose PREPARED.npz", "prepare FITS"])
def test_peak_rss_of_commands_on_hostile_inputs(tmp_path, case):
    from conftest import TINY_DDM_KERAS, TINY_REGRESSOR_KERAS
    from ddm_jax.io.checkpoint import convert_to_checkpoint
    from hostile_files import peak_rss

    convert_to_checkpoint([TINY_DDM_KERAS, TINY_REGRESSOR_KERAS], tmp_path / "ckpt")
    run = peak_rss(_hostile_inputs(tmp_path, tmp_path / "ckpt")[case])
    print(f"{case}: peak RSS {run['peak_kib'] / 1024:.0f} MiB")
    assert run["returncode"] == 2, run["stderr"]
    lines = run["stderr"].strip().splitlines()  # prepare reports each bad file, then that nothing was read
    assert "Traceback" not in run["stderr"] and lines[-1].startswith("ddm-jax "), run["stderr"]
    assert any("declares" in line or "promises" in line for line in lines), run["stderr"]
    assert run["peak_kib"] < 1 << 20  # 1 GiB: the bound is 2
    assert not (tmp_path / "out.npz").exists() and not (tmp_path / "prepared_out.npz").exists()


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
