"""The trust calibration beside a checkpoint (io.checkpoint, docs/trust.md): an exact round trip, and
`attach_trust` atomic and checked against the params it was computed for."""


import chex
import numpy as np
import pytest

from ddm_jax.errors import DDMError
from ddm_jax.inference.decomposer import Decomposer
from ddm_jax.io.checkpoint import attach_trust, load_trust
from ddm_jax.model.scoring import TrustCalibration
from ddm_jax.schema import TRUST_FILE
from trust_fixtures import trust_checkpoint


def test_round_trip_through_the_checkpoint_is_exact(tmp_path, trust_params, trust_calibration):
    trust_checkpoint(tmp_path / "ckpt", trust_params, trust_calibration)
    loaded = load_trust(tmp_path / "ckpt", trust_params[0])
    expected = TrustCalibration(*(np.asarray(getattr(trust_calibration, name)) for name in TrustCalibration._fields))
    chex.assert_trees_all_equal(loaded, expected, strict=True)  # every field: the same dtype, shape and values
    decomposer = Decomposer.from_checkpoint(tmp_path / "ckpt")
    assert decomposer.trust is not None and decomposer.needs_mass


def test_attach_trust_is_atomic_and_checks_the_params(tmp_path, trust_params, trust_calibration, monkeypatch):
    path = trust_checkpoint(tmp_path / "ckpt", trust_params, trust_calibration)
    before = (path / TRUST_FILE).read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError):
        attach_trust(path, trust_calibration._replace(ood_threshold=np.float32(1.0)))
    monkeypatch.undo()
    assert (path / TRUST_FILE).read_bytes() == before
    assert not [p for p in path.iterdir() if p.name.endswith(".partial")]
    with pytest.raises(DDMError, match="other DDM params"):
        attach_trust(path, trust_calibration._replace(ddm_sha256=np.array("0" * 64)))
