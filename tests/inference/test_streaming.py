"""Survey-scale runs: folder output, chunked inputs, kill -9 and resume, devices, hosts, the compile cache."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import TINY_DDM_KERAS, TINY_REGRESSOR_KERAS, random_spectra
from ddm_jax.cli import main
from ddm_jax.errors import DDMError
from ddm_jax.inference.decomposer import Decomposer
from ddm_jax.inference.streaming import decompose_to_folder, share_range
from ddm_jax.io.outputs.files import read_arrays
from ddm_jax.io.safe import RowSource
from ddm_jax.progress import Progress
from ddm_jax.schema import OUTPUT_KEYS

COUNT, BATCH = 90, 16  # six chunks, the last one short


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    assert main(["convert", str(TINY_DDM_KERAS), str(TINY_REGRESSOR_KERAS), "-o", str(root / "ckpt")]) == 0
    flux, mass = random_spectra(COUNT, seed=51), np.linspace(0.5, 2.0, COUNT)
    np.save(root / "spectra.npy", flux)
    np.save(root / "mass.npy", mass)
    reference = Decomposer.from_checkpoint(root / "ckpt", batch_size=BATCH)(flux, mass)
    return root, reference


def load_folder(path):
    return {key: np.load(path / f"{key}.npy") for key in OUTPUT_KEYS}


def assert_same(result, reference):
    for key in OUTPUT_KEYS:
        np.testing.assert_array_equal(result[key], reference[key], err_msg=key)


def assert_mass_used(folder, root):
    """The folder holds the masses the network divided by (--mass), and says where they came from."""
    np.testing.assert_array_equal(np.load(folder / "mass_used.npy"), np.load(root / "mass.npy").astype(np.float32))
    assert json.loads((folder / "manifest.json").read_text())["provenance"]["mass_source"] == "--mass"


def cli(root, *extra):
    return [sys.executable, "-m", "ddm_jax.cli", "decompose", str(root / "spectra.npy"), "--mass",
            str(root / "mass.npy"), "--weights", str(root / "ckpt"), "--batch-size", str(BATCH), *extra]


def test_folder_output_matches_in_memory(job, tmp_path):
    root, reference = job
    assert main(cli(root, "-o", str(tmp_path / "out"))[3:]) == 0
    assert_same(load_folder(tmp_path / "out"), reference)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["keys"]["line_ratios"] == {"shape": [COUNT, 3, 8], "dtype": "float32"}
    assert_mass_used(tmp_path / "out", root)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no .partial left


def test_folder_of_chunks_is_one_input(job, tmp_path):
    root, reference = job
    (tmp_path / "chunks").mkdir()
    (tmp_path / "masses").mkdir()
    flux, mass = np.load(root / "spectra.npy"), np.load(root / "mass.npy")
    for i, (lo, hi) in enumerate([(0, 7), (7, 50), (50, COUNT)]):
        np.save(tmp_path / "chunks" / f"part{i:03d}.npy", flux[lo:hi])
        np.save(tmp_path / "masses" / f"part{i:03d}.npy", mass[lo:hi])
    assert main(["decompose", str(tmp_path / "chunks"), "--mass", str(tmp_path / "masses"), "--weights",
                 str(root / "ckpt"), "--batch-size", str(BATCH), "-o", str(tmp_path / "out")]) == 0
    assert_same(load_folder(tmp_path / "out"), reference)


def test_interrupted_run_resumes_to_identical_outputs(job, tmp_path):
    root, reference = job
    decomposer = Decomposer.from_checkpoint(root / "ckpt", batch_size=BATCH)
    spectra, mass = RowSource(root / "spectra.npy", "spectra", 2208), RowSource(root / "mass.npy", "mass", None)
    out = tmp_path / "out"
    partial = decompose_to_folder(decomposer, spectra, mass, out, chunk_size=BATCH, stop_after_chunks=2)
    assert partial.name == "out.partial" and not out.exists()
    assert json.loads((partial / "done.json").read_text()) == [0, 16]
    with pytest.raises(DDMError, match="pass --resume"):
        decompose_to_folder(decomposer, spectra, mass, out, chunk_size=BATCH)
    other = Decomposer.from_checkpoint(root / "ckpt", batch_size=BATCH, bpt_scheme="upstream")
    with pytest.raises(DDMError, match="decomposer changed"):
        decompose_to_folder(other, spectra, mass, out, chunk_size=BATCH, resume=True)
    assert decompose_to_folder(decomposer, spectra, mass, out, chunk_size=BATCH, resume=True) == out
    assert_same(load_folder(out), reference)


def test_resume_after_a_set_up_killed_before_job_json(job, tmp_path):
    """job.json is written last: a .partial folder without it is an unfinished set-up, started afresh."""
    root, reference = job
    decomposer = Decomposer.from_checkpoint(root / "ckpt", batch_size=BATCH)
    spectra, mass = RowSource(root / "spectra.npy", "spectra", 2208), RowSource(root / "mass.npy", "mass", None)
    out = tmp_path / "out"
    partial = decompose_to_folder(decomposer, spectra, mass, out, chunk_size=BATCH, stop_after_chunks=0)
    assert (partial / "job.json").is_file() and (partial / "sf_spectrum.npy").is_file()
    (partial / "job.json").unlink()
    (partial / "sf_spectrum.npy").unlink()  # as if killed while creating the output files
    assert decompose_to_folder(decomposer, spectra, mass, out, chunk_size=BATCH, resume=True) == out
    assert_same(load_folder(out), reference)


def test_kill_9_then_resume(job, tmp_path):
    """A real SIGKILL in the middle of a run loses nothing and duplicates nothing."""
    root, reference = job
    out = tmp_path / "out"
    # The real CLI, with each chunk slowed down so that the kill lands mid-run.
    slowed = ("import sys, time\nfrom ddm_jax.inference import Decomposer\nfrom ddm_jax.cli import main\n"
              "collect = Decomposer.collect\n"
              "Decomposer.collect = staticmethod(lambda *a: (time.sleep(0.3), collect(*a))[1])\n"
              "sys.exit(main(sys.argv[1:]))")
    proc = subprocess.Popen([sys.executable, "-c", slowed, *cli(root, "-o", str(out))[3:]],
                            stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    done_file = tmp_path / "out.partial" / "done.json"
    deadline = time.time() + 120
    while time.time() < deadline:
        if done_file.exists() and len(json.loads(done_file.read_text() or "[]")) >= 2:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_before = json.loads(done_file.read_text())
    assert 2 <= len(finished_before) < 6 and not out.exists()
    resumed = subprocess.run(cli(root, "-o", str(out), "--resume"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert_same(load_folder(out), reference)


def test_two_local_devices_give_the_same_results(job, tmp_path):
    root, reference = job
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    result = subprocess.run(cli(root, "-o", str(tmp_path / "out.npz")), env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    probe = subprocess.run([sys.executable, "-c", "import jax; print(jax.local_device_count())"], env=env,
                           capture_output=True, text=True)
    assert probe.stdout.strip() == "2"
    with np.load(tmp_path / "out.npz") as out:
        for key in OUTPUT_KEYS:
            np.testing.assert_allclose(out[key], reference[key], rtol=1e-6, atol=1e-6, err_msg=key)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_on_disjoint_shares_then_merge(job, tmp_path):
    root, reference = job
    coordinator = f"127.0.0.1:{free_port()}"
    out = tmp_path / "out"
    procs = [subprocess.Popen(cli(root, "-o", str(out), "--distributed", "--coordinator", coordinator,
                                  "--num-processes", "2", "--process-id", str(i)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    shares = [tmp_path / "out.share0of2", tmp_path / "out.share1of2"]
    for i, share in enumerate(shares):
        rows = json.loads((share / "manifest.json").read_text())["rows"]
        assert rows == list(share_range(COUNT, i, 2))
    assert main(["merge", str(shares[1]), str(shares[0]), "-o", str(tmp_path / "merged")]) == 0
    assert_same(load_folder(tmp_path / "merged"), reference)
    assert_mass_used(tmp_path / "merged", root)
    # straight into a FITS catalogue, the same numbers (catalog.ConcatenatedOutput over the shares)
    assert main(["merge", str(shares[0]), str(shares[1]), "-o", str(tmp_path / "merged.fits")]) == 0
    assert_same(read_arrays(tmp_path / "merged.fits"), reference)
    np.testing.assert_array_equal(read_arrays(tmp_path / "merged.fits")["mass_used"],
                                  np.load(root / "mass.npy").astype(np.float32))
    with pytest.raises(DDMError, match="a share is missing"):
        from ddm_jax.inference.streaming import merge_folders

        merge_folders([shares[0]], tmp_path / "incomplete")


def test_progress_reports_rate_and_eta():
    import io

    stream = io.StringIO()
    printer = Progress("decompose", interval=0.0, stream=stream)
    printer.begin(0)
    time.sleep(0.01)
    printer(40, 100)
    line = stream.getvalue()
    assert "40/100 spectra" in line and "spectra/s" in line and "ETA" in line


def test_compilation_cache_is_written(job, tmp_path):
    root, _ = job
    env = {**os.environ, "DDM_JAX_COMPILATION_CACHE": str(tmp_path / "cache")}
    result = subprocess.run(cli(root, "-o", str(tmp_path / "out.npz")), env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert any((tmp_path / "cache").iterdir())
