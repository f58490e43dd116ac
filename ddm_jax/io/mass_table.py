"""A table of stellar masses joined to PREPARED spectra by their `survey_id` (`decompose --mass-table`).

    from ddm_jax.io.mass_table import read_mass_table, join_masses
    table = read_mass_table("mpajhu_masses.fits")         # {'sdss:266-51602-3': 10.21, ...}
    log_mass = join_masses(table, prepared["survey_id"], "mpajhu_masses.fits")   # (B,) log10 M_sun

A CSV file (with a header) or a FITS binary table (its first table HDU). Columns, case-insensitive:
an id, either `survey_id` (as PREPARED writes it: 'sdss:PLATE-MJD-FIBERID', 'desi:TARGETID',
'manga:PLATE-IFU') or, for SDSS, PLATEID, MJD, FIBERID (as MPA-JHU's gal_info has them); and a
log10 stellar mass in M_sun, `log_stellar_mass` or MPA-JHU's LGM_FIB_TOT_P50 (the fibre's mass,
median of the likelihood). Rows that no spectrum asks for are not checked (MPA-JHU marks missing
masses -9999); an id that appears twice is refused.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from ddm_jax.errors import DDMError, InputError, first_line
from ddm_jax.io.fits import column_names, read_fits_guarded

ID_COLUMN = "survey_id"
SDSS_ID_COLUMNS = ("plateid", "mjd", "fiberid")
MASS_COLUMNS = ("log_stellar_mass", "lgm_fib_tot_p50")  # log10 M_sun, the first one present is used
MAX_LINE = 4096  # characters in one CSV line: an id and a few numbers need far fewer


def _pick(path: Path, names: list[str]) -> tuple[list[str], str]:
    """The id columns and the mass column among `names` (lower case), or a DDMError saying what is needed."""
    mass = next((name for name in MASS_COLUMNS if name in names), None)
    ids = [ID_COLUMN] if ID_COLUMN in names else [n for n in SDSS_ID_COLUMNS if n in names]
    if mass is None or ids not in ([ID_COLUMN], list(SDSS_ID_COLUMNS)):
        raise InputError(f"{path}: a mass table needs an id column ({ID_COLUMN}, or {', '.join(SDSS_ID_COLUMNS)}) "
                         f"and a mass column ({' or '.join(MASS_COLUMNS)}, log10 M_sun); it has "
                         f"{', '.join(names[:12]) or 'none'}")
    return ids, mass


def _survey_ids(ids: list[str], columns: dict[str, np.ndarray]) -> list[str]:
    if ids == [ID_COLUMN]:
        return [str(value).strip() for value in columns[ID_COLUMN]]
    plate, mjd, fiber = (np.asarray(columns[name]).astype(np.int64) for name in SDSS_ID_COLUMNS)
    return [f"sdss:{p}-{m}-{f}" for p, m, f in zip(plate, mjd, fiber)]


def _read_csv(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="") as handle:
        lines = iter(lambda: handle.readline(MAX_LINE + 1), "")
        rows = [fields for fields in csv.reader(lines) if fields and not fields[0].lstrip().startswith("#")]
    if any(len(field) > MAX_LINE for row in rows for field in row):
        raise InputError(f"{path}: a field longer than {MAX_LINE} characters; not a mass table")
    if not rows:
        raise InputError(f"{path}: empty mass table")
    header = [name.strip().lower() for name in rows[0]]
    for number, fields in enumerate(rows[1:], start=2):
        if len(fields) != len(header):
            raise InputError(f"{path}: row {number} has {len(fields)} fields, the header {len(header)}")
    return {name: np.array([fields[i] for fields in rows[1:]], dtype=str) for i, name in enumerate(header)}


def _read_fits(path: Path) -> dict[str, np.ndarray]:
    def parse(hdul):
        table = next((hdu for hdu in hdul[1:] if column_names(hdu)), None)
        if table is None:
            raise InputError(f"{path}: no table HDU (a mass table is a FITS binary table)")
        names = column_names(table)
        return {name.lower(): np.asarray(table.data[name]) for name in names}

    return read_fits_guarded(path, parse)


def _numbers(column: np.ndarray) -> np.ndarray:
    """A column as float64; an empty CSV field is NaN (refused only if a spectrum asks for it)."""
    if column.dtype.kind != "U":
        return column.astype(np.float64)
    return np.array([float(value) if value.strip() else np.nan for value in column], np.float64)


def read_mass_table(path: str | os.PathLike) -> dict[str, float]:
    """survey_id -> log10 stellar mass (M_sun) from a CSV or FITS table (module docstring).
    A DDMError names the file when it is unreadable, lacks the columns or repeats an id."""
    path = Path(path)
    try:
        columns = _read_fits(path) if path.name.lower().endswith((".fits", ".fit", ".fits.gz")) else _read_csv(path)
        ids, mass = _pick(path, list(columns))
        keys = _survey_ids(ids, columns)
        values = _numbers(columns[mass])
    except DDMError:
        raise
    except OSError as err:
        raise InputError(f"{path}: cannot read the mass table ({err.strerror or first_line(err)})") from None
    except (ValueError, TypeError, csv.Error) as err:
        raise InputError(f"{path}: bad mass table ({first_line(err)})") from None
    table = dict(zip(keys, values.tolist()))
    if len(table) != len(keys):
        seen: set[str] = set()
        repeated = next(key for key in keys if key in seen or seen.add(key))
        raise InputError(f"{path}: {repeated!r} appears more than once; one mass per spectrum")
    return table


def join_masses(table: dict[str, float], survey_ids, where: str) -> np.ndarray:
    """(B,) float64 log10 masses of the spectra with these survey ids (PREPARED `survey_id`), in
    their order. A DDMError, naming the first offender and how many there are, when a spectrum
    has no survey id or no row in the table, or its mass is NaN, infinite or not positive."""
    survey_ids = [str(key) for key in survey_ids]
    missing = [key for key in survey_ids if key not in table]
    if missing:
        first = missing[0] or "(a spectrum without a survey_id)"
        raise InputError(f"{where}: {len(missing)} of {len(survey_ids)} spectra have no row in the mass table "
                         f"(first: {first}); it is joined on PREPARED survey_id")
    log_mass = np.array([table[key] for key in survey_ids], np.float64)
    bad = np.flatnonzero(~(np.isfinite(log_mass) & (log_mass > 0)))
    if bad.size:
        raise InputError(f"{where}: {bad.size} of the masses joined are NaN, infinite or not positive (first: "
                         f"{survey_ids[bad[0]]}, log10 mass {log_mass[bad[0]]}); a mass table holds log10 M_sun")
    return log_mass
