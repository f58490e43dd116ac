"""Training on the tiny configs: losses fall, kill-and-resume is exact, fine-tuning starts
from the checkpoint, bad input gets a DDMError."""

import dataclasses
import json
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT
from ddm_jax.cli import main
from ddm_jax.config import NETWORKS, DDMConfig, OptimizerConfig, RegressorConfig, TrainConfig, config_to_dict
from ddm_jax.constants import N_BINS
from ddm_jax.errors import DDMError
from ddm_jax.io.checkpoint import save_checkpoint
from ddm_jax.model.models import DDM, fresh_params
from ddm_jax.training.input_pipeline import MAKE_BATCH, library_from_arrays, load_library, synthetic_library
from ddm_jax.training.train import train, train_networks
from ddm_jax.training.train_step import MODELS, evaluate, step_keys

TINY = (DDMConfig.tiny(), RegressorConfig.tiny())
MODEL_CONFIGS = dict(zip(NETWORKS, TINY))
LIBRARY_ARGS = (0, 32, 32)  # seed, n_sf, n_agn
# The resume tests stop before the dropout-free phase and finish through it.
CONFIG = TrainConfig(steps=40, batch_size=16, checkpoint_every=5, log_every=5, dropout_free_steps=10,
                     optimizer=OptimizerConfig(learning_rate=3e-3, warmup_steps=5))
CONFIGS = {network: CONFIG for network in NETWORKS}
KILL_AFTER_CHECKPOINT = 10  # the killed run must have saved this step, and not the last
SUBPROCESS_TIMEOUT_S = 180
HELD_OUT = 64
FINE_TUNE_TOL = 1e-6  # the warmup makes step 0's learning rate 0: outputs stay the checkpoint's
LOSS_RTOL = 1e-5  # the train step's losses against `evaluate`'s (other conv batching, same maths)
# With dropout on, a step's loss differs from the dropout-free one by far more (measured on the
# first step: ~5e-3 for the regressor, whose only dropout precedes its last layer; more for the DDM).
DROPOUT_EFFECT_MIN = 100 * LOSS_RTOL


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
def held_out_batches():
    seed, n_sf, n_agn = LIBRARY_ARGS
    held_out = synthetic_library(seed + 1, n_sf, n_agn)
    return {network: MAKE_BATCH[network](held_out, jax.random.PRNGKey(5), HELD_OUT) for network in NETWORKS}


@pytest.fixture(scope="module")
def uninterrupted(library, tmp_path_factory):
    return train_networks(tmp_path_factory.mktemp("full"), library, CONFIGS, *TINY, progress=False)


def _start_params(network):
    return fresh_params(MODELS[network](MODEL_CONFIGS[network]), CONFIG.seed + NETWORKS.index(network))


