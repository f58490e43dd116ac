"""The demo on the tiny networks: metrics, figures, cache reuse, whole outputs, bad input.

The tiny recipe plans a handful of steps and gives each network 2 min of start-up, so the
budget does not cut training short even on a loaded machine. No timing assertions.
"""

import json
import math

import numpy as np
import pytest

from ddm_jax import demo
from ddm_jax.cli import main
from ddm_jax.demo import RECIPES, run_demo
from ddm_jax.errors import DDMError
from ddm_jax.plotting import load_decomposition

BUDGET = 250.0  # tiny recipe: 8 DDM steps and 2 regressor steps, each network capped at 2 min
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURES = ("spectrum_0.png", "spectrum_1.png", "spectrum_2.png", "bpt.png", "sf_fraction.png")
REQUIRED = ("sf_fraction_mae", "sf_spectrum_rmse", "agn_spectrum_rmse", "sf_bpt_accuracy", "agn_bpt_accuracy",
            "training_seconds", "ddm_samples_per_second", "ddm_steps", "regressor_steps", "device")


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    metrics = run_demo(root / "out", BUDGET, root / "cache", recipe="tiny", progress=False)
    return root, metrics


def test_metrics_json_has_finite_values(first_run):
    root, metrics = first_run
    saved = json.loads((root / "out" / "metrics.json").read_text())
    assert saved == metrics
    for key in REQUIRED:
        assert key in saved, key
    for key in REQUIRED[:-1]:
        assert math.isfinite(saved[key]), key
    assert 0 <= saved["sf_bpt_accuracy"] <= 1 and 0 <= saved["agn_bpt_accuracy"] <= 1
    assert saved["training_completed"] and not saved["from_cache"]
    assert saved["n_held_out"] == RECIPES["tiny"].held_out_size


def test_figures_are_pngs(first_run):
    root, _ = first_run
    for name in FIGURES:
        assert (root / "out" / name).read_bytes()[:8] == PNG_SIGNATURE, name


def test_decomposition_holds_the_truth(first_run):
    root, metrics = first_run
    out = load_decomposition(root / "out" / "decomposition.npz")
    mae = np.abs(out["sf_fraction"] - out["true_sf_fraction"]).mean()
    np.testing.assert_allclose(mae, metrics["sf_fraction_mae"], rtol=1e-6)
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
    assert again["from_cache"] is True
    for key in ("training_seconds", "ddm_steps", "regressor_steps", "sf_fraction_mae", "sf_bpt_accuracy"):
        assert again[key] == pytest.approx(first[key], rel=1e-6), key


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
    ({"recipe": "huge"}, "unknown demo recipe"),
])
def test_bad_settings_are_ddm_errors(tmp_path, kwargs, message):
    settings = {"budget_seconds": BUDGET, "recipe": "tiny", **kwargs}
    with pytest.raises(DDMError, match=message):
        run_demo(tmp_path / "out", cache=tmp_path / "cache", progress=False, **settings)


def test_output_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "out").write_text("not a folder")
    with pytest.raises(DDMError, match="not a folder"):
        run_demo(tmp_path / "out", BUDGET, tmp_path / "cache", recipe="tiny", progress=False)
