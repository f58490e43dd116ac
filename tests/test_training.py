"""Training on the tiny configs: losses fall, kill-and-resume is exact, fine-tuning starts
from the checkpoint, bad input gets a DDMError."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddm_jax.checkpoint import save_checkpoint
from ddm_jax.cli import main
from ddm_jax.config import N_BINS, DDMConfig, RegressorConfig, config_to_dict
from ddm_jax.errors import DDMError
from ddm_jax.models import DDM, LineRatioRegressor
from ddm_jax.training import (
    OptimizerConfig,
    TrainConfig,
    evaluate,
    fresh_params,
    library_from_arrays,
    load_library,
    make_batch,
    step_keys,
    synthetic_library,
    train,
)

TINY = (DDMConfig.tiny(), RegressorConfig.tiny())
LIBRARY_ARGS = (0, 32, 32)  # seed, n_sf, n_agn
# The resume tests stop before the dropout-free phase and finish through it.
CONFIG = TrainConfig(steps=40, batch_size=16, checkpoint_every=5, log_every=5, dropout_free_steps=10,
                     ddm_optimizer=OptimizerConfig(learning_rate=3e-3, warmup_steps=5),
                     regressor_optimizer=OptimizerConfig(learning_rate=3e-3, warmup_steps=5))
KILL_AFTER_CHECKPOINT = 10  # the killed run must have saved this step, and not the last
SUBPROCESS_TIMEOUT_S = 180
HELD_OUT = 64
FINE_TUNE_TOL = 1e-6  # the warmup makes step 0's learning rate 0: outputs stay the checkpoint's
LOSS_RTOL = 1e-5  # the train step's losses against `evaluate`'s (other conv batching, same maths)


@pytest.fixture(scope="module")
def library_file(tmp_path_factory):
    """The training library as a file, so that a second process loads the very same arrays."""
    library = synthetic_library(*LIBRARY_ARGS)
    path = tmp_path_factory.mktemp("library") / "library.npz"
    np.savez(path, sf=library.sf, agn=library.agn, sf_lines=library.sf_lines, agn_lines=library.agn_lines)
    return path


@pytest.fixture(scope="module")
def library(library_file):
    return load_library(library_file)


@pytest.fixture(scope="module")
def held_out_batch():
    seed, n_sf, n_agn = LIBRARY_ARGS
    return make_batch(synthetic_library(seed + 1, n_sf, n_agn), jax.random.PRNGKey(5), HELD_OUT)


@pytest.fixture(scope="module")
def uninterrupted(library, tmp_path_factory):
    return train(tmp_path_factory.mktemp("full"), library, CONFIG, *TINY, progress=False)


def _assert_same_params(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_short_run_lowers_every_loss(uninterrupted, held_out_batch):
    start = (fresh_params(DDM(TINY[0]), CONFIG.seed), fresh_params(LineRatioRegressor(TINY[1]), CONFIG.seed + 1))
    before = evaluate(*start, held_out_batch, *TINY)
    after = evaluate(uninterrupted.ddm_params, uninterrupted.regressor_params, held_out_batch, *TINY)
    assert uninterrupted.completed and uninterrupted.step == CONFIG.steps
    for name in before:
        assert float(after[name]) < float(before[name]), name


def test_metrics_are_json_lines_per_logged_step(uninterrupted, tmp_path_factory):
    run_dirs = list(tmp_path_factory.getbasetemp().glob("full*"))
    records = [json.loads(line) for line in (run_dirs[0] / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(CONFIG.log_every, CONFIG.steps + 1, CONFIG.log_every))
    expected = {"loss", "ddm/sf_spectrum", "ddm/p_total", "regressor/line_quantities", "learning_rate/ddm"}
    assert expected <= set(records[0])


def test_stopping_and_resuming_in_process_gives_the_same_params(library, uninterrupted, tmp_path):
    first = train(tmp_path, library, CONFIG, *TINY, max_new_steps=17, progress=False)
    assert (first.step, first.completed) == (17, False)
    resumed = train(tmp_path, library, CONFIG, *TINY, progress=False)
    assert (resumed.step, resumed.completed) == (CONFIG.steps, True)
    _assert_same_params(resumed.ddm_params, uninterrupted.ddm_params)
    _assert_same_params(resumed.regressor_params, uninterrupted.regressor_params)
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == CONFIG.steps


KILLED_RUN = textwrap.dedent("""
    import sys, time
    import ddm_jax.training as training
    from ddm_jax.config import DDMConfig, RegressorConfig
    from tests.test_training import CONFIG
    log = training._log
    def slow_log(*args):  # time to be killed between checkpoints; numerics untouched
        record = log(*args)
        time.sleep(0.4)
        return record
    training._log = slow_log
    training.train(sys.argv[1], training.load_library(sys.argv[2]), CONFIG, DDMConfig.tiny(),
                   RegressorConfig.tiny(), progress=False)
