"""Trust outputs (docs/trust.md): the chi2 formula, calibration mechanics, storage in the
checkpoint, decompose with and without a calibration, the calibrate command, `expects`."""

import json

import jax
import numpy as np
import pytest

from ddm_jax.cli import main
from ddm_jax.config import DDMConfig, RegressorConfig, config_to_dict
from ddm_jax.constants import N_BINS, norm_window_slice
from ddm_jax.errors import DDMError
from ddm_jax.evaluation import ood
from ddm_jax.inference import TRUST_KEYS
from ddm_jax.inference.decomposer import Decomposer
from ddm_jax.io import checkpoint as checkpoint_module
from ddm_jax.io.checkpoint import attach_trust, load_trust, save_checkpoint
from ddm_jax.model.forward import ddm_views
from ddm_jax.model.models import DDM, LineRatioRegressor, fresh_params
from ddm_jax.model.scoring import TrustCalibration, score, scoring_arrays
from ddm_jax.schema import OUTPUT_KEYS
from ddm_jax.schema import PREPARED_KEYS as REQUIRED_KEYS
from ddm_jax.training.calibrate import calibrate_from_library, library_composites
from ddm_jax.training.input_pipeline import synthetic_library

TINY = (DDMConfig.tiny(), RegressorConfig.tiny())
METADATA = {"ddm_config": config_to_dict(TINY[0]), "regressor_config": config_to_dict(TINY[1])}
QUANTILE = 0.9
CALIBRATION_SPECTRA = 1024  # a test quarter of 256: the false-alarm rate's binomial sd is 0.019
BINOMIAL_SIGMAS = 4
SNR = 30.0  # the synthetic library's noise per bin at unit median


@pytest.fixture(scope="module")
def params():
    return fresh_params(DDM(TINY[0]), 3), fresh_params(LineRatioRegressor(TINY[1]), 4)


@pytest.fixture(scope="module")
def library():
    return synthetic_library(11, 64, 64)


def _ivar_like(spectra):
    return np.full(np.shape(spectra), SNR**2, np.float32)


@pytest.fixture(scope="module")
def calibration(params, library):
    """Without ivar: `trusted` is the ood_score test alone, whose false-alarm rate is 1 - QUANTILE."""
    return calibrate_from_library(params[0], TINY[0], library, CALIBRATION_SPECTRA, seed=1, quantile=QUANTILE,
                                        components=8)


@pytest.fixture(scope="module")
def spectra(library):
    with_ivar = library._replace(sf_ivar=_ivar_like(library.sf), agn_ivar=_ivar_like(library.agn))
    flux, mass, ivar = library_composites(with_ivar, 20, seed=9, mass_range=(0.5, 2.0))
    ivar[:, ::7] = 0.0  # bins without data are left out of chi2
    return 3.0 * flux, mass, ivar / 9.0  # any flux scale: ivar scales with it


def _checkpoint(path, params, calibration=None, **metadata):
    return save_checkpoint(path, *params, {**METADATA, **metadata}, trust=calibration)


def test_chi2_is_the_mean_of_residual_squared_times_normalised_ivar(params, spectra):
    flux, mass, ivar = spectra
    result = Decomposer(*params, *TINY)(flux, mass, ivar=ivar)
    window = flux[:, norm_window_slice(N_BINS)].astype(np.float64)
    ivar_n = ivar * (window.std(axis=1) * mass)[:, None] ** 2  # x_n = (x - m) / (s mass): sigma_n = sigma / (s mass)
    used = ivar > 0
    expected = np.sum(np.where(used, result["residual"].astype(np.float64) ** 2 * ivar_n, 0), 1) / used.sum(1)
    np.testing.assert_allclose(result["reconstruction_chi2"], expected, rtol=1e-4)


def test_without_calibration_scores_are_nan_and_nothing_is_trusted(params, spectra):
    flux, mass, _ = spectra
    result = Decomposer(*params, *TINY)(flux, mass)
    assert list(result) == list(OUTPUT_KEYS + TRUST_KEYS)
    assert np.isnan(result["ood_score"]).all() and np.isnan(result["reconstruction_chi2"]).all()
    assert result["trusted"].dtype == bool and not result["trusted"].any()


def test_calibration_does_not_change_the_decomposition(params, calibration, spectra):
    flux, mass, ivar = spectra
    plain = Decomposer(*params, *TINY)(flux, mass)
    scored = Decomposer(*params, *TINY, trust=calibration, samples=2)(flux, mass, ivar=ivar)
    for key in OUTPUT_KEYS:
        np.testing.assert_array_equal(scored[key], plain[key], err_msg=key)
    assert np.isfinite(scored["ood_score"]).all() and np.isfinite(scored["reconstruction_chi2"]).all()
    assert "sf_fraction_std" in scored and scored["trusted"].any()


