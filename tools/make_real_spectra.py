"""Rebuild ddm_jax/data/real_spectra/ from the two wheels that ship the real spectra (see PROVENANCE.md).

    pip download --no-deps fastspecfit==3.6.1 sdss-mangadap==4.5.0 -d wheels/
    python tools/make_real_spectra.py wheels/fastspecfit-3.6.1-py3-none-any.whl \\
        wheels/sdss_mangadap-4.5.0-py3-none-any.whl

Nothing is fetched: the files are read from inside the wheels (zip archives), checked against
the SHA-256 in PROVENANCE.md, trimmed and written gzip-compressed with a zero timestamp, so that
a rebuild gives the committed bytes.

  DESI coadds: PRIMARY header as it is, FIBERMAP with TARGETID and EBV only, <ARM>_WAVELENGTH/
    _FLUX/_IVAR/_MASK/_RESOLUTION for B, R, Z as they are (EXP_FIBERMAP and SCORES dropped).
  DESI redrock files: PRIMARY header, REDSHIFTS with TARGETID, Z, ZWARN, SPECTYPE.
  MaNGA DAP test spectra: every HDU as it is (SRES, the spectral resolution, included).
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

from ddm_jax.io.safe import sha256_file

HERE = Path(__file__).resolve().parent.parent / "ddm_jax" / "data" / "real_spectra"  # where they ship
WHEELS = {
    "fastspecfit": ("fastspecfit-3.6.1-py3-none-any.whl",
                    "d4ad9053f40603a1d44c43508da681f4563120971fe8f2dc8c3a630a43a25133"),
    "mangadap": ("sdss_mangadap-4.5.0-py3-none-any.whl",
                 "b8478bb24c32fe736fa6a2881805458719281862313838f8b032f3c10527ff34"),
}
DESI_DIR = "fastspecfit/test/data/"
DESI_STEMS = ("4-80613-thru20210324", "special-dark-27247")
DESI_ARMS = ("B", "R", "Z")
DESI_IMAGES = ("WAVELENGTH", "FLUX", "IVAR", "MASK", "RESOLUTION")
FIBERMAP_COLUMNS = ("TARGETID", "EBV")  # the target, and the Galactic E(B-V) prepare corrects for
REDROCK_COLUMNS = ("TARGETID", "Z", "ZWARN", "SPECTYPE")
MANGA_DIR = "mangadap/data/tests/"
MANGA_FILES = ("MaNGA_test_spectra.fits.gz", "MaNGA_multicomp_test_spectra.fits.gz")
DROPPED_CARDS = ("CHECKSUM", "DATASUM")


def open_member(wheel: zipfile.ZipFile, name: str) -> fits.HDUList:
    data = wheel.read(name)
    if name.endswith(".gz"):
        data = gzip.decompress(data)
    return fits.open(io.BytesIO(data), memmap=False)


def clean(header: fits.Header) -> fits.Header:
    header = header.copy()
    for key in DROPPED_CARDS:
        header.remove(key, ignore_missing=True, remove_all=True)
    return header


def image(hdu) -> fits.ImageHDU:
    return fits.ImageHDU(data=np.asarray(hdu.data), header=clean(hdu.header), name=hdu.name)


def table(hdu, columns: tuple[str, ...]) -> fits.BinTableHDU:
    kept = [c for c in hdu.columns if c.name in columns]
    return fits.BinTableHDU.from_columns(
        [fits.Column(name=c.name, format=c.format, array=hdu.data[c.name]) for c in kept], name=hdu.name)


def write_gz(hdul: fits.HDUList, path: Path) -> None:
    buffer = io.BytesIO()
    hdul.writeto(buffer)
    path.write_bytes(gzip.compress(buffer.getvalue(), compresslevel=9, mtime=0))
    print(f"wrote {path} ({path.stat().st_size} bytes)")


def desi(wheel: zipfile.ZipFile, out: Path) -> None:
    for stem in DESI_STEMS:
        with open_member(wheel, f"{DESI_DIR}coadd-{stem}.fits") as src:
            hdus = [fits.PrimaryHDU(header=clean(src[0].header)), table(src["FIBERMAP"], FIBERMAP_COLUMNS)]
            hdus += [image(src[f"{arm}_{kind}"]) for arm in DESI_ARMS for kind in DESI_IMAGES]
            write_gz(fits.HDUList(hdus), out / f"coadd-{stem}.fits.gz")
        with open_member(wheel, f"{DESI_DIR}redrock-{stem}.fits") as src:
            hdus = [fits.PrimaryHDU(header=clean(src[0].header)), table(src["REDSHIFTS"], REDROCK_COLUMNS)]
            write_gz(fits.HDUList(hdus), out / f"redrock-{stem}.fits.gz")


def manga(wheel: zipfile.ZipFile, out: Path) -> None:
    for name in MANGA_FILES:
        with open_member(wheel, MANGA_DIR + name) as src:
            hdus = [fits.PrimaryHDU(header=clean(src[0].header))]
            hdus += [image(hdu) for hdu in src[1:]]
            write_gz(fits.HDUList(hdus), out / name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fastspecfit_wheel", type=Path, help=WHEELS["fastspecfit"][0])
    parser.add_argument("mangadap_wheel", type=Path, help=WHEELS["mangadap"][0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write (default: ddm_jax/data/real_spectra)")
    args = parser.parse_args(argv)
    for key, path in (("fastspecfit", args.fastspecfit_wheel), ("mangadap", args.mangadap_wheel)):
        found = sha256_file(path)
        if found != WHEELS[key][1]:
            print(f"{path}: SHA-256 {found}, expected {WHEELS[key][1]} ({WHEELS[key][0]})", file=sys.stderr)
            return 1
    args.out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(args.fastspecfit_wheel) as wheel:
        desi(wheel, args.out)
    with zipfile.ZipFile(args.mangadap_wheel) as wheel:
        manga(wheel, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
