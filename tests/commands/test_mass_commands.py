"""The mass a checkpoint needs (docs/model.md#the-mass): `decompose` takes it from a PREPARED file's
log_stellar_mass or a --mass-table, in the checkpoint's stated convention; converted checkpoints
state theirs; `evaluate` and `calibrate` refuse to feed ones to a checkpoint that needs a mass."""

import json

import numpy as np
import pytest
from astropy.table import Table

from ddm_jax.cli import main
from ddm_jax.constants import N_BINS
from ddm_jax.errors import DDMError
from ddm_jax.evaluation.evaluate import evaluate
from ddm_jax.inference.decomposer import Decomposer
from ddm_jax.inference.streaming import decompose_files
from ddm_jax.io.checkpoint import convert_to_checkpoint, read_metadata
from ddm_jax.io.outputs.files import read_arrays
from ddm_jax.schema import DESCRIPTIONS, MASS_LINEAR, MASS_LOG10, PREPARED_KEYS
from ddm_jax.training.calibrate import calibrate_checkpoint
from trust_fixtures import TINY, trust_checkpoint

LOG10 = {"needs_mass": True, "mass_convention": MASS_LOG10}
PLATES = np.array([266, 267, 268])


def write_prepared(path, flux, log_mass=None, log_mass_err=0.05, **extra):
    """A PREPARED.npz of `flux` (n, 2208), SDSS survey ids sdss:PLATE-51602-3, (optional) masses and `extra` keys."""
    n = len(flux)
    arrays = {key: np.zeros((n,)) for key in PREPARED_KEYS}
    arrays.update(flux=flux, ivar=np.ones_like(flux), mask=np.zeros((n, N_BINS), np.uint8),
                  wavelength=np.arange(N_BINS) * 2.0 + 3700.0, ids=np.array([f"s{i}" for i in range(n)]),
                  survey_id=np.array([f"sdss:{p}-51602-3" for p in PLATES[:n]]),
                  line_names=np.array(["halpha"]), line_flux=np.zeros((n, 1)), line_flux_err=np.zeros((n, 1)),
                  line_snr=np.zeros((n, 1)), position=np.zeros((n, 2)))
    if log_mass is not None:
        arrays.update(log_stellar_mass=np.asarray(log_mass, np.float32),
                      log_stellar_mass_err=np.broadcast_to(np.float32(log_mass_err), (n,)).copy())
    np.savez(path, **arrays, **extra)
    return path


@pytest.fixture
def spectra(trust_spectra):
    return trust_spectra[0][: len(PLATES)]


@pytest.mark.parametrize(("convention", "as_network_takes_it"), [(MASS_LOG10, lambda m: m),
                                                                 (MASS_LINEAR, lambda m: 10.0**m)])
def test_decompose_takes_the_mass_from_prepared(tmp_path, trust_params, spectra, convention, as_network_takes_it):
    log_mass = np.array([9.5, 10.0, 10.5], np.float32)
    prepared = write_prepared(tmp_path / "prepared.npz", spectra, log_mass)
    ckpt = trust_checkpoint(tmp_path / "ckpt", trust_params, expects={"needs_mass": True,
                                                                     "mass_convention": convention})
    assert main(["decompose", str(prepared), "--weights", str(ckpt), "-o", str(tmp_path / "out.npz")]) == 0
    expected = Decomposer(*trust_params, *TINY)(spectra, as_network_takes_it(log_mass.astype(np.float64)))
    ones = Decomposer(*trust_params, *TINY)(spectra, np.ones(len(spectra)))
    with np.load(tmp_path / "out.npz") as out:
        np.testing.assert_allclose(out["sf_spectrum"], expected["sf_spectrum"], rtol=1e-5)
        assert not np.allclose(out["sf_spectrum"], ones["sf_spectrum"])  # the mass did change the input
        assert "log_stellar_mass" in json.loads(str(out["provenance"]))["mass_source"]