def test_the_sow_leaves_the_outputs_and_params_alone(params, spectra):
    ddm = DDM(TINY[0])
    x = np.asarray(ddm_views(params[0], spectra[0], spectra[1], None, ddm=ddm)[0])
    plain = ddm.apply({"params": params[0]}, x)
    sown, state = ddm.apply({"params": params[0]}, x, mutable=["intermediates"])
    for a, b in zip(plain, sown):
        np.testing.assert_array_equal(a, b)
    assert state["intermediates"]["features"][0].shape == (len(x), TINY[0].trunk_units[-1])
    assert set(jax.eval_shape(ddm.init, jax.random.PRNGKey(0), x[:1])) == {"params"}


def test_scoring_jit_matches_disable_jit(params, calibration, spectra):
    flux, mass, ivar = spectra
    views = ddm_views(params[0], flux, mass, ivar, ddm=DDM(TINY[0]))
    x, features, residual, finite, ivar_n = (np.asarray(v) for v in views)
    arrays = scoring_arrays(calibration)
    for with_ivar in (None, ivar_n):
        jitted = jax.jit(score)(arrays, x, features, residual, finite, with_ivar)
        with jax.disable_jit():
            eager = score(arrays, x, features, residual, finite, with_ivar)
        for key in TRUST_KEYS:
            np.testing.assert_allclose(np.asarray(jitted[key], float), np.asarray(eager[key], float), rtol=1e-5)


def test_thresholds_are_quantiles_and_far_outliers_score_higher(params, calibration, library):
    fit, thresholds, test = calibration.counts
    assert (fit, thresholds, test) == (512, 256, 256)
    band = BINOMIAL_SIGMAS * np.sqrt(QUANTILE * (1 - QUANTILE) / test)
    assert abs(float(calibration.false_alarm_rate) - (1 - QUANTILE)) <= band
    assert np.isnan(calibration.chi2_threshold)
    decomposer = Decomposer(*params, *TINY, trust=calibration)
    sky, _ = ood.sky(32, seed=2)
    in_domain = decomposer(*library_composites(library, 64, seed=5)[:2])["ood_score"]
    outside = decomposer(sky, np.ones(len(sky)))["ood_score"]
    assert np.median(outside) > max(np.max(in_domain), float(calibration.ood_threshold))


def test_ood_kinds_are_unit_median_spectra_with_ivar(library):
    window = norm_window_slice(N_BINS)
    for kind, (flux, ivar) in ood.ood_sets(library, 4, seed=3).items():
        assert flux.shape == ivar.shape == (4, N_BINS) and flux.dtype == np.float32, kind
        assert np.isfinite(flux).all() and (ivar > 0).all(), kind
        assert np.allclose(np.median(flux[:, window], axis=1), 1.0, atol=0.3), kind


def test_round_trip_through_the_checkpoint_is_exact(tmp_path, params, calibration):
    _checkpoint(tmp_path / "ckpt", params, calibration)
    loaded = load_trust(tmp_path / "ckpt", params[0])
    for name in TrustCalibration._fields:
        a, b = np.asarray(getattr(calibration, name)), getattr(loaded, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        np.testing.assert_array_equal(a, b, err_msg=name)
    decomposer = Decomposer.from_checkpoint(tmp_path / "ckpt")
    assert decomposer.trust is not None and decomposer.needs_mass


def test_attach_trust_is_atomic_and_checks_the_params(tmp_path, params, calibration, monkeypatch):
    path = _checkpoint(tmp_path / "ckpt", params, calibration)
    before = (path / checkpoint_module.TRUST_FILE).read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError):
        attach_trust(path, calibration._replace(ood_threshold=np.float32(1.0)))
    monkeypatch.undo()
    assert (path / checkpoint_module.TRUST_FILE).read_bytes() == before
    assert not [p for p in path.iterdir() if p.name.endswith(".partial")]
    with pytest.raises(DDMError, match="other DDM params"):
        attach_trust(path, calibration._replace(ddm_sha256=np.array("0" * 64)))


