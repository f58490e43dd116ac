"""Errors a library user can catch (ddm_jax.errors): each refusal is a DDMError and the built-in it means,
raised by the library's own paths, and the CLI still prints it on one line."""

import numpy as np
import pytest

from conftest import random_spectra
from ddm_jax.cli import main
from ddm_jax.config import DDMConfig, RegressorConfig
from ddm_jax.errors import DDMError, InputError, MissingFileError, OutputExistsError, WriteFailed
from ddm_jax.inference import Decomposer
from ddm_jax.io.checkpoint import save_checkpoint
from ddm_jax.io.loaders import read_any
from ddm_jax.io.safe import write_text_atomic
from ddm_jax.model.models import DDM, LineRatioRegressor, fresh_params

TINY = (DDMConfig.tiny(), RegressorConfig.tiny())


@pytest.fixture(scope="module")
def params():
    return fresh_params(DDM(TINY[0]), 0), fresh_params(LineRatioRegressor(TINY[1]), 1)


@pytest.mark.parametrize("error, builtin", [(InputError, ValueError), (MissingFileError, FileNotFoundError),
                                            (OutputExistsError, FileExistsError), (WriteFailed, OSError)])
def test_each_error_is_a_ddm_error_and_its_builtin(error, builtin):
    assert issubclass(error, DDMError) and issubclass(error, builtin)


def test_bad_arrays_are_a_value_error(params):
    decomposer = Decomposer(*params, *TINY)
    with pytest.raises(ValueError, match=r"shape \(B, 2208\)"):
        decomposer(np.ones((2, 100), np.float32), np.ones(2))
    spectra = random_spectra(2, seed=0)
    with pytest.raises(ValueError, match="finite and positive"):
        decomposer(spectra, np.array([1.0, -1.0]))


def test_a_missing_file_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_any(tmp_path / "spec-0266-51602-0003.fits")


def test_an_existing_checkpoint_is_a_file_exists_error(params, tmp_path):
    (tmp_path / "ckpt").mkdir()
    metadata = {"ddm_config": {}, "regressor_config": {}}
    with pytest.raises(FileExistsError, match="already exists"):
        save_checkpoint(tmp_path / "ckpt", *params, metadata)


def test_a_write_under_a_file_is_an_os_error(tmp_path):
    (tmp_path / "file").write_text("in the way")
    with pytest.raises(OSError) as caught:
        write_text_atomic(tmp_path / "file" / "out.txt", "text")
    assert isinstance(caught.value, DDMError) and not (tmp_path / "file" / "out.txt").exists()


def test_the_cli_keeps_its_one_line_messages(tmp_path, capsys):
    assert main(["decompose", str(tmp_path / "missing.npy"), "-o", str(tmp_path / "out.npz")]) == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith("ddm-jax decompose: error:") and "\n" not in message
