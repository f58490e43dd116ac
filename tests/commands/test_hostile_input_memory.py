"""`decompose` and `prepare` on files that declare far more than they hold: one line, exit code 2, nothing
written, and the command's peak memory stays far below what the file declares."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_DDM_KERAS, TINY_REGRESSOR_KERAS
from ddm_jax.io.checkpoint import convert_to_checkpoint
from hostile_files import array_bytes, npy_bytes, peak_rss, with_card, write_npz
from spectra_helpers import STRONG, ppxf_sdss_path


def _hostile_inputs(folder: Path, weights: Path) -> dict[str, list]:
    """A command line per hostile input, each a file that declares far more than it holds."""
    (folder / "spectra.npy").write_bytes(npy_bytes((10**9, 2208), data=b"\0" * 4096))
    np.save(folder / "mass.npy", np.ones(3))
    prepared = write_npz(folder / "prepared.npz", {"flux": npy_bytes((10**9, 2208), data=b"\0" * 64),
                                                   "ids": array_bytes(np.array(["a"]))})
    raw = ppxf_sdss_path(STRONG).read_bytes()
    header_start = raw.rindex(b"XTENSION", 0, raw.index(b"EXTNAME = 'COADD"))
    fits_file = folder / "spec-huge.fits.gz"
    fits_file.write_bytes(gzip.compress(raw[:header_start] + with_card(raw[header_start:], "NAXIS2", 10**9)))
    decompose = ["decompose", "--weights", weights, "--mass", folder / "mass.npy", "-o", folder / "out.npz"]
    return {"decompose .npy": [*decompose, folder / "spectra.npy"], "decompose PREPARED.npz": [*decompose, prepared],
            "prepare FITS": ["prepare", fits_file, "-o", folder / "prepared_out.npz"]}


@pytest.mark.parametrize("case", ["decompose .npy", "decompose PREPARED.npz", "prepare FITS"])
def test_peak_rss_of_commands_on_hostile_inputs(tmp_path, case):
    convert_to_checkpoint([TINY_DDM_KERAS, TINY_REGRESSOR_KERAS], tmp_path / "ckpt")
    run = peak_rss(_hostile_inputs(tmp_path, tmp_path / "ckpt")[case])
    print(f"{case}: peak RSS {run['peak_kib'] / 1024:.0f} MiB")
    assert run["returncode"] == 2, run["stderr"]
    lines = run["stderr"].strip().splitlines()  # prepare reports each bad file, then that nothing was read
    assert "Traceback" not in run["stderr"] and lines[-1].startswith("ddm-jax "), run["stderr"]
    assert any("declares" in line or "promises" in line for line in lines), run["stderr"]
    assert run["peak_kib"] < 1 << 20  # 1 GiB: the bound is 2
    assert not (tmp_path / "out.npz").exists() and not (tmp_path / "prepared_out.npz").exists()