def test_prepared_input_passes_its_ivar(tmp_path, params, calibration, spectra):
    flux, mass, ivar = spectra
    n = len(flux)
    arrays = {key: np.zeros((n,)) for key in REQUIRED_KEYS}
    arrays.update(flux=flux, ivar=ivar, mask=np.zeros((n, N_BINS), np.uint8),
                  wavelength=np.arange(N_BINS) * 2.0 + 3700.0, ids=np.array([f"s{i}" for i in range(n)]),
                  line_names=np.array(["halpha"]), line_flux=np.zeros((n, 1)), line_flux_err=np.zeros((n, 1)),
                  line_snr=np.zeros((n, 1)), position=np.zeros((n, 2)))
    np.savez(tmp_path / "prepared.npz", **arrays)
    np.save(tmp_path / "mass.npy", mass)
    ckpt = _checkpoint(tmp_path / "ckpt", params, calibration)
    assert main(["decompose", str(tmp_path / "prepared.npz"), "--mass", str(tmp_path / "mass.npy"),
                 "--weights", str(ckpt), "-o", str(tmp_path / "out.npz")]) == 0
    expected = Decomposer(*params, *TINY, trust=calibration)(flux, mass, ivar=ivar)
    with np.load(tmp_path / "out.npz") as out:
        for key in TRUST_KEYS:
            np.testing.assert_allclose(out[key].astype(float), expected[key].astype(float), rtol=1e-5, err_msg=key)


def test_folder_output_and_ivar_option(tmp_path, params, calibration, spectra, capsys):
    flux, mass, ivar = spectra
    for name, array in (("spectra", flux), ("mass", mass), ("ivar", ivar)):
        np.save(tmp_path / f"{name}.npy", array)
    plain = _checkpoint(tmp_path / "plain", params)
    args = ["decompose", str(tmp_path / "spectra.npy"), "--mass", str(tmp_path / "mass.npy"), "--ivar",
            str(tmp_path / "ivar.npy"), "--batch-size", "8"]
    assert main([*args, "--weights", str(plain), "-o", str(tmp_path / "plain_out")]) == 0
    assert "no trust calibration" in capsys.readouterr().out
    assert not np.load(tmp_path / "plain_out" / "trusted.npy").any()
    calibrated = _checkpoint(tmp_path / "calibrated", params, calibration)
    assert main([*args, "--weights", str(calibrated), "-o", str(tmp_path / "out")]) == 0
    assert "no trust calibration" not in capsys.readouterr().out
    expected = Decomposer(*params, *TINY, trust=calibration)(flux, mass, ivar=ivar)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["keys"]["trusted"] == {"shape": [len(flux)], "dtype": "bool"} and manifest["ivar"]
    for key in TRUST_KEYS:
        np.testing.assert_allclose(np.load(tmp_path / "out" / f"{key}.npy").astype(float),
                                   expected[key].astype(float), rtol=1e-5, err_msg=key)


def test_calibrate_command_end_to_end(tmp_path, params, library, capsys):
    ckpt = _checkpoint(tmp_path / "ckpt", params)
    np.savez(tmp_path / "lib.npz", sf=5 * np.asarray(library.sf), agn=np.asarray(library.agn),
             sf_ivar=_ivar_like(library.sf) / 25, agn_ivar=_ivar_like(library.agn))
    assert main(["calibrate", str(ckpt), "--library", str(tmp_path / "lib.npz"), "--samples", "256",
                 "--components", "4", "--quantile", "0.95"]) == 0
    assert "false-alarm rate" in capsys.readouterr().out
    calibration = load_trust(ckpt)
    assert float(calibration.quantile) == np.float32(0.95) and np.isfinite(calibration.chi2_threshold)
    assert "lib.npz" in str(calibration.description) and "with ivar" in str(calibration.description)
    assert calibration.input_basis.shape == (N_BINS, 4)


def test_expects_no_mass_makes_mass_optional(tmp_path, params, spectra):
    np.save(tmp_path / "spectra.npy", spectra[0])
    args = ["decompose", str(tmp_path / "spectra.npy")]
    converted = _checkpoint(tmp_path / "converted", params)
    assert main([*args, "--weights", str(converted), "-o", str(tmp_path / "a.npz")]) == 2  # mass required
    no_mass = _checkpoint(tmp_path / "no_mass", params, expects={"needs_mass": False, "trained_on": "test"})
    assert main([*args, "--weights", str(no_mass), "-o", str(tmp_path / "b.npz")]) == 0
    assert main([*args, "--weights", str(no_mass), "-o", str(tmp_path / "folder")]) == 0
    expected = Decomposer(*params, *TINY)(spectra[0], np.ones(len(spectra[0])))
    with np.load(tmp_path / "b.npz") as out:
        np.testing.assert_array_equal(out["sf_fraction"], expected["sf_fraction"])
    np.testing.assert_allclose(np.load(tmp_path / "folder" / "sf_fraction.npy"), expected["sf_fraction"], atol=1e-6)
    with pytest.raises(DDMError, match="expects"):
        _checkpoint(tmp_path / "bad", params, expects={"needs_mass": "no"})