""")


def test_resuming_after_sigkill_gives_the_same_params(library_file, library, uninterrupted, tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    process = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(tmp_path), str(library_file)], cwd=root,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoint = tmp_path / "checkpoints" / str(KILL_AFTER_CHECKPOINT)
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT_S
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate()
    assert process.returncode == -signal.SIGKILL, stderr.decode()[-2000:]
    saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert KILL_AFTER_CHECKPOINT in saved and CONFIG.steps not in saved

    resumed = train(tmp_path, library, CONFIG, *TINY, progress=False)
    assert resumed.completed
    _assert_same_params(resumed.ddm_params, uninterrupted.ddm_params)
    _assert_same_params(resumed.regressor_params, uninterrupted.regressor_params)


def test_dropout_free_steps_train_the_networks_as_inference_runs_them(library, tmp_path):
    """A step's logged losses are those of the params it started from: with dropout off they
    equal the dropout-free `evaluate` of the initial params on the step's batch, with it on not."""
    start = (fresh_params(DDM(TINY[0]), CONFIG.seed), fresh_params(LineRatioRegressor(TINY[1]), CONFIG.seed + 1))
    batch = make_batch(library, step_keys(CONFIG.seed, 0)[0], CONFIG.batch_size, CONFIG.mass_range)
    expected = {name: float(value) for name, value in evaluate(*start, batch, *TINY).items()}
    for dropout_free_steps in (1, 0):
        config = dataclasses.replace(CONFIG, steps=1, log_every=1, dropout_free_steps=dropout_free_steps)
        train(tmp_path / str(dropout_free_steps), library, config, *TINY, progress=False)
        record = json.loads((tmp_path / str(dropout_free_steps) / "metrics.jsonl").read_text())
        deviation = max(abs(record[name] / expected[name] - 1) for name in record if name in expected)
        assert deviation < LOSS_RTOL if dropout_free_steps else deviation > 1000 * LOSS_RTOL


def test_fine_tuning_starts_from_the_checkpoint(library, held_out_batch, tmp_path):
    ddm_params, regressor_params = fresh_params(DDM(TINY[0]), 123), fresh_params(LineRatioRegressor(TINY[1]), 124)
    checkpoint = save_checkpoint(tmp_path / "start", ddm_params, regressor_params,
                                 {"ddm_config": config_to_dict(TINY[0]), "regressor_config": config_to_dict(TINY[1])})
    tuned = train(tmp_path / "run", library, CONFIG, init_from=checkpoint, max_new_steps=1, progress=False)
    assert (tuned.ddm_config, tuned.regressor_config) == TINY
    ddm = DDM(TINY[0])
    outputs = lambda params: ddm.apply({"params": params}, held_out_batch.inputs)  # noqa: E731
    start, after, fresh = outputs(ddm_params), outputs(tuned.ddm_params), outputs(fresh_params(ddm, CONFIG.seed))
    for a, b, c in zip(start, after, fresh):
        np.testing.assert_allclose(b, a, atol=FINE_TUNE_TOL)
        assert float(jnp.max(jnp.abs(c - a))) > 100 * FINE_TUNE_TOL  # a fresh init is elsewhere

    with pytest.raises(DDMError, match="differs"):
        train(tmp_path / "other", library, CONFIG, DDMConfig(), init_from=checkpoint, progress=False)


def test_cli_train_runs_and_exports_a_checkpoint(tmp_path, capsys):
    settings = tmp_path / "train.json"
    settings.write_text(json.dumps(CONFIG.to_dict()))
    code = main(["train", str(tmp_path / "run"), "--preset", "tiny", "--synthetic", str(LIBRARY_ARGS[1]),
                 "--config", str(settings), "--quiet"])
    assert code == 0 and (tmp_path / "run" / "model").is_dir()
    assert f"step {CONFIG.steps}/{CONFIG.steps} (done)" in capsys.readouterr().out


@pytest.mark.parametrize("sf, agn, message", [
    (np.ones((4, 100)), np.ones((4, N_BINS)), "shape"),
    (np.ones((4, N_BINS)), np.ones((0, N_BINS)), "no AGN spectra"),
    (np.full((4, N_BINS), np.nan), np.ones((4, N_BINS)), "NaN"),
    (np.ones((4, N_BINS)), -np.ones((4, N_BINS)), "non-positive"),
])
def test_bad_libraries_are_refused(sf, agn, message):
    with pytest.raises(DDMError, match=message):
        library_from_arrays(sf, agn)


def test_refuses_regressor_training_without_lines_and_changed_settings(library, tmp_path):
    with pytest.raises(DDMError, match="dropout_free_steps"):
        train(tmp_path / "d", library, TrainConfig(steps=5, dropout_free_steps=6), *TINY, progress=False)
    with pytest.raises(DDMError, match="nothing to train"):
        train(tmp_path / "c", library, TrainConfig(train_ddm=False, train_regressor=False), *TINY, progress=False)
    without_lines = library_from_arrays(library.sf, library.agn)
    with pytest.raises(DDMError, match="line quantities"):
        train(tmp_path / "a", without_lines, CONFIG, *TINY, progress=False)
    train(tmp_path / "b", library, CONFIG, *TINY, max_new_steps=1, progress=False)
    with pytest.raises(DDMError, match="other settings"):
        train(tmp_path / "b", library, TrainConfig(steps=50), *TINY, progress=False)
