"""FITS catalogues: npz <-> FITS <-> Table round trips, verification, WCS, survey ids, MaNGA maps,
the streamed export of a 20,000-row folder, and bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import TINY_DDM_KERAS, TINY_REGRESSOR_KERAS, random_spectra
from ddm_jax.cli import main
from ddm_jax.constants import LINE_QUANTITIES, wavelength_grid
from ddm_jax.errors import DDMError
from ddm_jax.evaluation.demo import bundled
from ddm_jax.inference.decomposer import Decomposer
from ddm_jax.io.outputs import fits_writer
from ddm_jax.io.outputs.base import BLOCK_BYTES, BLOCK_ROWS, FolderOutput
from ddm_jax.io.outputs.files import export, open_output, read_arrays, write_output
from ddm_jax.io.outputs.table import catalog_table
from ddm_jax.model import bpt
from ddm_jax.schema import DESCRIPTIONS, FRAME_KEYS, MASS_LOG10, PARTS, PREPARED_MASS_KEYS
from spectra_helpers import NX, NY, STRONG, cube_header, cube_masks, ppxf_sdss_path, write_cube

fits = pytest.importorskip("astropy.io.fits", reason="FITS catalogues need astropy")
from astropy.table import Table  # noqa: E402
from astropy.wcs import WCS  # noqa: E402

SURVEY_ROWS = 20_000  # the streamed folder
EXPORT_EXTRA_MIB = 200  # export's peak memory above a process that only opens the folder (the data: 508 MiB)
DESI_COADD = bundled("real_spectra/coadd-4-80613-thru20210324.fits.gz")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "ckpt"
    assert main(["convert", str(TINY_DDM_KERAS), str(TINY_REGRESSOR_KERAS), "-o", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def example(checkpoint, tmp_path_factory):
    """The bundled example spectra decomposed into OUT.npz and OUT.fits by the command line."""
    root = tmp_path_factory.mktemp("example")
    spectra = np.load(bundled("example_spectra.npz"))
    np.save(root / "spectra.npy", spectra["flux"])
    np.save(root / "mass.npy", spectra["mass"])
    for name in ("out.npz", "out.fits"):
        assert main(["decompose", str(root / "spectra.npy"), "--mass", str(root / "mass.npy"), "--weights",
                     str(checkpoint), "-o", str(root / name)]) == 0
    return root


def provenance_without_time(arrays) -> dict:
    provenance = json.loads(str(arrays["provenance"]))
    provenance.pop("created")
    return provenance


def assert_same_arrays(actual: dict, expected: dict, compare_time: bool = True) -> None:
    assert sorted(actual) == sorted(expected)
    for key, value in expected.items():
        if key == "provenance" and not compare_time:
            assert provenance_without_time(actual) == provenance_without_time(expected)
            continue
        if key == "provenance":
            assert json.loads(str(actual[key])) == json.loads(str(value))
            continue
        assert actual[key].dtype == value.dtype, key
        np.testing.assert_array_equal(actual[key], value, err_msg=key)


def test_fits_holds_the_npz_numbers_bit_for_bit(example):
    with np.load(example / "out.npz") as npz:
        expected = dict(npz)
    assert_same_arrays(read_arrays(example / "out.fits"), expected, compare_time=False)


def test_npz_fits_npz_round_trip_through_export(example, tmp_path):
    assert main(["export", str(example / "out.npz"), "-o", str(tmp_path / "a.fits")]) == 0
    assert main(["export", str(tmp_path / "a.fits"), "-o", str(tmp_path / "b.npz")]) == 0
    with np.load(example / "out.npz") as npz, np.load(tmp_path / "b.npz") as back:
        assert_same_arrays(dict(back), dict(npz))


def test_table_read_is_the_catalogue_with_named_columns(example):
    with np.load(example / "out.npz") as npz:
        arrays = dict(npz)
    table = Table.read(example / "out.fits")  # HDU 1, the only table
    for p, part in enumerate(PARTS):
        for q, quantity in enumerate(LINE_QUANTITIES):
            np.testing.assert_array_equal(table[f"{part}_{quantity}"], arrays["line_ratios"][:, p, q])
        np.testing.assert_array_equal(table[f"{part}_bpt_class"], arrays["bpt_class"][:, p])
    for key in ("p_sf", "p_agn", "p_total", "sf_fraction", "trusted"):
        np.testing.assert_array_equal(table[key], arrays[key])
    for key in ("reconstruction_chi2", "ood_score"):  # NaN (no ivar, no calibration) reads back masked
        np.testing.assert_array_equal(np.ma.filled(table[key], np.nan), arrays[key])
    # the same table in memory, without a file
    in_memory = catalog_table(arrays)
    assert in_memory.colnames == table.colnames
    for name in table.colnames:
        np.testing.assert_array_equal(np.ma.filled(in_memory[name], np.nan), np.ma.filled(table[name], np.nan))
        assert in_memory[name].unit == table[name].unit, name
        assert in_memory[name].description == table[name].description, name
    assert table["agn_log_oiii_hb"].description == "log [OIII]5007/Hbeta of the AGN part (DDM)"
    # the masses the network divided by (--mass), described, with where they came from in the header
    np.testing.assert_array_equal(table["mass_used"], np.load(example / "mass.npy").astype(np.float32))
    assert table["mass_used"].description == DESCRIPTIONS["mass_used"]
    with fits.open(example / "out.fits") as hdul:
        assert hdul[0].header["MASSSRC"] == "--mass" and hdul[0].header["MASSCONV"] == MASS_LOG10


def test_fits_verifies_and_carries_provenance_coding_and_wavelength_wcs(example, checkpoint):
    with fits.open(example / "out.fits") as hdul:
        hdul.verify("exception")
        assert [hdu.name for hdu in hdul] == ["PRIMARY", "CATALOG", "SF_SPECTRUM", "AGN_SPECTRUM", "RESIDUAL"]
        primary = hdul[0].header
        decomposer = Decomposer.from_checkpoint(checkpoint)
        assert primary["CKPTSHA"] == decomposer.describe()["params_sha256"]
        assert primary["CHECKPT"] == str(checkpoint.absolute()) and "tiny_ddm_keras.hdf5" in primary["CKPTSRC"]
        assert primary["BPTSCHEM"] == "standard" and primary["DDMCMD"] == "decompose"
        assert primary["INPUT"] == str(example / "spectra.npy") and primary["NORMALIZ"] is True
        coding = {int(v.split(" = ")[0]): v.split(" = ")[1] for k, v in primary.items() if k.startswith("BPTCLA")}
        assert coding == bpt.CLASS_NAMES
        for name in ("SF_SPECTRUM", "AGN_SPECTRUM", "RESIDUAL"):
            header = hdul[name].header
            assert header["CTYPE1"] == "WAVE" and header["CUNIT1"] == "Angstrom" and header["CDELT1"] == 2.0
            wavelength = WCS(header).spectral.pixel_to_world(np.arange(header["NAXIS1"])).to_value("Angstrom")
            np.testing.assert_allclose(wavelength, wavelength_grid(), rtol=0, atol=1e-6)
            with np.load(example / "out.npz") as npz:
                np.testing.assert_array_equal(hdul[name].data, npz[name.lower()])


def test_prepared_fits_and_its_decomposition_with_survey_ids(checkpoint, tmp_path):
    sdss = ppxf_sdss_path(STRONG)
    args = ["prepare", str(sdss), str(DESI_COADD), "--coverage", "fill", "--snr-policy", "warn"]
    assert main([*args, "-o", str(tmp_path / "prepared.npz")]) == 0
    assert main([*args, "-o", str(tmp_path / "prepared.fits")]) == 0
    with np.load(tmp_path / "prepared.npz") as npz:
        prepared = dict(npz)
    assert_same_arrays(read_arrays(tmp_path / "prepared.fits"), prepared, compare_time=False)
    with fits.open(tmp_path / "prepared.fits") as hdul:
        hdul.verify("exception")
        assert {"FLUX", "IVAR", "MASK", "CONTINUUM", "LINE_MODEL"} <= {hdu.name for hdu in hdul}
    for name in ("npz", "fits"):  # a PREPARED.fits decomposes as its .npz does
        assert main(["decompose", str(tmp_path / f"prepared.{name}"), "--weights", str(checkpoint),
                     "--no-normalize", "-o", str(tmp_path / f"out_{name}.fits")]) == 0
    from_npz, from_fits = (read_arrays(tmp_path / f"out_{name}.fits") for name in ("npz", "fits"))
    for key in ("sf_fraction", "line_ratios", "ids", "z", "survey_id", "measured_log_nii_ha", "passes_gate"):
        np.testing.assert_array_equal(from_fits[key], from_npz[key], err_msg=key)
    table = Table.read(tmp_path / "out_fits.fits")
    # prepare's stellar mass and frame come through, as prepare measured them, described and with units
    for key in (*PREPARED_MASS_KEYS, *FRAME_KEYS):
        np.testing.assert_array_equal(from_npz[key], prepared[key], err_msg=key)
        np.testing.assert_array_equal(np.ma.filled(table[key], np.nan), prepared[key], err_msg=key)
        assert table[key].description == DESCRIPTIONS[key], key
    assert [str(table[key].unit) for key in ("ebv_galactic", "resolution_sigma_kms", "spaxel_velocity")] == [
        "mag", "km / s", "km / s"]
    assert "mass_used" not in from_npz  # --no-normalize: no mass divided the spectra
    with fits.open(sdss) as hdul:
        specobj = hdul["SPECOBJ"].data
        expected = (int(specobj["PLATE"][0]), int(specobj["MJD"][0]), int(specobj["FIBERID"][0]))
    (sdss_row,) = [row for row in table if row["survey"] == "sdss"]
    assert (sdss_row["plate"], sdss_row["mjd"], sdss_row["fiberid"]) == expected
    (desi_row,) = [row for row in table if row["survey"] == "desi"]
    assert desi_row["targetid"] == int(str(desi_row["ids"]).rpartition("#")[2]) and desi_row["z"] > 0.1
    assert np.ma.is_masked(desi_row["plate"])  # -1, declared TNULL: no SDSS plate for a DESI target
    np.testing.assert_array_equal(np.ma.filled(table["measured_log_nii_ha"], np.nan), prepared["log_nii_ha"])


def test_manga_cube_maps_on_the_cube_celestial_wcs(checkpoint, tmp_path):
    cube = tmp_path / "manga-8485-1901-LOGCUBE.fits.gz"
    write_cube(cube, *cube_masks())
    assert main(["prepare", str(cube), "--z", "0.02", "--coverage", "fill", "--snr-policy", "warn",
                 "-o", str(tmp_path / "prepared.npz")]) == 0
    assert main(["decompose", str(tmp_path / "prepared.npz"), "--weights", str(checkpoint), "--no-normalize",
                 "-o", str(tmp_path / "out.fits")]) == 0
    out = read_arrays(tmp_path / "out.fits")
    sky = WCS(cube_header()).celestial
    with fits.open(tmp_path / "out.fits") as hdul:
        hdul.verify("exception")
        fraction, classes = hdul["8485-1901_SF_FRACTION"], hdul["8485-1901_BPT"]
        assert fraction.data.shape == classes.data.shape == (NY, NX)
        x, y = out["position"].T
        np.testing.assert_array_equal(fraction.data[y, x], out["sf_fraction"])
        np.testing.assert_array_equal(classes.data[y, x], out["bpt_class"][:, 0])
        assert np.isnan(fraction.data[0, 0]) and classes.data[0, 0] == bpt.UNDEFINED  # no spectrum there
        for i, j in ((1, 0), (4, 2)):
            on_map = WCS(fraction.header).pixel_to_world(i, j)
            assert on_map.separation(sky.pixel_to_world(i, j)).arcsec < 1e-6
    table = Table.read(tmp_path / "out.fits")
    assert set(table["plateifu"]) == {"8485-1901"}
    np.testing.assert_array_equal(table["spaxel_x"], x)
    np.testing.assert_array_equal(out["wcs"], np.load(tmp_path / "prepared.npz")["wcs"])  # the header comes back


def _peak_rss_mib(code: str) -> float:
    """Peak resident memory of a fresh Python process running `code`, as it reports it itself."""
    report = "; import resource; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    done = subprocess.run([sys.executable, "-c", code + report], check=True, capture_output=True, text=True)
    return int(done.stdout.split()[-1]) / 1024


@pytest.fixture(scope="module")
def survey_folder(checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("survey")
    np.save(root / "spectra.npy", random_spectra(SURVEY_ROWS, seed=13))
    assert main(["decompose", str(root / "spectra.npy"), "--weights", str(checkpoint), "--no-normalize",
                 "--batch-size", "1024", "-o", str(root / "out")]) == 0
    return root


def test_streamed_folder_of_20000_rows_exports_in_flat_memory(survey_folder):
    root = survey_folder
    folder = str(root / "out")
    opened = _peak_rss_mib("import astropy.io.fits; from ddm_jax import cli; "
                           f"from ddm_jax.io.outputs import open_output; open_output({folder!r})")
    exported = _peak_rss_mib(f"from ddm_jax.cli import main; main(['export', {folder!r}, '-o', "
                             f"{str(root / 'out.fits')!r}])")
    data_mib = (root / "out.fits").stat().st_size / 2**20
    assert data_mib > 500 and exported - opened < EXPORT_EXTRA_MIB, (opened, exported, data_mib)
    with open_output(root / "out") as folder, open_output(root / "out.fits") as fits_file:
        assert fits_file.rows == folder.rows == SURVEY_ROWS and set(fits_file.keys) == set(folder.keys)
        for key in folder.keys:
            for lo in range(0, SURVEY_ROWS, 4096):
                np.testing.assert_array_equal(fits_file.read(key, lo, lo + 4096), folder.read(key, lo, lo + 4096),
                                              err_msg=key)
        assert fits_file.provenance == folder.provenance and fits_file.provenance["command"] == "decompose"
    table = Table.read(root / "out.fits")
    assert len(table) == SURVEY_ROWS
    np.testing.assert_array_equal(table["sf_fraction"], np.load(root / "out" / "sf_fraction.npy"))
    np.testing.assert_array_equal(table["agn_log_oiii_hb"], np.load(root / "out" / "line_ratios.npy")[:, 2, 1])
    with fits.open(root / "out.fits") as hdul:
        hdul.verify("exception")


def test_export_reads_a_block_at_a_time(survey_folder, tmp_path, monkeypatch):
    largest = []
    original = FolderOutput.read

    def read(self, key, start=0, stop=None):
        block = original(self, key, start, stop)
        largest.append(block.nbytes)
        return block

    monkeypatch.setattr(FolderOutput, "read", read)
    export(survey_folder / "out", tmp_path / "out.fits")
    spectra_bytes = SURVEY_ROWS * 2208 * 4
    assert max(largest) <= max(BLOCK_BYTES, BLOCK_ROWS * 3 * 8 * 4) < spectra_bytes / 8


def test_bad_inputs_are_one_line_and_write_nothing(example, tmp_path, capsys):
    sdss = ppxf_sdss_path(STRONG)
    with pytest.raises(DDMError, match="not a ddm-jax catalogue"):
        open_output(sdss)
    truncated = tmp_path / "truncated.fits"
    truncated.write_bytes((example / "out.fits").read_bytes()[:-5000])
    for source, output, message in (
            (truncated, tmp_path / "x.npz", "truncated.fits"),
            (example / "out.fits", example / "out.fits", "is the file being exported"),
            (example / "out.npz", tmp_path / "x.csv", "give a .fits or an .npz file name"),
            (tmp_path / "missing.npz", tmp_path / "x.fits", "no such file")):
        capsys.readouterr()
        assert main(["export", str(source), "-o", str(output)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["truncated.fits"]  # nothing written, no temporary


def test_failed_export_keeps_the_old_file(example, tmp_path, monkeypatch):
    target = tmp_path / "out.fits"
    target.write_bytes(b"old")

    def broken(*args, **kwargs):
        raise DDMError("boom")

    monkeypatch.setattr(fits_writer, "_maps", broken)  # fails after the table and images are written
    with pytest.raises(DDMError, match="boom"):
        export(example / "out.npz", target)
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.fits"]


def test_non_ascii_text_is_refused_by_name(example, tmp_path):
    with np.load(example / "out.npz") as npz:
        arrays = dict(npz)
    arrays["ids"] = np.array([f"galaxy-{i}" for i in range(len(arrays["p_sf"]) - 1)] + ["gal\u00e1xia"])
    with pytest.raises(DDMError, match="ids: FITS tables hold ASCII text only"):
        write_output(tmp_path / "x.fits", arrays)
    assert not list(tmp_path.iterdir())