def test_decompose_carries_the_mass_and_the_frame_into_npz_and_fits(tmp_path, trust_params, spectra):
    """PREPARED's mass and frame, the mass the network divided by and where it came from, in both forms."""
    log_mass = np.array([9.5, 10.0, 10.5], np.float32)
    frame = {"ebv_galactic": np.array([0.02, 0.05, 0.0], np.float32),
             "lsf_coarser_fraction": np.array([0.0, 0.3, np.nan], np.float32),
             "resolution_sigma_kms": np.array([68.0, 75.0, 60.0], np.float32),
             "spaxel_velocity": np.array([np.nan, 120.0, -80.0], np.float32)}
    prepared = write_prepared(tmp_path / "prepared.npz", spectra, log_mass, [0.04, 0.05, 0.06], **frame)
    ckpt = trust_checkpoint(tmp_path / "ckpt", trust_params, expects={"needs_mass": True,
                                                                     "mass_convention": MASS_LINEAR})
    table_file = tmp_path / "masses.csv"
    table_file.write_text("survey_id,log_stellar_mass\n" + "".join(f"sdss:{p}-51602-3,{m}\n"
                                                                   for p, m in zip(PLATES, [11.0, 11.5, 12.0])))
    for name, extra, expected, source in (
            ("out.npz", [], 10.0 ** log_mass.astype(np.float64), "log_stellar_mass (prepare)"),
            ("out.fits", [], 10.0 ** log_mass.astype(np.float64), "log_stellar_mass (prepare)"),
            ("table.fits", ["--mass-table", str(table_file)], 10.0 ** np.array([11.0, 11.5, 12.0]), "mass table")):
        assert main(["decompose", str(prepared), "--weights", str(ckpt), *extra, "-o", str(tmp_path / name)]) == 0
        out = read_arrays(tmp_path / name)
        np.testing.assert_allclose(out["mass_used"], expected, rtol=1e-6, err_msg=name)  # linear: 10**log M
        np.testing.assert_array_equal(out["log_stellar_mass"], log_mass, err_msg=name)
        np.testing.assert_array_equal(out["log_stellar_mass_err"], np.float32([0.04, 0.05, 0.06]), err_msg=name)
        for key, values in frame.items():
            np.testing.assert_array_equal(out[key], values, err_msg=f"{name} {key}")
        provenance = json.loads(str(out["provenance"]))
        assert source in provenance["mass_source"] and provenance["mass_convention"] == MASS_LINEAR, name
    table = Table.read(tmp_path / "out.fits")
    assert table["mass_used"].description == DESCRIPTIONS["mass_used"]
    assert table["log_stellar_mass"].description == DESCRIPTIONS["log_stellar_mass"]
    assert str(table["spaxel_velocity"].unit) == "km / s" and str(table["ebv_galactic"].unit) == "mag"


def test_decompose_refuses_without_a_usable_mass(tmp_path, trust_params, spectra):
    decomposer = Decomposer(*trust_params, *TINY, mass_convention=MASS_LOG10)
    old = write_prepared(tmp_path / "old.npz", spectra)  # before prepare measured masses
    with pytest.raises(DDMError, match="no log_stellar_mass.*--mass-table"):
        decompose_files(decomposer, old, output=tmp_path / "out" / "a.npz")
    no_distance = write_prepared(tmp_path / "nan.npz", spectra, [10.0, np.nan, 10.0])
    with pytest.raises(DDMError, match="1 spectra have no stellar mass \\(first: s1"):
        decompose_files(decomposer, no_distance, output=tmp_path / "out" / "b.npz")
    loose = write_prepared(tmp_path / "loose.npz", spectra, [10.0, 7.9, 10.0], [0.05, 8.6, 0.05])
    with pytest.raises(DDMError, match="1 spectra have a stellar mass less certain than 0.3 dex \\(first: s1: 7.90"):
        decompose_files(decomposer, loose, output=tmp_path / "out" / "e.npz")
    unstated = Decomposer(*trust_params, *TINY)  # needs a mass, says not in which convention
    with pytest.raises(DDMError, match="does not state its mass_convention"):
        decompose_files(unstated, write_prepared(tmp_path / "unstated.npz", spectra, [10.0] * 3),
                        output=tmp_path / "out" / "c.npz")
    np.save(tmp_path / "spectra.npy", spectra)
    with pytest.raises(DDMError, match="needs a mass per spectrum.*--mass-table"):
        decompose_files(decomposer, tmp_path / "spectra.npy", output=tmp_path / "out" / "d.npz")
    assert not (tmp_path / "out").exists()  # nothing written


