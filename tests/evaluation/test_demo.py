"""The demo on the tiny networks (realistic data): metrics, figures, cache reuse, whole outputs, bad input.

The tiny recipe plans a handful of steps and gives each network 2 min of start-up, so the
budget does not cut training short even on a loaded machine. No timing assertions.
"""

import json
import math

import numpy as np
import pytest

from ddm_jax.cli import main
from ddm_jax.errors import DDMError
from ddm_jax.evaluation import demo
from ddm_jax.evaluation.demo import run_demo
from ddm_jax.report.plotting import load_decomposition
from ddm_jax.training.recipes import RECIPES

BUDGET = 250.0  # tiny recipe: 8 DDM steps and 2 regressor steps, each network capped at 2 min
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURES = ("spectrum_0.png", "spectrum_1.png", "spectrum_2.png", "bpt.png", "sf_fraction.png", "evaluation.png")
SYNTHETIC = ("sf_fraction_mae", "sf_spectrum_rmse", "agn_spectrum_rmse", "sf_bpt_accuracy", "agn_bpt_accuracy",
             "residual_rms", "trusted_fraction")
TRAINING = ("training_seconds", "ddm_samples_per_second", "ddm_steps", "regressor_steps")


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    metrics = run_demo(root / "out", BUDGET, root / "cache", recipe="tiny", progress=False)
    return root, metrics


def test_metrics_json_has_finite_values(first_run):
    root, metrics = first_run
    saved = json.loads((root / "out" / "metrics.json").read_text())
    assert saved == metrics
    for key in SYNTHETIC:
        assert math.isfinite(saved["synthetic"][key]), key
    for key in TRAINING:
        assert math.isfinite(saved["training"][key]), key
    synthetic = saved["synthetic"]
    assert 0 <= synthetic["sf_bpt_accuracy"] <= 1 and 0 <= synthetic["agn_bpt_accuracy"] <= 1
    assert saved["training"]["training_completed"] and not saved["training"]["from_cache"]
    assert synthetic["n"] == RECIPES["tiny"].held_out_size
    # the real sets are evaluated too: every committed real spectrum, composites with a known SF share
    assert saved["real_spectra"]["n"] >= 10 and saved["real_composites"]["n"] >= 5
    assert math.isfinite(saved["real_composites"]["mae"])
    assert saved["trust"]["calibrated"] and set(saved["trust"]["ood_untrusted_by_kind"]) == {
        "type1_agn", "stars", "sky", "low_snr"}


def test_real_spectra_catalogue_and_report(first_run):
    from astropy.io import fits
    from astropy.table import Table

    from ddm_jax.evaluation.real_eval import load_real_set

    root, metrics = first_run
    with fits.open(root / "out" / demo.REAL_CATALOGUE) as hdul:
        hdul.verify("exception")
        assert hdul[0].header["DDMCMD"] == "demo" and len(hdul[0].header["CKPTSHA"]) == 64
    table = Table.read(root / "out" / demo.REAL_CATALOGUE)
    real = load_real_set()
    np.testing.assert_array_equal(table["ids"], real["ids"])
    np.testing.assert_array_equal(table["passes_gate"], real["passes_gate"])
    assert int(np.sum(table["trusted"])) == metrics["real_spectra"]["trusted"]
    page = (root / "out" / demo.REPORT).read_text()
    assert page.count('<section class="spectrum"') == len(real["ids"]) and "data:image/png;base64," in page


def test_figures_are_pngs(first_run):
    root, _ = first_run
    for name in FIGURES:
        assert (root / "out" / name).read_bytes()[:8] == PNG_SIGNATURE, name


def test_decomposition_holds_the_truth(first_run):
    root, metrics = first_run
    out = load_decomposition(root / "out" / "decomposition.npz")
    mae = np.abs(out["sf_fraction"] - out["true_sf_fraction"]).mean()
    np.testing.assert_allclose(mae, metrics["synthetic"]["sf_fraction_mae"], rtol=1e-6)
    assert out["true_sf_spectrum"].shape == out["sf_spectrum"].shape


def test_outputs_leave_no_temporary_files(first_run):
    root, _ = first_run
    assert not [p.name for p in (root / "out").iterdir() if p.name.startswith(".")]
    (entry,) = (root / "cache").iterdir()  # one trained setting: the model and its held-out set, no runs
    assert sorted(p.name for p in entry.iterdir()) == ["held_out.npz", "model"]


def test_second_run_loads_from_the_cache(first_run, tmp_path, capsys):
    root, first = first_run
    args = ["demo", "-o", str(tmp_path / "again"), "--cache", str(root / "cache"), "--recipe", "tiny",
            "--budget-seconds", str(BUDGET), "--quiet"]
    assert main(args) == 0
    assert "loaded from the cache" in capsys.readouterr().out
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again["training"]["from_cache"] is True
    for key in ("training_seconds", "ddm_steps", "regressor_steps"):
        assert again["training"][key] == pytest.approx(first["training"][key], rel=1e-6), key
    for key in ("sf_fraction_mae", "sf_bpt_accuracy", "trusted_fraction"):
        assert again["synthetic"][key] == pytest.approx(first["synthetic"][key], rel=1e-6), key
    assert again["real_composites"]["mae"] == pytest.approx(first["real_composites"]["mae"], rel=1e-6)


def test_a_failed_run_writes_no_metrics(first_run, tmp_path, monkeypatch):
    root, _ = first_run

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(demo, "plot_decomposition", broken)
    with pytest.raises(OSError):
        run_demo(tmp_path / "out", BUDGET, root / "cache", recipe="tiny", progress=False)
    assert not (tmp_path / "out" / "metrics.json").exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"budget_seconds": 200.0}, "leaves no time to train"),
    ({"budget_seconds": -1.0}, "positive"),
    ({"recipe": "huge"}, "unknown recipe"),
])
def test_bad_settings_are_ddm_errors(tmp_path, kwargs, message):
    settings = {"budget_seconds": BUDGET, "recipe": "tiny", **kwargs}
    with pytest.raises(DDMError, match=message):
        run_demo(tmp_path / "out", cache=tmp_path / "cache", progress=False, **settings)


def test_output_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "out").write_text("not a folder")
    with pytest.raises(DDMError, match="not a folder"):
        run_demo(tmp_path / "out", BUDGET, tmp_path / "cache", recipe="tiny", progress=False)
