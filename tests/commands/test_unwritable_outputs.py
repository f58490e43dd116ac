"""`convert` and `decompose` onto outputs that cannot be written: a file where a folder is wanted and the reverse, an
unwritable folder, a full disk. One line, no partial file, an existing good output left as it was."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_DDM_KERAS, TINY_REGRESSOR_KERAS, random_spectra
from ddm_jax.cli import main
from ddm_jax.io.checkpoint import _FailedSaveReports, convert_to_checkpoint

WEIGHTS = [str(TINY_DDM_KERAS), str(TINY_REGRESSOR_KERAS)]


# The child limits its own file sizes before it starts the command (no preexec_fn: JAX threads
# run in this process), and ignores SIGXFSZ so that a write past the limit fails with EFBIG as on
# a full disk, instead of killing the process.
_LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
from ddm_jax.cli import main
sys.exit(main(sys.argv[2:]))
"""


def ddm_jax(argv, file_size_limit: int) -> subprocess.CompletedProcess:
    """`ddm-jax *argv` in a child process whose files cannot grow past `file_size_limit` bytes."""
    return subprocess.run([sys.executable, "-c", _LIMITED, str(file_size_limit), *map(str, argv)],
                          capture_output=True, text=True)


def unwritable_folder(shared: Path) -> Path:
    """A folder this process cannot write in: a read-only one, or under root (whom modes do not
    stop), /sys, which refuses new entries to everyone."""
    if os.geteuid() == 0:
        return Path("/sys")
    locked = shared / "locked"
    locked.mkdir(mode=0o555)
    return locked


def one_line_error(done: subprocess.CompletedProcess, *fragments: str) -> str:
    """The error is the last line of stderr, the only one that is not progress, and says all of `fragments`."""
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr and [line for line in lines if not line.startswith("decompose: ")] == [
        lines[-1]], done.stderr
    assert all(f in lines[-1] for f in fragments), lines[-1]
    return lines[-1]


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("outputs") / "ckpt"
    convert_to_checkpoint(WEIGHTS, path)
    return path


# --- convert ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_convert_onto_an_existing_file(tmp_path, capsys, overwrite):
    out = tmp_path / "ckpt"
    out.write_text("my notes")
    assert main(["convert", *WEIGHTS, "-o", str(out), *overwrite]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "is a file, not a checkpoint folder" in line
    assert out.read_text() == "my notes" and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_convert_under_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["convert", *WEIGHTS, "-o", str(tmp_path / "file" / "ckpt")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "cannot write (File exists" in line or "cannot write (Not a directory" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_convert_into_an_unwritable_folder(tmp_path, capsys):
    locked = unwritable_folder(tmp_path)
    before = sorted(locked.iterdir())
    assert main(["convert", *WEIGHTS, "-o", str(locked / "ckpt")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"{locked / 'ckpt'}: cannot write (" in line
    assert sorted(locked.iterdir()) == before


def test_convert_on_a_full_disk_leaves_the_existing_checkpoint(checkpoint, tmp_path):
    out = tmp_path / "ckpt"
    convert_to_checkpoint(WEIGHTS, out)
    before = snapshot(out)
    done = ddm_jax(["convert", *WEIGHTS, "-o", out, "--overwrite"], file_size_limit=20_000)
    one_line_error(done, f"{out}: cannot write the checkpoint", "existing one is unchanged")
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no staging folder left


# --- decompose -------------------------------------------------------------------------------------

@pytest.fixture
def inputs(tmp_path):
    np.save(tmp_path / "spectra.npy", random_spectra(6, seed=3))
    np.save(tmp_path / "mass.npy", np.ones(6))
    return tmp_path


def decompose_argv(checkpoint, inputs, out):
    return ["decompose", inputs / "spectra.npy", "--mass", inputs / "mass.npy", "--weights", checkpoint, "-o", out]


def test_decompose_onto_a_folder_named_npz(checkpoint, inputs, capsys):
    (inputs / "out.npz").mkdir()
    assert main(list(map(str, decompose_argv(checkpoint, inputs, inputs / "out.npz")))) == 2
    assert "out.npz: is a folder; give a file name" in capsys.readouterr().err


def test_decompose_folder_output_onto_a_file(checkpoint, inputs, capsys):
    (inputs / "out").write_text("keep")
    assert main(list(map(str, decompose_argv(checkpoint, inputs, inputs / "out")))) == 2
    assert "already exists" in capsys.readouterr().err and (inputs / "out").read_text() == "keep"


@pytest.mark.parametrize("out", ["file/out.npz", "file/out"])
def test_decompose_under_a_file(checkpoint, inputs, capsys, out):
    (inputs / "file").write_text("keep")
    assert main(list(map(str, decompose_argv(checkpoint, inputs, inputs / out)))) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "cannot write (" in line and (inputs / "file").read_text() == "keep"


def test_decompose_on_a_full_disk_leaves_the_previous_output(checkpoint, inputs):
    out = inputs / "out.npz"
    out.write_bytes(b"previous result")
    one_line_error(ddm_jax(decompose_argv(checkpoint, inputs, out), file_size_limit=50_000),
                   f"{out}: cannot write (File too large)")
    assert out.read_bytes() == b"previous result"
    assert sorted(p.name for p in inputs.iterdir()) == ["mass.npy", "out.npz", "spectra.npy"]


def test_decompose_folder_output_on_a_full_disk_is_one_line(checkpoint, inputs):
    one_line_error(ddm_jax(decompose_argv(checkpoint, inputs, inputs / "out"), file_size_limit=20_000),
                   "cannot write (File too large")
    assert not (inputs / "out").exists()  # only out.partial, for --resume


def test_decompose_into_an_unwritable_folder(checkpoint, inputs, capsys):
    locked = unwritable_folder(inputs)
    before = sorted(locked.iterdir())
    for out in ("out.npz", "out"):
        assert main(list(map(str, decompose_argv(checkpoint, inputs, locked / out)))) == 2
        assert f"{locked / out}: cannot write (" in capsys.readouterr().err.strip().splitlines()[-1]
    assert sorted(locked.iterdir()) == before


def test_late_reports_of_failed_saves_go_through_one_filter():
    asyncio_log = logging.getLogger("asyncio")
    _FailedSaveReports.drop(".ckpt-failed-a")
    _FailedSaveReports.drop(".ckpt-failed-b")
    filters = [f for f in asyncio_log.filters if isinstance(f, _FailedSaveReports)]
    assert len(filters) == 1
    record = lambda message: logging.LogRecord("asyncio", logging.ERROR, __file__, 0, message, None, None)  # noqa: E731
    assert not filters[0].filter(record("Future exception was never retrieved: /tmp/.ckpt-failed-b/x"))
    assert filters[0].filter(record("another asyncio error"))
