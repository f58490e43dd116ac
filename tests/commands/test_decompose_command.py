"""The `ddm-jax` command line: convert + decompose, the .npz contract, and every bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import TINY_DDM_KERAS, TINY_REGRESSOR_KERAS, random_spectra
from ddm_jax.cli import main
from ddm_jax.inference.decomposer import Decomposer
from ddm_jax.io.checkpoint import load_checkpoint, save_checkpoint
from ddm_jax.model.bpt import COMPOSITE, LINER, STAR_FORMING, classify_nii
from ddm_jax.schema import MASS_LOG10

CONTRACT = {  # key: (shape with B for the batch, dtype)
    "wavelength": ((2208,), np.float32), "sf_spectrum": (("B", 2208), np.float32),
    "agn_spectrum": (("B", 2208), np.float32), "p_sf": (("B",), np.float32), "p_agn": (("B",), np.float32),
    "p_total": (("B",), np.float32), "sf_fraction": (("B",), np.float32),
    "residual": (("B", 2208), np.float32), "line_ratios": (("B", 3, 8), np.float32),
    "bpt_class": (("B", 3), np.int8), "reconstruction_chi2": (("B",), np.float32), "ood_score": (("B",), np.float32),
    "trusted": (("B",), np.bool_),
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "ckpt"
    assert main(["convert", str(TINY_DDM_KERAS), str(TINY_REGRESSOR_KERAS), "-o", str(path)]) == 0
    return path


@pytest.fixture
def inputs(tmp_path):
    np.save(tmp_path / "spectra.npy", random_spectra(5, seed=41))
    np.save(tmp_path / "mass.npy", np.linspace(1.0, 2.0, 5))
    return tmp_path


def test_decompose_writes_the_contract(checkpoint, inputs):
    out = inputs / "out.npz"
    assert main(["decompose", str(inputs / "spectra.npy"), "--mass", str(inputs / "mass.npy"),
                 "--weights", str(checkpoint), "-o", str(out)]) == 0
    with np.load(out, allow_pickle=False) as result:
        assert sorted(result.files) == sorted([*CONTRACT, "mass_used", "provenance"])  # mass_used: --mass given
        provenance = json.loads(str(result["provenance"]))
        np.testing.assert_array_equal(result["mass_used"], np.load(inputs / "mass.npy").astype(np.float32))
        assert provenance["mass_source"] == "--mass"
        assert provenance["mass_convention"] == Decomposer.from_checkpoint(checkpoint).mass_convention == MASS_LOG10
        assert provenance["command"] == "decompose" and provenance["input"] == str(inputs / "spectra.npy")
        assert provenance["checkpoint"] == str(checkpoint.absolute()) and len(provenance["params_sha256"]) == 64
        for key, (shape, dtype) in CONTRACT.items():
            assert result[key].shape == tuple(5 if d == "B" else d for d in shape), key
            assert result[key].dtype == dtype, key
        np.testing.assert_array_equal(result["sf_fraction"], np.clip(result["p_sf"], 0, 1))
        np.testing.assert_allclose(result["wavelength"][[0, -1]], [3700.0, 8114.0])
        direct = Decomposer.from_checkpoint(checkpoint)(np.load(inputs / "spectra.npy"), np.load(inputs / "mass.npy"))
        np.testing.assert_array_equal(result["p_sf"], direct["p_sf"])


def test_single_spectrum_is_a_batch_of_one(checkpoint, inputs):
    np.save(inputs / "one.npy", random_spectra(1, seed=42)[0])
    np.save(inputs / "one_mass.npy", np.float64(1.5))
    assert main(["decompose", str(inputs / "one.npy"), "--mass", str(inputs / "one_mass.npy"),
                 "--weights", str(checkpoint), "-o", str(inputs / "one.npz")]) == 0
    with np.load(inputs / "one.npz") as result:
        assert result["sf_spectrum"].shape == (1, 2208) and result["line_ratios"].shape == (1, 3, 8)


def test_no_normalize_needs_no_mass(checkpoint, inputs):
    assert main(["decompose", str(inputs / "spectra.npy"), "--no-normalize", "--bpt-scheme", "upstream",
                 "--weights", str(checkpoint), "-o", str(inputs / "out.npz")]) == 0
    with np.load(inputs / "out.npz") as result:
        ratios, classes = result["line_ratios"], result["bpt_class"]
    np.testing.assert_array_equal(classes, classify_nii(ratios[..., 0], ratios[..., 1], "upstream"))


@pytest.mark.parametrize("x, y, standard, upstream", [
    (0.01, -20.0, STAR_FORMING, COMPOSITE),  # upstream: only log([NII]/Ha) < 0 can be star-forming
    (0.43, -20.0, COMPOSITE, LINER),  # upstream: log([NII]/Ha) > 0.4 is always AGN
])
def test_upstream_bpt_scheme_reaches_the_output(checkpoint, inputs, x, y, standard, upstream):
    """The tiny networks' line ratios (about -0.23, 0.19) are composite under both schemes, which would
    hide an ignored --bpt-scheme; here the regressor's output layer is a constant (kernel 0, bias
    x = log([NII]/Ha), y = log([OIII]/Hb)) on ratios where the schemes disagree."""
    ddm, regressor, metadata = load_checkpoint(checkpoint)
    regressor["out"]["kernel"] = np.zeros_like(regressor["out"]["kernel"])
    regressor["out"]["bias"] = np.array(regressor["out"]["bias"])
    regressor["out"]["bias"][:2] = x, y
    save_checkpoint(inputs / "constant", ddm, regressor, metadata)
    assert main(["decompose", str(inputs / "spectra.npy"), "--mass", str(inputs / "mass.npy"), "--bpt-scheme",
                 "upstream", "--weights", str(inputs / "constant"), "-o", str(inputs / "out.npz")]) == 0
    with np.load(inputs / "out.npz") as result:
        ratios, classes = result["line_ratios"], result["bpt_class"]
    np.testing.assert_array_equal(ratios[..., :2], np.broadcast_to(np.float32([x, y]), (5, 3, 2)))
    nii, oiii = ratios[..., 0], ratios[..., 1]
    np.testing.assert_array_equal(classify_nii(nii, oiii, "standard"), np.full((5, 3), standard))
    np.testing.assert_array_equal(classify_nii(nii, oiii, "upstream"), np.full((5, 3), upstream))
    # every row and part has the upstream class of its own written ratios, not the standard one
    np.testing.assert_array_equal(classes, classify_nii(nii, oiii, "upstream"))


def test_prepared_npz_input_carries_ids_gate_and_measured_ratios(checkpoint, tmp_path):
    count = 3
    prepared = {"flux": random_spectra(count, seed=43), "ivar": np.ones((count, 2208), np.float32),
                "mask": np.zeros((count, 2208), np.uint8), "wavelength": 3700 + 2 * np.arange(2208, dtype=np.float32),
                "z": np.full(count, 0.01), "ids": np.array(["a", "b", "c"]), "line_names": np.array(["x"] * 8),
                "line_flux": np.ones((count, 8), np.float32), "line_flux_err": np.ones((count, 8), np.float32),
                "line_snr": np.ones((count, 8), np.float32), "meets_snr": np.array([True, False, True]),
                "line_fit_ok": np.array([True, True, False]), "broad_balmer": np.array([False, False, True]),
                "passes_gate": np.array([True, False, False]),
                "position": np.array([[-1, -1], [3, 4], [5, 6]], np.int32),
                "log_nii_ha": np.array([-0.4, -0.2, 0.1], np.float32), "log_oiii_hb": np.zeros(count, np.float32),
                "log_sii_ha": np.zeros(count, np.float32), "log_oi_ha": np.zeros(count, np.float32),
                "bpt_nii": np.array([0, 1, 2], np.int8)}
    np.savez(tmp_path / "prepared.npz", **prepared)
    np.save(tmp_path / "mass.npy", np.ones(count))
    assert main(["decompose", str(tmp_path / "prepared.npz"), "--mass", str(tmp_path / "mass.npy"),
                 "--weights", str(checkpoint), "-o", str(tmp_path / "out.npz")]) == 0
    with np.load(tmp_path / "out.npz") as out:
        assert set(CONTRACT) < set(out.files)
        np.testing.assert_array_equal(out["ids"], prepared["ids"])
        np.testing.assert_array_equal(out["measured_log_nii_ha"], prepared["log_nii_ha"])
        np.testing.assert_array_equal(out["measured_bpt_nii"], prepared["bpt_nii"])
        for key in ("meets_snr", "line_fit_ok", "broad_balmer", "passes_gate", "position"):
            np.testing.assert_array_equal(out[key], prepared[key])
        assert out["line_ratios"].shape == (count, 3, 8)


def write_pickle_npy(path):
    np.save(path, np.array([{"not": "numbers"}], dtype=object), allow_pickle=True)


BAD_INPUTS = {
    "wrong length": (lambda d: np.save(d / "s.npy", np.ones((2, 2000))), None, "shape"),
    "NaN": (lambda d: np.save(d / "s.npy", np.where(np.arange(2208) == 5, np.nan, random_spectra(2, 1))), None, "NaN"),
    "inf": (lambda d: np.save(d / "s.npy", np.where(np.arange(2208) == 5, np.inf, random_spectra(2, 1))), None, "inf"),
    "mass missing": (lambda d: np.save(d / "s.npy", random_spectra(2, 1)), "omit", "mass"),
    "mass non-positive": (lambda d: np.save(d / "s.npy", random_spectra(2, 1)), np.array([1.0, -1.0]), "positive"),
    "mass wrong count": (lambda d: np.save(d / "s.npy", random_spectra(2, 1)), np.ones(3), "one mass per spectrum"),
    "empty": (lambda d: np.save(d / "s.npy", np.zeros((0, 2208))), np.ones(0), "empty"),
    "non-numeric": (lambda d: np.save(d / "s.npy", np.array(["a"] * 2208)), None, "not numeric"),
    "pickle inside .npy": (lambda d: write_pickle_npy(d / "s.npy"), None, "pickled"),
    "not an .npy": (lambda d: (d / "s.npy").write_bytes(b"hello"), None, "not a readable .npy"),
    "missing spectra file": (lambda d: None, None, "does not exist"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_one_line_error_no_output(checkpoint, tmp_path, capsys, case):
    make, mass, message = BAD_INPUTS[case]
    make(tmp_path)
    argv = ["decompose", str(tmp_path / "s.npy"), "--weights", str(checkpoint), "-o", str(tmp_path / "out.npz")]
    if mass is None:
        mass = np.ones(2)
    if not isinstance(mass, str):
        np.save(tmp_path / "m.npy", mass)
        argv += ["--mass", str(tmp_path / "m.npy")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "out.npz").exists()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_missing_weights_directory(tmp_path, inputs, capsys):
    argv = ["decompose", str(inputs / "spectra.npy"), "--mass", str(inputs / "mass.npy"),
            "--weights", str(tmp_path / "none"), "-o", str(inputs / "out.npz")]
    assert main(argv) == 2
    assert "no checkpoint at" in capsys.readouterr().err and not (inputs / "out.npz").exists()


def test_console_script_exit_code(tmp_path):
    """The installed entry point, in a fresh process: a clear error and a non-zero exit."""
    result = subprocess.run([sys.executable, "-m", "ddm_jax.cli", "decompose", str(tmp_path / "none.npy"),
                             "--mass", str(tmp_path / "m.npy")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("ddm-jax decompose: error:")
