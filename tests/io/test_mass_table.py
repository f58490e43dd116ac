"""`--mass-table` (ddm_jax.io.mass_table): CSV and FITS tables joined on PREPARED survey_id, by
survey_id or by SDSS plate-MJD-fiber, and the refusals: missing rows, bad masses, repeated ids,
tables without the columns."""

import numpy as np
import pytest
from astropy.table import Table

from ddm_jax.errors import DDMError
from ddm_jax.io.mass_table import join_masses, read_mass_table

SURVEY_IDS = ["sdss:266-51602-3", "sdss:266-51602-9", "desi:39627652595714901"]
LOG_MASS = [10.25, 9.5, 10.75]


def write_csv(path, rows, header="survey_id,log_stellar_mass"):
    path.write_text("\n".join([header, *(",".join(map(str, row)) for row in rows)]) + "\n")
    return path


def test_csv_by_survey_id_joins_in_the_spectra_order(tmp_path):
    table = read_mass_table(write_csv(tmp_path / "m.csv", zip(SURVEY_IDS, LOG_MASS)))
    order = [2, 0, 1]
    np.testing.assert_array_equal(join_masses(table, [SURVEY_IDS[i] for i in order], "here"),
                                  [LOG_MASS[i] for i in order])


def test_fits_by_plate_mjd_fiber_as_mpa_jhu_names_them(tmp_path):
    path = tmp_path / "mpajhu.fits"
    Table({"PLATEID": [266, 266, 267], "MJD": [51602, 51602, 51608], "FIBERID": [3, 9, 1],
           "LGM_FIB_TOT_P50": np.array([10.25, 9.5, -9999.0], np.float32)}).write(path)
    table = read_mass_table(path)
    np.testing.assert_allclose(join_masses(table, SURVEY_IDS[:2], "here"), LOG_MASS[:2])


def test_fits_by_survey_id(tmp_path):
    path = tmp_path / "m.fits"
    Table({"survey_id": SURVEY_IDS, "log_stellar_mass": LOG_MASS}).write(path)
    np.testing.assert_allclose(join_masses(read_mass_table(path), SURVEY_IDS[::-1], "here"), LOG_MASS[::-1])


def test_rows_not_found_are_refused_naming_the_first(tmp_path):
    table = read_mass_table(write_csv(tmp_path / "m.csv", zip(SURVEY_IDS[:1], LOG_MASS[:1])))
    with pytest.raises(DDMError, match=r"2 of 3 spectra have no row.*sdss:266-51602-9"):
        join_masses(table, SURVEY_IDS, "here")
    with pytest.raises(DDMError, match="without a survey_id"):
        join_masses(table, [""], "here")


@pytest.mark.parametrize("value", ["nan", "-9999", "0", "", "inf"])
def test_bad_masses_are_refused_where_a_spectrum_asks_for_them(tmp_path, value):
    rows = [(SURVEY_IDS[0], LOG_MASS[0]), (SURVEY_IDS[1], value)]
    table = read_mass_table(write_csv(tmp_path / "m.csv", rows))
    np.testing.assert_array_equal(join_masses(table, SURVEY_IDS[:1], "here"), LOG_MASS[:1])  # unused: no matter
    with pytest.raises(DDMError, match=r"NaN, infinite or not positive \(first: sdss:266-51602-9"):
        join_masses(table, SURVEY_IDS[:2], "here")


@pytest.mark.parametrize(("text", "message"), [
    ("id,mass\nsdss:1-2-3,10\n", "needs an id column"),
    ("survey_id,log_stellar_mass\nsdss:1-2-3,10\nsdss:1-2-3,11\n", "appears more than once"),
    ("survey_id,log_stellar_mass\nsdss:1-2-3,ten\n", "bad mass table"),
    ("survey_id,log_stellar_mass\nsdss:1-2-3\n", "row 2 has 1 fields"),
    ("", "empty mass table"),
])
def test_unusable_tables_are_refused(tmp_path, text, message):
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(DDMError, match=message):
        read_mass_table(tmp_path / "m.csv")


def test_a_missing_file_or_a_fits_file_without_a_table(tmp_path):
    with pytest.raises(DDMError, match="cannot read the mass table"):
        read_mass_table(tmp_path / "absent.csv")
    from astropy.io import fits

    fits.PrimaryHDU(np.zeros(3)).writeto(tmp_path / "image.fits")
    with pytest.raises(DDMError, match="no table HDU"):
        read_mass_table(tmp_path / "image.fits")
