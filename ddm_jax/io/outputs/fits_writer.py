"""Outputs as astronomers' files: FITS catalogues written a block of rows at a time, read back
into the arrays of an `.npz`, and astropy Tables (docs/fits.md).

Every output of `decompose` (an `.npz`, a folder, a `.fits` catalogue) and of `prepare` opens
with `open_output` as one reader: `rows`, `keys`, `shape(key)`, `read(key, start, stop)`,
`wavelength`, `provenance`. `write_fits(path, reader)` turns any of them into a FITS file:

  HDU 0 PRIMARY   provenance cards, the BPT class coding, the layout (how to read the arrays back)
  HDU 1 CATALOG   a binary table, one row per spectrum: survey ids, numbers and flags, units
  images          one per spectrum-shaped array (SF_SPECTRUM, AGN_SPECTRUM, RESIDUAL, ...):
                  (rows, 2208) with a linear rest-frame wavelength WCS on axis 1
  maps            per MaNGA cube: <plateifu>_SF_FRACTION and <plateifu>_BPT on the cube's
                  celestial WCS
  SOURCES         the input files and their celestial WCS headers (where the input had any)

so that `astropy.table.Table.read(OUT.fits)` is the catalogue and `read_arrays(OUT.fits)` the
`.npz`'s arrays, bit for bit.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from ddm_jax.constants import WAVELENGTH_STEP
from ddm_jax.io.fits import FITS_BLOCK
from ddm_jax.io.outputs.base import BLOCK_BYTES, BLOCK_ROWS, OutputReader
from ddm_jax.io.outputs.layout import Column, id_columns, plan_layout, string_width, table_columns
from ddm_jax.io.safe import write_atomic
from ddm_jax.model.bpt import CLASS_NAMES, UNDEFINED
from ddm_jax.schema import CATALOG, CATALOG_FORMAT, PROVENANCE_CARDS, SOURCES, SPECTRUM_UNITS


def _padding(nbytes: int) -> bytes:
    return b"\0" * (-nbytes % FITS_BLOCK)


def _header_bytes(header) -> bytes:
    return header.tostring().encode("ascii")


def _set_card(header, keyword: str, value, comment: str = "") -> None:
    """A card with as much of `comment` as fits on it (astropy would warn and cut it)."""
    from astropy.io.fits import Card

    bare = max(len(str(Card(keyword, value)).rstrip()), 30)  # a comment starts at column 32 at the earliest
    header[keyword] = (value, comment[:max(80 - bare - 3, 0)] if bare <= 80 else "")


def _primary_header(reader: OutputReader, layout: dict, provenance: dict):
    from astropy.io import fits

    header = fits.PrimaryHDU().header
    header["DDMFORM"] = (CATALOG_FORMAT, "ddm-jax catalogue format (docs/fits.md)")
    for name, value in provenance.items():
        card, comment = PROVENANCE_CARDS.get(name, (None, None))
        if card is not None:
            _set_card(header, card, value if isinstance(value, bool | int | float) else str(value), comment)
    for code, name in CLASS_NAMES.items():
        header[f"BPTCLA{code + 1:02d}"] = (f"{code} = {name}", "BPT class coding (the *_bpt_class columns)")
    header["NROWS"] = (reader.rows, "spectra: rows of CATALOG and of each image")
    shared = {k: (np.asarray(v).tolist()) for k, v in reader.shared.items()}
    header["DDMLAYOU"] = (json.dumps({"rows": reader.rows, "arrays": layout, "shared": shared},
                                     separators=(",", ":")), "how read_arrays rebuilds the arrays")
    header.add_comment("Written by ddm-jax; astropy.table.Table.read(file) is the catalogue (HDU 1).")
    return header


def _image_header(key: str, dtype: np.dtype, rows: int, n_bins: int, wavelength: np.ndarray):
    from astropy.io import fits

    header = fits.ImageHDU(data=np.zeros((1, n_bins), dtype.newbyteorder(">")), name=key.upper()).header
    header["NAXIS2"] = rows
    step = float(wavelength[1] - wavelength[0]) if n_bins > 1 else WAVELENGTH_STEP
    header["WCSAXES"] = (2, "axis 1: rest wavelength; axis 2: row of CATALOG")
    header["CTYPE1"] = ("WAVE", "vacuum wavelength")
    header["CUNIT1"] = ("Angstrom", "")
    header["CRPIX1"], header["CRVAL1"], header["CDELT1"] = 1.0, float(wavelength[0]), step
    header["CTYPE2"], header["CRPIX2"], header["CRVAL2"], header["CDELT2"] = "", 1.0, 1.0, 1.0
    header["SPECSYS"] = ("SOURCE", "rest frame of each galaxy")
    header["BUNIT"] = ("", SPECTRUM_UNITS.get(key.removesuffix("_std"), "DDM normalised flux (docs/model.md)"))
    return header


def _maps(reader: OutputReader, wcs_by_source: dict[str, str]) -> list:
    """(image, header) per MaNGA cube: SF fraction and [NII] BPT class on its celestial WCS.

    Only outputs of a PREPARED input have cubes (a source with a WCS), and those are held in memory,
    so the per-spectrum columns are read whole here."""
    from astropy.io import fits

    cubes = [name for name, wcs in wcs_by_source.items() if wcs]
    if not cubes or not all(k in reader.keys for k in ("position", "sf_fraction", "bpt_class")):
        return []
    source, position = reader.read("source"), reader.read("position")
    sf_fraction, bpt_class = reader.read("sf_fraction"), reader.read("bpt_class")[:, 0]
    names, which = np.unique(source, return_inverse=True)
    maps = []
    for cube in cubes:
        rows = np.flatnonzero((which == np.searchsorted(names, cube)) & (position[:, 1] >= 0))
        if not rows.size:
            continue
        header = fits.Header.fromstring(wcs_by_source[cube])
        x, y = position[rows, 0], position[rows, 1]
        nx, ny = header.get("NAXIS1", int(x.max()) + 1), header.get("NAXIS2", int(y.max()) + 1)
        first = reader.read("ids", rows[0], rows[0] + 1)[0] if "ids" in reader.keys else cube
        name = str(first).partition("#")[0]
        fraction = np.full((ny, nx), np.nan, np.float32)
        fraction[y, x] = sf_fraction[rows]
        classes = np.full((ny, nx), UNDEFINED, np.int16)
        classes[y, x] = bpt_class[rows]
        for suffix, image, comment in (("SF_FRACTION", fraction, "SF fraction; NaN: not decomposed"),
                                       ("BPT", classes, "[NII] BPT class of the spectrum; -1: none")):
            map_header = header.copy()
            for card in ("NAXIS1", "NAXIS2"):
                map_header.remove(card, ignore_missing=True)
            map_header["EXTNAME"] = f"{name}_{suffix}"
            map_header["BUNIT"] = ("", comment)
            map_header["SOURCE"] = (Path(str(cube)).name, "the cube")
            maps.append((image, map_header))
    return maps


def _described_columns_comments(columns: list[Column]) -> list[str]:
    """The COMMENT cards in which astropy keeps column descriptions (its serialized-columns YAML), so
    that `Table.read` gives each column its description back."""
    from astropy.io import fits
    from astropy.table import Table

    described = Table()
    for column in columns:
        described[column.name] = np.zeros((0,) + ((column.repeat,) if column.repeat > 1 else ()), column.stored)
        described[column.name].description = column.description
    buffer = io.BytesIO()  # Table.write, not table_to_hdu, is what serializes descriptions
    described.write(buffer, format="fits")
    buffer.seek(0)
    with fits.open(buffer) as hdul:
        return list(hdul[1].header.get("COMMENT", []))


def write_fits(path, reader: OutputReader, progress=None) -> Path:
    """Write `reader`'s output as a FITS catalogue (module docstring), `BLOCK_ROWS` rows at a time,
    atomically; returns the path."""
    from astropy.io import fits

    layout = plan_layout(reader)
    widths = {k: string_width(reader, k) for k in reader.keys
              if reader.dtype(k).kind == "U" and layout[k]["hdu"] == CATALOG}
    identifier_columns, ids = id_columns(reader)
    columns = identifier_columns + table_columns(reader, layout, widths)
    record = np.dtype([c.record_field() for c in columns])
    table_header = fits.BinTableHDU.from_columns([c.fits_column() for c in columns], nrows=0, name=CATALOG).header
    if table_header["NAXIS1"] != record.itemsize:
        raise AssertionError(f"row layout {record.itemsize} bytes, FITS says {table_header['NAXIS1']}")
    table_header["NAXIS2"] = reader.rows
    for i, column in enumerate(columns, start=1):
        if column.description:
            _set_card(table_header, f"TTYPE{i}", column.name, column.description)
        if column.name in ids and column.letter in "IJK":
            table_header[f"TNULL{i}"] = -1
    for line in _described_columns_comments(columns):
        table_header.add_comment(line)
    images = [k for k, e in layout.items() if e["columns"] is None]
    n_bins = reader.wavelength.shape[0]
    sources, by_source = None, {}
    if "wcs" in reader.keys:  # JSON {source: WCS header} as bytes: an image, so the file has one table
        by_source = dict(zip(reader.read("source").tolist(), reader.read("wcs").tolist()))
        sources = fits.ImageHDU(np.frombuffer(json.dumps(by_source).encode(), np.uint8), name=SOURCES)
        sources.header.add_comment("UTF-8 JSON: each input file's celestial WCS header ('' if none)")
    total = reader.rows * (1 + len(images))
    done = 0

    def write(f):
        nonlocal done
        f.write(_header_bytes(_primary_header(reader, layout, reader.provenance)))
        f.write(_header_bytes(table_header))
        for lo in range(0, reader.rows, BLOCK_ROWS):
            hi = min(lo + BLOCK_ROWS, reader.rows)
            rows = np.zeros(hi - lo, record)
            blocks = {k: reader.read(k, lo, hi) for k in dict.fromkeys(c.key for c in columns) if k not in ids}
            for column in columns:
                rows[column.name] = column.encode(ids[column.key][lo:hi] if column.key in ids else blocks[column.key])
            f.write(rows.tobytes())
            done += hi - lo
            if progress is not None:
                progress(done, total)
        f.write(_padding(record.itemsize * reader.rows))
        for key in images:
            dtype = reader.dtype(key)
            f.write(_header_bytes(_image_header(key, dtype, reader.rows, n_bins, reader.wavelength)))
            block_rows = max(1, BLOCK_BYTES // (dtype.itemsize * n_bins))
            for lo in range(0, reader.rows, block_rows):
                block = reader.read(key, lo, lo + block_rows)
                f.write(np.ascontiguousarray(block, dtype.newbyteorder(">")).tobytes())
                done += block.shape[0]
                if progress is not None:
                    progress(done, total)
            f.write(_padding(dtype.itemsize * n_bins * reader.rows))
        for image, header in _maps(reader, by_source):
            hdu = fits.ImageHDU(image, header=header)
            f.write(_header_bytes(hdu.header))
            f.write(np.ascontiguousarray(image, image.dtype.newbyteorder(">")).tobytes())
            f.write(_padding(image.nbytes))
        if sources is not None:
            f.write(_header_bytes(sources.header))
            f.write(sources.data.tobytes())
            f.write(_padding(sources.data.nbytes))

    return write_atomic(path, write)
