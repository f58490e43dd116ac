"""Recipes end to end on the tiny networks: `train --recipe`, a checkpoint that says what it expects
and carries a trust calibration, `decompose` of the committed real set without a mass, `evaluate`."""

import dataclasses
import json

import numpy as np
import pytest

from ddm_jax.cli import main
from ddm_jax.constants import OIII_HB, SII_HA
from ddm_jax.evaluation.demo import bundled
from ddm_jax.evaluation.evaluate import TARGETS, evaluate, evaluate_checkpoint
from ddm_jax.evaluation.real_eval import DEFAULT_FILE, load_real_set
from ddm_jax.inference.decomposer import Decomposer
from ddm_jax.io.checkpoint import load_trust, read_metadata
from ddm_jax.model import bpt
from ddm_jax.schema import TRUST_KEYS
from ddm_jax.training.recipes import RECIPES
from ddm_jax.training.workflow import fingerprint, make_library

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("recipe") / "run"
    assert main(["train", str(run), "--recipe", "tiny", "--quiet"]) == 0
    return run


def test_the_checkpoint_says_what_it_expects_and_is_calibrated(trained):
    metadata = read_metadata(trained / "model")
    assert metadata["expects"]["needs_mass"] is False
    assert "realistic" in metadata["expects"]["trained_on"]
    assert metadata["recipe"]["recipe"] == "tiny" and metadata["recipe"]["training_completed"]
    calibration = load_trust(trained / "model")
    assert "disjoint" in str(calibration.description) and "with ivar" in str(calibration.description)
    assert sorted(p.name for p in trained.iterdir()) == ["held_out.npz", "model"]  # the run's states are gone


def test_rerunning_loads_the_finished_run(trained, capsys):
    assert main(["train", str(trained), "--recipe", "tiny", "--quiet"]) == 0
    assert "loading the trained networks" in capsys.readouterr().err


def test_decompose_real_set_needs_no_mass(trained, tmp_path):
    real = load_real_set()
    out_path = tmp_path / "real.npz"
    assert main(["decompose", str(bundled(DEFAULT_FILE)),
                 "--weights", str(trained / "model"), "-o", str(out_path)]) == 0
    out = np.load(out_path)
    assert out["trusted"].shape == (len(real["ids"]),)
    for key in TRUST_KEYS:
        assert key in out.files
    assert np.isfinite(out["reconstruction_chi2"]).all()  # the PREPARED file's ivar came along


def test_evaluate_writes_metrics_figure_and_targets(trained, tmp_path, capsys):
    assert main(["evaluate", str(trained / "model"), "-o", str(tmp_path / "eval")]) == 0
    printed = capsys.readouterr().out
    assert "synthetic" in printed and "real" in printed and "targets:" in printed
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["recipe"] == "tiny" and metrics["synthetic"]["n"] == RECIPES["tiny"].held_out_size
    assert metrics["real_spectra"]["n"] == len(load_real_set()["ids"])
    assert {row["metric"] for row in metrics["targets"]} == set(TARGETS["trust"])  # tiny has no science targets
    assert (tmp_path / "eval" / "evaluation.png").read_bytes()[:8] == PNG_SIGNATURE
    per_spectrum = np.load(tmp_path / "eval" / "evaluation.npz")
    assert per_spectrum["real_trusted"].dtype == bool


def test_evaluate_agrees_with_a_direct_computation(trained):
    """The real-composite MAE that `evaluate` reports is the mean |sf_fraction - w| of decompose."""
    from ddm_jax.evaluation.real_eval import real_composites

    decomposer = Decomposer.from_checkpoint(trained / "model")
    held_out = dict(np.load(trained / "held_out.npz"))
    metrics, _ = evaluate(decomposer, held_out, recipe="tiny")
    composites = real_composites(load_real_set())
    out = decomposer(composites["composite"], ivar=composites["ivar"])
    mae = np.mean(np.abs(out["sf_fraction"] - composites["true_sf_fraction"]))
    assert metrics["real_composites"]["mae"] == pytest.approx(mae, rel=1e-5)
    assert metrics["synthetic"]["sf_fraction_mae"] == pytest.approx(
        np.mean(np.abs(decomposer(held_out["composite"])["sf_fraction"] - held_out["true_sf_fraction"])), rel=1e-5)


def test_a_recipe_fixes_its_options(tmp_path, capsys):
    assert main(["train", str(tmp_path / "run"), "--recipe", "tiny", "--steps", "5"]) == 2
    assert "--recipe fixes the data" in capsys.readouterr().err
    # every option it fixes, not only a few: a silently ignored --seed would train something else
    assert main(["train", str(tmp_path / "run"), "--recipe", "tiny", "--seed", "3", "--no-regressor"]) == 2
    assert "drop --seed, --no-regressor" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "run"), "--budget-seconds", "60"]) == 2
    assert "--budget-seconds applies to --recipe" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "run"), "--recipe", "huge"]) == 2
    assert "unknown recipe" in capsys.readouterr().err


def test_fingerprint_follows_the_data():
    tiny = RECIPES["tiny"]
    assert fingerprint(tiny, 300.0) != fingerprint(dataclasses.replace(tiny, data="formula"), 300.0)
    assert fingerprint(tiny, 300.0) != fingerprint(tiny, 301.0)


def test_library_splits_are_disjoint_and_mix_the_agn_kinds():
    recipe = dataclasses.replace(RECIPES["tiny"], library_size=32, held_out_size=16)
    train, held_out, calibration = make_library(recipe)
    assert train.sf.shape[0] == 32 and held_out.sf.shape[0] == calibration.sf.shape[0] == 16
    rows = np.concatenate([np.asarray(part.agn) for part in (train, held_out, calibration)])
    assert len(np.unique(rows[:, 500])) == len(rows)
    # both Seyferts and LINERs in every split (a sorted library once gave a LINER-only calibration set)
    for part in (train, held_out, calibration):
        kinds = np.asarray(bpt.classify_sii(part.agn_lines[:, SII_HA], part.agn_lines[:, OIII_HB]))
        assert {bpt.SEYFERT, bpt.LINER} <= set(kinds.tolist())


def test_evaluate_checkpoint_of_another_recipe_uses_that_held_out_set(trained, tmp_path, monkeypatch):
    monkeypatch.setitem(RECIPES, "tiny-other", dataclasses.replace(RECIPES["tiny"], held_out_size=8))
    metrics = evaluate_checkpoint(trained / "model", tmp_path / "eval", recipe="tiny-other")
    assert metrics["synthetic"]["n"] == 8 and metrics["recipe"] == "tiny-other"