@pytest.mark.parametrize("kind", ["csv", "fits"])
def test_mass_table_joined_on_survey_id(tmp_path, trust_params, spectra, kind):
    log_mass = np.array([10.5, 9.0, 11.0])
    prepared = write_prepared(tmp_path / "prepared.npz", spectra, np.full(3, 10.0))  # the table wins
    order = [2, 0, 1]  # the table's rows in another order than the spectra
    if kind == "csv":
        table = tmp_path / "masses.csv"
        table.write_text("survey_id,log_stellar_mass\n"
                         + "".join(f"sdss:{PLATES[i]}-51602-3,{log_mass[i]}\n" for i in order))
    else:
        table = tmp_path / "masses.fits"
        Table({"PLATEID": PLATES[order], "MJD": [51602] * 3, "FIBERID": [3] * 3,
               "LGM_FIB_TOT_P50": log_mass[order]}).write(table)
    ckpt = trust_checkpoint(tmp_path / "ckpt", trust_params, expects=LOG10)
    assert main(["decompose", str(prepared), "--mass-table", str(table), "--weights", str(ckpt),
                 "-o", str(tmp_path / "out.npz")]) == 0
    expected = Decomposer(*trust_params, *TINY)(spectra, log_mass)
    with np.load(tmp_path / "out.npz") as out:
        np.testing.assert_allclose(out["sf_spectrum"], expected["sf_spectrum"], rtol=1e-5)


def test_mass_table_refusals(tmp_path, trust_params, spectra):
    decomposer = Decomposer(*trust_params, *TINY, mass_convention=MASS_LOG10)
    prepared = write_prepared(tmp_path / "prepared.npz", spectra, np.full(3, 10.0))
    table = tmp_path / "masses.csv"
    table.write_text("survey_id,log_stellar_mass\nsdss:266-51602-3,10.0\nsdss:267-51602-3,nan\n")
    with pytest.raises(DDMError, match="1 of 3 spectra have no row in the mass table \\(first: sdss:268-51602-3"):
        decompose_files(decomposer, prepared, output=tmp_path / "out" / "a.npz", mass_table=table)
    table.write_text(table.read_text() + "sdss:268-51602-3,10.0\n")
    with pytest.raises(DDMError, match="not positive \\(first: sdss:267-51602-3"):
        decompose_files(decomposer, prepared, output=tmp_path / "out" / "a.npz", mass_table=table)
    np.save(tmp_path / "spectra.npy", spectra)
    with pytest.raises(DDMError, match="joined on a PREPARED file's survey_id"):
        decompose_files(decomposer, tmp_path / "spectra.npy", output=tmp_path / "out" / "b.npz", mass_table=table)
    no_mass = Decomposer(*trust_params, *TINY, needs_mass=False)
    table.write_text("survey_id,log_stellar_mass\n" + "".join(f"sdss:{p}-51602-3,10\n" for p in PLATES))
    with pytest.raises(DDMError, match="expects no mass"):
        decompose_files(no_mass, prepared, output=tmp_path / "out" / "c.npz", mass_table=table)
    assert not (tmp_path / "out").exists()


def test_converted_checkpoints_need_a_log10_fibre_mass(tmp_path):
    from ddm_jax.evaluation.demo import bundled

    ckpt = tmp_path / "converted"
    convert_to_checkpoint([bundled("tiny_ddm_keras.hdf5"), bundled("tiny_regressor_keras.hdf5")], ckpt)
    assert read_metadata(ckpt)["expects"] == LOG10
    assert Decomposer.from_checkpoint(ckpt).mass_convention == MASS_LOG10


def test_evaluate_refuses_a_checkpoint_that_needs_a_mass(trust_params):
    with pytest.raises(DDMError, match="needs a mass per spectrum .*carry none"):
        evaluate(Decomposer(*trust_params, *TINY, mass_convention=MASS_LOG10), held_out={})


def test_calibrate_refuses_ones_for_a_checkpoint_that_needs_a_mass(tmp_path, trust_params, trust_library):
    ckpt = trust_checkpoint(tmp_path / "ckpt", trust_params, expects=LOG10)
    np.savez(tmp_path / "lib.npz", sf=np.asarray(trust_library.sf), agn=np.asarray(trust_library.agn))
    with pytest.raises(DDMError, match="needs a mass per spectrum \\(log10.*--mass LOW HIGH"):
        calibrate_checkpoint(ckpt, tmp_path / "lib.npz", 64)
    assert main(["calibrate", str(ckpt), "--library", str(tmp_path / "lib.npz")]) == 2
    assert not (ckpt / "trust.npz").exists()