def _assert_same_params(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("network", NETWORKS)
def test_short_run_lowers_every_loss(uninterrupted, held_out_batches, network):
    batch, model_config = held_out_batches[network], MODEL_CONFIGS[network]
    before = evaluate(network, _start_params(network), batch, model_config)
    after = evaluate(network, uninterrupted[network].params, batch, model_config)
    assert uninterrupted[network].completed and uninterrupted[network].step == CONFIG.steps
    for name in before:
        assert float(after[name]) < float(before[name]), name


def test_metrics_are_json_lines_per_logged_step(uninterrupted, tmp_path_factory):
    run_dir = next(tmp_path_factory.getbasetemp().glob("full*"))
    expected = {"ddm": {"loss", "ddm/sf_spectrum", "ddm/p_total", "learning_rate"},
                "regressor": {"loss", "regressor/line_quantities", "learning_rate"}}
    for network in NETWORKS:
        records = [json.loads(line) for line in (run_dir / network / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in records] == list(range(CONFIG.log_every, CONFIG.steps + 1, CONFIG.log_every))
        assert expected[network] <= set(records[0]), network


@pytest.mark.parametrize("network", NETWORKS)
def test_stopping_and_resuming_in_process_gives_the_same_params(library, uninterrupted, tmp_path, network):
    model_config = MODEL_CONFIGS[network]
    first = train(tmp_path, network, library, CONFIG, model_config, max_new_steps=17, progress=False)
    assert (first.step, first.completed) == (17, False)
    resumed = train(tmp_path, network, library, CONFIG, model_config, progress=False)
    assert (resumed.step, resumed.completed) == (CONFIG.steps, True)
    _assert_same_params(resumed.params, uninterrupted[network].params)
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == CONFIG.steps


KILLED_RUN = textwrap.dedent("""
    import sys, time
    sys.path[:0] = ["tests", "tests/training"]  # this test module and its conftest, from the repository root
    import ddm_jax.training.train as training
    from ddm_jax.training.input_pipeline import load_library
    from test_train_loop import CONFIGS, TINY
    log = training._log
    def slow_log(*args):  # time to be killed between checkpoints; numerics untouched
        record = log(*args)
        time.sleep(0.4)
        return record
    training._log = slow_log
    training.train_networks(sys.argv[1], load_library(sys.argv[2]), CONFIGS, *TINY, progress=False)
""")


def test_resuming_after_sigkill_gives_the_same_params(library_file, library, uninterrupted, tmp_path):
    process = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(tmp_path), str(library_file)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoints = tmp_path / "ddm" / "checkpoints"
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT_S
    while not (checkpoints / str(KILL_AFTER_CHECKPOINT)).exists() and process.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate()
    assert process.returncode == -signal.SIGKILL, stderr.decode()[-2000:]
    saved = sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
    assert KILL_AFTER_CHECKPOINT in saved and CONFIG.steps not in saved

    resumed = train_networks(tmp_path, library, CONFIGS, *TINY, progress=False)
    for network in NETWORKS:
        assert resumed[network].completed
        _assert_same_params(resumed[network].params, uninterrupted[network].params)


@pytest.mark.parametrize("network", NETWORKS)
def test_dropout_free_steps_train_the_networks_as_inference_runs_them(library, tmp_path, network):
    """A step's logged losses are those of the params it started from: with dropout off they
    equal the dropout-free `evaluate` of the initial params on the step's batch, with it on not."""
    model_config = MODEL_CONFIGS[network]
    batch = MAKE_BATCH[network](library, step_keys(CONFIG.seed, 0)[0], CONFIG.batch_size, CONFIG.mass_range)
    expected = {name: float(value) for name, value in
                evaluate(network, _start_params(network), batch, model_config).items()}
    for dropout_free_steps in (1, 0):
        config = dataclasses.replace(CONFIG, steps=1, log_every=1, dropout_free_steps=dropout_free_steps)
        train(tmp_path / str(dropout_free_steps), network, library, config, model_config, progress=False)
        record = json.loads((tmp_path / str(dropout_free_steps) / "metrics.jsonl").read_text())
        deviation = max(abs(record[name] / expected[name] - 1) for name in record if name in expected)
        assert deviation < LOSS_RTOL if dropout_free_steps else deviation > DROPOUT_EFFECT_MIN


def test_fine_tuning_starts_from_the_checkpoint(library, held_out_batches, tmp_path):
    ddm_params, regressor_params = fresh_params(DDM(TINY[0]), 123), fresh_params(MODELS["regressor"](TINY[1]), 124)
    checkpoint = save_checkpoint(tmp_path / "start", ddm_params, regressor_params,
                                 {"ddm_config": config_to_dict(TINY[0]), "regressor_config": config_to_dict(TINY[1])})
    tuned = train(tmp_path / "run", "ddm", library, CONFIG, init_from=checkpoint, max_new_steps=1, progress=False)
    assert tuned.model_config == TINY[0]
    ddm = DDM(TINY[0])

    def outputs(params):
        return ddm.apply({"params": params}, held_out_batches["ddm"].inputs)

    start, after, fresh = outputs(ddm_params), outputs(tuned.params), outputs(fresh_params(ddm, CONFIG.seed))
    for a, b, c in zip(start, after, fresh):
        np.testing.assert_allclose(b, a, atol=FINE_TUNE_TOL)
        assert float(jnp.max(jnp.abs(c - a))) > 100 * FINE_TUNE_TOL  # a fresh init is elsewhere

    with pytest.raises(DDMError, match="differs"):
        train(tmp_path / "other", "ddm", library, CONFIG, DDMConfig(), init_from=checkpoint, progress=False)


def test_cli_train_runs_and_exports_a_checkpoint(tmp_path, capsys):
    settings = tmp_path / "train.json"
    settings.write_text(json.dumps(config_to_dict(CONFIG)))
    code = main(["train", str(tmp_path / "run"), "--preset", "tiny", "--synthetic", str(LIBRARY_ARGS[1]),
                 "--config", str(settings), "--quiet"])
    assert code == 0 and (tmp_path / "run" / "model").is_dir()
    out = capsys.readouterr().out
    for network in NETWORKS:
        assert f"{network}: step {CONFIG.steps}/{CONFIG.steps} (done)" in out


def test_cli_refuses_to_train_nothing(tmp_path, capsys):
    code = main(["train", str(tmp_path / "run"), "--preset", "tiny", "--no-regressor", "--regressor-only"])
    assert code == 2 and "nothing to train" in capsys.readouterr().err


@pytest.mark.parametrize("sf, agn, message", [
    (np.ones((4, 100)), np.ones((4, N_BINS)), "shape"),
    (np.ones((4, N_BINS)), np.ones((0, N_BINS)), "no AGN spectra"),
    (np.full((4, N_BINS), np.nan), np.ones((4, N_BINS)), "NaN"),
    (np.ones((4, N_BINS)), -np.ones((4, N_BINS)), "non-positive"),
])
def test_bad_libraries_are_refused(sf, agn, message):
    with pytest.raises(DDMError, match=message):
        library_from_arrays(sf, agn)


def test_refuses_bad_settings_regressor_training_without_lines_and_changed_settings(library, tmp_path):
    with pytest.raises(DDMError, match="dropout_free_steps"):
        train(tmp_path / "d", "ddm", library, TrainConfig(steps=5, dropout_free_steps=6), TINY[0], progress=False)
    with pytest.raises(DDMError, match="unknown network"):
        train(tmp_path / "c", "both", library, CONFIG, progress=False)
    without_lines = library_from_arrays(library.sf, library.agn)
    with pytest.raises(DDMError, match="line quantities"):
        train(tmp_path / "a", "regressor", without_lines, CONFIG, TINY[1], progress=False)
    train(tmp_path / "b", "ddm", library, CONFIG, TINY[0], max_new_steps=1, progress=False)
    with pytest.raises(DDMError, match="other settings"):
        train(tmp_path / "b", "ddm", library, TrainConfig(steps=50), TINY[0], progress=False)
