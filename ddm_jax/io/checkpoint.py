"""Orbax checkpoint I/O: one directory holds both networks' params and JSON metadata; and the
conversion of weight files (docs/model.md#weight-files) into such a checkpoint.

Layout (an Orbax composite checkpoint): items `ddm` and `regressor` (params trees) and
`metadata` (JSON: the two configs, the sources with SHA-256, the converter version, and
optionally `expects`, what the networks expect of their input, e.g. {"needs_mass": false});
beside them, optionally, `trust.npz`: the trust calibration (docs/trust.md), added or replaced
on its own by `attach_trust`. Saving writes to a temporary sibling directory and renames it when
complete, so a failed or interrupted save never leaves a checkpoint that looks whole. Loading
needs neither TensorFlow nor PyTorch.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import re
import shutil
import sys
import threading
import time
import uuid
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from ddm_jax import __version__
from ddm_jax.config import DDMConfig, RegressorConfig, config_from_dict, config_to_dict
from ddm_jax.errors import DDMError, InputError, MissingFileError, OutputExistsError, WriteFailed, first_line
from ddm_jax.io.safe import load_npz, os_error, params_sha256, save_npz_atomic
from ddm_jax.model.models import DDM, LineRatioRegressor, abstract_params
from ddm_jax.model.scoring import TrustCalibration
from ddm_jax.schema import EXPECTS_KEYS, MASS_CONVENTIONS, MASS_LOG10, TRUST_FILE

DEFAULT_CHECKPOINT = Path("weights") / "ddm-jax-checkpoint"
FORMAT_VERSION = 1


def _checkpointer() -> ocp.Checkpointer:
    return ocp.Checkpointer(ocp.CompositeCheckpointHandler())


def _check_expects(expects) -> None:
    if not isinstance(expects, dict):
        raise InputError(f"metadata 'expects' must be a dict, got {expects!r:.80}")
    for key, value in expects.items():
        if key not in EXPECTS_KEYS or not isinstance(value, EXPECTS_KEYS[key]):
            raise InputError(f"metadata 'expects' has an unknown key or a wrong type: {key}={value!r:.80} "
                             f"(known: {', '.join(f'{k} ({t.__name__})' for k, t in EXPECTS_KEYS.items())})")
    if expects.get("mass_convention", MASS_CONVENTIONS[0]) not in MASS_CONVENTIONS:
        raise InputError(f"metadata 'expects' mass_convention {expects['mass_convention']!r:.80}: one of "
                         f"{', '.join(map(repr, MASS_CONVENTIONS))}")


def _check_trust(calibration: TrustCalibration, ddm_params, where) -> None:
    """A DDMError unless the calibration was fitted for exactly these DDM params."""
    if str(calibration.ddm_sha256) != params_sha256(ddm_params):
        raise InputError(f"{where}: the trust calibration was fitted for other DDM params; calibrate this "
                         "checkpoint again (ddm-jax calibrate)")


def _write_trust(path: Path, calibration: TrustCalibration) -> Path:
    return save_npz_atomic(path / TRUST_FILE, {name: np.asarray(value) for name, value in zip(calibration._fields,
                                                                                                calibration)})


def save_checkpoint(path, ddm_params, regressor_params, metadata: dict, overwrite: bool = False,
                    trust: TrustCalibration | None = None) -> Path:
    """Write the checkpoint atomically; `metadata` must hold 'ddm_config' and 'regressor_config' dicts
    (and may hold 'expects'); `trust` is saved with it (docs/trust.md)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputExistsError(f"{path} is a file, not a checkpoint folder; choose another output")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists (pass --overwrite to replace it)")
    for key in ("ddm_config", "regressor_config"):
        if key not in metadata:
            raise ValueError(f"metadata needs {key!r}")
    _check_expects(metadata.get("expects", {}))
    if trust is not None:
        _check_trust(trust, ddm_params, path)
    # Orbax's own temporaries land inside the staging folder too, so one rmtree cleans any failure.
    staging = path.parent / f".{path.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
    except OSError as err:
        raise os_error(path, err) from None
    tmp = staging / "checkpoint"
    to_numpy = lambda tree: jax.tree.map(np.asarray, tree)  # noqa: E731
    try:
        with _stderr_kept_aside():
            _checkpointer().save(tmp.absolute(), args=ocp.args.Composite(
                ddm=ocp.args.StandardSave(to_numpy(ddm_params)),
                regressor=ocp.args.StandardSave(to_numpy(regressor_params)),
                metadata=ocp.args.JsonSave({"format_version": FORMAT_VERSION, **metadata}),
            ))
        if trust is not None:
            _write_trust(tmp, trust)
        _replace_dir(tmp, path, staging / "old")
    except DDMError:
        raise
    except Exception as err:  # orbax and tensorstore raise many types for a full disk or an unwritable folder
        reason = _write_failure(err)
        if reason is None:
            raise
        _FailedSaveReports.drop(staging.name)
        raise WriteFailed(f"{path}: cannot write the checkpoint ({reason}); nothing was written"
                          + (" and the existing one is unchanged" if path.exists() else "")) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


class _FailedSaveReports(logging.Filter):
    """Drops asyncio's "Future exception was never retrieved" reports of failed saves' folders: they come
    when orbax's futures are collected, which can be long after `save_checkpoint` reported the failure.
    One filter for the process, installed at the first failure (not at import), with every failed save's
    staging folder."""

    _installed: _FailedSaveReports | None = None

    def __init__(self):
        super().__init__()
        self.folders: set[str] = set()

    @classmethod
    def drop(cls, folder: str) -> None:
        if cls._installed is None:
            cls._installed = cls()
            logging.getLogger("asyncio").addFilter(cls._installed)
        cls._installed.folders.add(folder)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(folder in message for folder in self.folders)


