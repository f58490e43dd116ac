"""The trust outputs through the commands (docs/trust.md): `decompose` passes a PREPARED file's ivar and
`--ivar`, to .npz and to folder outputs; `calibrate` end to end; a checkpoint's `expects` makes mass optional."""

import json

import numpy as np
import pytest

from ddm_jax.cli import main
from ddm_jax.constants import N_BINS
from ddm_jax.errors import DDMError
from ddm_jax.inference.decomposer import Decomposer
from ddm_jax.io.checkpoint import load_trust
from ddm_jax.schema import PREPARED_KEYS, TRUST_KEYS
from trust_fixtures import TINY, ivar_like, trust_checkpoint


def test_prepared_input_passes_its_ivar(tmp_path, trust_params, trust_calibration, trust_spectra):
    flux, mass, ivar = trust_spectra
    n = len(flux)
    arrays = {key: np.zeros((n,)) for key in PREPARED_KEYS}
    arrays.update(flux=flux, ivar=ivar, mask=np.zeros((n, N_BINS), np.uint8),
                  wavelength=np.arange(N_BINS) * 2.0 + 3700.0, ids=np.array([f"s{i}" for i in range(n)]),
                  line_names=np.array(["halpha"]), line_flux=np.zeros((n, 1)), line_flux_err=np.zeros((n, 1)),
                  line_snr=np.zeros((n, 1)), position=np.zeros((n, 2)))
    np.savez(tmp_path / "prepared.npz", **arrays)
    np.save(tmp_path / "mass.npy", mass)
    ckpt = trust_checkpoint(tmp_path / "ckpt", trust_params, trust_calibration)
    assert main(["decompose", str(tmp_path / "prepared.npz"), "--mass", str(tmp_path / "mass.npy"),
                 "--weights", str(ckpt), "-o", str(tmp_path / "out.npz")]) == 0
    expected = Decomposer(*trust_params, *TINY, trust=trust_calibration)(flux, mass, ivar=ivar)
    with np.load(tmp_path / "out.npz") as out:
        for key in TRUST_KEYS:
            np.testing.assert_allclose(out[key].astype(float), expected[key].astype(float), rtol=1e-5, err_msg=key)


def test_folder_output_and_ivar_option(tmp_path, trust_params, trust_calibration, trust_spectra, capsys):
    flux, mass, ivar = trust_spectra
    for name, array in (("spectra", flux), ("mass", mass), ("ivar", ivar)):
        np.save(tmp_path / f"{name}.npy", array)
    plain = trust_checkpoint(tmp_path / "plain", trust_params)
    args = ["decompose", str(tmp_path / "spectra.npy"), "--mass", str(tmp_path / "mass.npy"), "--ivar",
            str(tmp_path / "ivar.npy"), "--batch-size", "8"]
    assert main([*args, "--weights", str(plain), "-o", str(tmp_path / "plain_out")]) == 0
    assert "no trust calibration" in capsys.readouterr().out
    assert not np.load(tmp_path / "plain_out" / "trusted.npy").any()
    calibrated = trust_checkpoint(tmp_path / "calibrated", trust_params, trust_calibration)
    assert main([*args, "--weights", str(calibrated), "-o", str(tmp_path / "out")]) == 0
    assert "no trust calibration" not in capsys.readouterr().out
    expected = Decomposer(*trust_params, *TINY, trust=trust_calibration)(flux, mass, ivar=ivar)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["keys"]["trusted"] == {"shape": [len(flux)], "dtype": "bool"} and manifest["ivar"]
    for key in TRUST_KEYS:
        np.testing.assert_allclose(np.load(tmp_path / "out" / f"{key}.npy").astype(float),
                                   expected[key].astype(float), rtol=1e-5, err_msg=key)


def test_calibrate_command_end_to_end(tmp_path, trust_params, trust_library, capsys):
    ckpt = trust_checkpoint(tmp_path / "ckpt", trust_params)
    np.savez(tmp_path / "lib.npz", sf=5 * np.asarray(trust_library.sf), agn=np.asarray(trust_library.agn),
             sf_ivar=ivar_like(trust_library.sf) / 25, agn_ivar=ivar_like(trust_library.agn))
    assert main(["calibrate", str(ckpt), "--library", str(tmp_path / "lib.npz"), "--samples", "256",
                 "--components", "4", "--quantile", "0.95", "--mass", "1", "1"]) == 0  # it needs a mass: given
    assert "false-alarm rate" in capsys.readouterr().out
    calibration = load_trust(ckpt)
    assert float(calibration.quantile) == np.float32(0.95) and np.isfinite(calibration.chi2_threshold)
    assert "lib.npz" in str(calibration.description) and "with ivar" in str(calibration.description)
    assert calibration.input_basis.shape == (N_BINS, 4)


def test_expects_no_mass_makes_mass_optional(tmp_path, trust_params, trust_spectra):
    np.save(tmp_path / "spectra.npy", trust_spectra[0])
    args = ["decompose", str(tmp_path / "spectra.npy")]
    converted = trust_checkpoint(tmp_path / "converted", trust_params)
    assert main([*args, "--weights", str(converted), "-o", str(tmp_path / "a.npz")]) == 2  # mass required
    no_mass = trust_checkpoint(tmp_path / "no_mass", trust_params, expects={"needs_mass": False, "trained_on": "test"})
    assert main([*args, "--weights", str(no_mass), "-o", str(tmp_path / "b.npz")]) == 0
    assert main([*args, "--weights", str(no_mass), "-o", str(tmp_path / "folder")]) == 0
    expected = Decomposer(*trust_params, *TINY)(trust_spectra[0], np.ones(len(trust_spectra[0])))
    with np.load(tmp_path / "b.npz") as out:
        np.testing.assert_array_equal(out["sf_fraction"], expected["sf_fraction"])
    np.testing.assert_allclose(np.load(tmp_path / "folder" / "sf_fraction.npy"), expected["sf_fraction"], atol=1e-6)
    with pytest.raises(DDMError, match="expects"):
        trust_checkpoint(tmp_path / "bad", trust_params, expects={"needs_mass": "no"})
