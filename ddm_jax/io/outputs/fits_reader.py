"""Reading a FITS catalogue back (`FitsOutput`): the layout card checked against the file when it
opens, then the arrays of the `.npz` it was written from, bit for bit, a block of rows at a time."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np

from ddm_jax.constants import wavelength_grid
from ddm_jax.errors import DDMError, InputError, first_line
from ddm_jax.io.fits import check_fits_structure
from ddm_jax.io.outputs.base import OutputReader
from ddm_jax.io.outputs.layout import wcs_wavelength
from ddm_jax.schema import CATALOG_FORMAT, PROVENANCE_CARDS


class FitsOutput(OutputReader):
    """A catalogue written by `write_fits`, memory-mapped: rows are read as they are asked for."""

    def __init__(self, path):
        from astropy.io import fits

        self.path = Path(path)
        check_fits_structure(self.path)  # what the headers declare lies within the file
        with warnings.catch_warnings(record=True) as caught:  # astropy only warns of a damaged file
            warnings.simplefilter("always")
            try:
                self._hdul = fits.open(self.path, memmap=True, mode="readonly")
                self._hdul.readall()
                primary = self._hdul[0].header
            except (OSError, ValueError, IndexError, fits.VerifyError) as err:
                if hasattr(self, "_hdul"):
                    self._hdul.close()
                raise InputError(f"{path}: unreadable FITS file ({first_line(err)})") from None
        try:  # a refused file is closed
            self._read_primary(primary, [w for w in caught if issubclass(w.category, fits.verify.VerifyWarning)])
        except DDMError:
            self._hdul.close()
            raise

    def _read_primary(self, primary, damaged: list) -> None:
        from astropy.io import fits

        path = self.path
        if damaged:
            raise InputError(f"{path}: damaged FITS file ({first_line(damaged[0].message)})")
        if primary.get("DDMFORM") != CATALOG_FORMAT:
            raise InputError(f"{path}: not a ddm-jax catalogue (DDMFORM is {primary.get('DDMFORM')!r}, "
                             f"expected {CATALOG_FORMAT!r}); `ddm-jax export` writes one")
        try:
            layout = json.loads(primary["DDMLAYOU"])
            self._layout, self.shared, self.rows = layout["arrays"], layout["shared"], layout["rows"]
            self._check_layout()
        except (KeyError, TypeError, ValueError, AttributeError, fits.VerifyError) as err:
            raise InputError(f"{path}: damaged layout card DDMLAYOU ({type(err).__name__}: {err})") from None
        self.keys = tuple(self._layout)
        self.provenance = {name: primary[card] for name, (card, _) in PROVENANCE_CARDS.items() if card in primary}
        self.wavelength = wavelength_grid()

    def _check_layout(self) -> None:
        """The layout against the file: every HDU and column it names exists with the declared
        shapes, so that reads cannot fail later (a damaged file is refused at open)."""
        if not isinstance(self.rows, int) or self.rows < 0 or not isinstance(self._layout, dict):
            raise ValueError("rows must be a count and arrays an object")
        if not (isinstance(self.shared, dict) and set(self.shared) <= {"line_names", "format"}
                and all(isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v))
                        for v in self.shared.values())):
            raise ValueError("shared holds line_names and format, as text")
        n_bins = len(wavelength_grid())
        for key, entry in self._layout.items():
            shape, dtype, columns = tuple(entry["shape"]), np.dtype(entry["dtype"]), entry["columns"]
            if not all(isinstance(n, int) and n >= 0 for n in shape) or dtype.kind not in "fiubU":
                raise ValueError(f"{key}: shape {shape}, dtype {dtype}")
            hdu = self._hdu(entry["hdu"], key)
            if key == "wcs":
                if hdu.header.get("NAXIS") != 1 or hdu.header.get("BITPIX") != 8:
                    raise ValueError(f"{entry['hdu']} is not a byte string")
            elif columns is None:
                header = hdu.header
                if (header.get("NAXIS"), header.get("NAXIS1"), header.get("NAXIS2"), shape) != (
                        2, n_bins, self.rows, (n_bins,)):
                    raise ValueError(f"{entry['hdu']}: not ({self.rows}, {n_bins}) spectra")
                wave = wcs_wavelength(header, n_bins)
                if not np.allclose(wave, wavelength_grid()):
                    raise ValueError(f"{entry['hdu']}'s wavelength WCS is not the rest-frame grid")
            else:
                table_columns = getattr(hdu, "columns", None)
                if table_columns is None or hdu.header.get("NAXIS2") != self.rows:
                    raise ValueError(f"{entry['hdu']}: not a table of {self.rows} rows")
                missing = set(columns) - set(table_columns.names)
                if missing or not columns:
                    raise ValueError(f"{key}: columns {sorted(missing) or columns} are not in {entry['hdu']}")
                values = sum(1 if dtype.kind == "U" else table_columns[c].format.repeat for c in columns)
                if values != math.prod(shape):  # a text column holds one string per row
                    raise ValueError(f"{key}: {values} values per row in its columns, shape {shape}")

    def _hdu(self, name: str, key: str):
        try:
            return self._hdul[name]
        except KeyError:
            raise InputError(f"{self.path}: HDU {name} (for {key}) is missing") from None

    def shape(self, key):
        return (self.rows,) + tuple(self._layout[key]["shape"])

    def dtype(self, key):
        return np.dtype(self._layout[key]["dtype"])

    def read(self, key, start=0, stop=None):
        from astropy.io.fits import VerifyError

        try:
            return self._read(key, start, stop)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, OSError, VerifyError) as err:
            raise InputError(f"{self.path}: cannot read {key} ({type(err).__name__}: {str(err)[:200]})") from None

    def _read(self, key, start, stop):
        entry = self._layout[key]
        stop = self.rows if stop is None else min(stop, self.rows)
        hdu = self._hdu(entry["hdu"], key)
        if key == "wcs":  # one header per source file, looked up by each row's source
            by_source = json.loads(np.asarray(hdu.data).tobytes().decode())
            return np.array([str(by_source.get(s, "")) for s in self._read("source", start, stop)], dtype=str)
        if entry["columns"] is None:
            values = np.asarray(hdu.section[start:stop])
        else:
            data = hdu.data[start:stop]
            values = np.stack([np.asarray(data[c]) for c in entry["columns"]], axis=-1) \
                if len(entry["columns"]) > 1 or entry["split"] else np.asarray(data[entry["columns"][0]])
        values = values.astype(entry["dtype"])
        return values.reshape((stop - start,) + tuple(entry["shape"]))

    def close(self) -> None:
        self._hdul.close()
