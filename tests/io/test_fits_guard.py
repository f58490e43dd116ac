"""The guarded FITS open (io.fits): every HDU is checked against the file's length (the decompressed
length of a gzipped file) before astropy reads it, repeated structural cards and unnamed table columns
are refused, and memory is a last bound."""

import gzip
from pathlib import Path

import numpy as np
import pytest

import ddm_jax
import ddm_jax.io.safe as ddm_io
from ddm_jax.errors import DDMError
from ddm_jax.io.loaders.registry import read_any
from hostile_files import with_card
from spectra_helpers import STRONG, ppxf_sdss_path

fits = pytest.importorskip("astropy.io.fits")
REAL = Path(ddm_jax.__file__).parent / "data" / "real_spectra"


def test_sdss_table_declaring_more_rows_than_the_file_holds(tmp_path):
    raw = ppxf_sdss_path(STRONG).read_bytes()
    coadd = raw.index(b"EXTNAME = 'COADD")
    header_start = raw.rindex(b"XTENSION", 0, coadd)
    path = tmp_path / "spec-huge.fits"
    path.write_bytes(raw[:header_start] + with_card(raw[header_start:], "NAXIS2", 10**9))
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
    path.write_bytes(gzip.compress(with_card(raw, "NAXIS", 2)[:2880] + raw[2880:]))  # primary claims 2 axes
    with pytest.raises(DDMError, match=r"spec-huge.fits.gz: "):
        read_any(path)
    # a gzipped cube whose FLUX declares more planes than the decompressed stream holds
    cube = tmp_path / "cube.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((4, 3, 3), np.float32), name="FLUX")]).writeto(cube)
    raw = cube.read_bytes()
    start = raw.rindex(b"XTENSION", 0, raw.index(b"EXTNAME = 'FLUX"))
    raw = raw[:start] + with_card(raw[start:], "NAXIS3", 4000)
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
    path.write_bytes(raw[:second] + with_card(raw[second:], "NAXIS3", 10**7))
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