@contextlib.contextmanager
def _stderr_kept_aside(quiet_s: float = 0.5, wait_s: float = 10.0):
    """Orbax's writer threads, and tensorstore's callbacks after them, print every failure
    (tracebacks, from Python and from C++) while and after the save raises it. What goes to
    stderr meanwhile is held (through a pipe: a full disk cannot refuse it) and replayed if the
    save succeeds; after a failure it is dropped once they have been quiet for `quiet_s`, and
    `save_checkpoint` reports the failure once, in one line."""
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    saved = os.dup(2)
    kept, last_output = bytearray(), [time.monotonic()]

    def drain():
        while chunk := os.read(read_end, 1 << 16):
            last_output[0] = time.monotonic()
            kept.extend(chunk[: max(0, (1 << 20) - len(kept))])

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    os.dup2(write_end, 2)
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and time.monotonic() - last_output[0] < quiet_s:
            time.sleep(0.05)
        raise
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        for fd in (saved, write_end):
            os.close(fd)
        reader.join()
        os.close(read_end)
        if not failed:
            sys.stderr.write(kept.decode(errors="replace"))


def _write_failure(err: Exception) -> str | None:
    """The OS's reason for a failed write (tensorstore gives its error code in the message), or None
    if `err` is not a failed write."""
    if isinstance(err, OSError):
        return err.strerror or str(err)
    code = re.search(r"os_error_code='(\d+)'", str(err))
    return os.strerror(int(code.group(1))) if code else None


def _replace_dir(new: Path, path: Path, old: Path) -> None:
    """Rename `new` to `path`; an existing `path` (--overwrite) goes only once the new one is in place."""
    if not path.exists():
        os.replace(new, path)
        return
    os.replace(path, old)
    try:
        os.replace(new, path)
    except OSError:
        os.replace(old, path)
        raise


def read_metadata(path) -> dict:
    """The checkpoint's JSON metadata, or a DDMError that says how to make a checkpoint."""
    path = Path(path)
    if not path.is_dir():
        raise MissingFileError(f"no checkpoint at {path}: convert the released weights first "
                               "(ddm-jax convert DDM.hdf5 REGRESSOR.hdf5 -o DIR), see weights/README.md")
    try:
        metadata = _checkpointer().restore(path.absolute(), args=ocp.args.Composite(
            metadata=ocp.args.JsonRestore())).metadata
    except Exception as err:  # orbax raises many types for missing or damaged items
        raise InputError(f"{path} is not a readable ddm-jax checkpoint: {first_line(err)}") from err
    if not isinstance(metadata, dict) or metadata.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{path}: unknown checkpoint format (metadata {metadata!r:.80})")
    return metadata


def load_checkpoint(path):
    """(ddm_params, regressor_params, metadata); configs in metadata['ddm_config'/'regressor_config']."""
    path = Path(path)
    metadata = read_metadata(path)
    ddm_config = config_from_dict(DDMConfig, metadata["ddm_config"])
    regressor_config = config_from_dict(RegressorConfig, metadata["regressor_config"])
    abstract = {"ddm": abstract_params(DDM(ddm_config)),
                "regressor": abstract_params(LineRatioRegressor(regressor_config))}
    try:
        restored = _checkpointer().restore(path.absolute(), args=ocp.args.Composite(
            ddm=ocp.args.StandardRestore(abstract["ddm"]),
            regressor=ocp.args.StandardRestore(abstract["regressor"])))
    except Exception as err:
        raise InputError(f"{path}: cannot restore the params: {first_line(err)}") from err
    return restored.ddm, restored.regressor, metadata


def load_trust(path, ddm_params=None) -> TrustCalibration | None:
    """The checkpoint's trust calibration, or None if it has none; checked against `ddm_params` if given."""
    file = Path(path) / TRUST_FILE
    if not file.is_file():
        return None
    arrays = load_npz(file, "trust calibration", TrustCalibration._fields)
    calibration = TrustCalibration(**{name: arrays[name] for name in TrustCalibration._fields})
    if ddm_params is not None:
        _check_trust(calibration, ddm_params, path)
    return calibration


def attach_trust(path, calibration: TrustCalibration) -> Path:
    """Add or replace the trust calibration of an existing checkpoint, atomically (a failed write
    leaves the previous calibration as it was)."""
    path = Path(path)
    ddm_params, _, _ = load_checkpoint(path)
    _check_trust(calibration, ddm_params, path)
    return _write_trust(path, calibration)


def convert_to_checkpoint(weight_files, output, preset: str = "auto", overwrite: bool = False):
    """Convert both weight files (in any order) and write the checkpoint; returns the
    (ddm, regressor) `ddm_jax_convert.ConvertedNetwork`s."""
    from ddm_jax_convert import convert_files  # h5py/torch readers load only for this

    ddm, regressor = convert_files(list(weight_files), preset)
    metadata = {
        "ddm_config": config_to_dict(ddm.config), "regressor_config": config_to_dict(regressor.config),
        "presets": {"ddm": ddm.preset, "regressor": regressor.preset},
        "sources": {"ddm": ddm.source, "regressor": regressor.source},
        "converter_version": __version__,
        # the upstream divides by a "fiber mass" it never defines: docs/model.md#the-mass says what we assume
        "expects": {"needs_mass": True, "mass_convention": MASS_LOG10},
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    save_checkpoint(output, ddm.params, regressor.params, metadata, overwrite=overwrite)
    return ddm, regressor
