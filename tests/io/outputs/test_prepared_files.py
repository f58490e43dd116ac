"""PREPARED files (io.outputs.prepared): shapes compared with one another before the data are read,
what is not a PREPARED file refused by name, and a failed write that leaves the old file."""

import numpy as np
import pytest

from ddm_jax import cli
from ddm_jax.errors import DDMError
from ddm_jax.io.outputs.prepared import load_prepared, write_prepared
from ddm_jax.prepare import pipeline
from spectra_helpers import STRONG, ppxf_sdss_path


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A small PREPARED.npz, made by `prepare` from a real SDSS spectrum."""
    out = tmp_path_factory.mktemp("prepared") / "prepared.npz"
    pipeline.run([str(ppxf_sdss_path(STRONG))], str(out), coverage="fill", snr_policy="warn", log=lambda _: None)
    return load_prepared(out)


def test_prepared_shapes_are_compared_before_the_data_are_read(prepared, tmp_path, monkeypatch):
    reads = []
    original = np.lib.format.read_array
    monkeypatch.setattr(np.lib.format, "read_array", lambda *a, **k: reads.append(1) or original(*a, **k))
    for key, value in {"flux": np.zeros((5, 2208), np.float32), "template_weights": np.zeros((7, 3))}.items():
        path = tmp_path / f"{key}.npz"
        np.savez(path, **dict(prepared, **{key: value}))
        with pytest.raises(DDMError, match=rf"{key} has shape \({value.shape[0]}, \d+\), expected"):
            load_prepared(path)
    assert not reads


def test_prepared_with_ids_of_no_dimension(prepared, tmp_path):
    path = tmp_path / "scalar_ids.npz"
    np.savez(path, **dict(prepared, ids=np.array("one")))
    with pytest.raises(DDMError, match=r"ids has shape \(\), expected \(n,\)"):
        load_prepared(path)


def _run(capsys, *argv):
    """The console script in-process: (exit code, stderr lines)."""
    code = cli.main(["prepare", *map(str, argv)])
    return code, capsys.readouterr().err.splitlines()


def test_write_failure_midway_leaves_the_old_output(tmp_path, monkeypatch):
    out = tmp_path / "prepared.npz"
    out.write_bytes(b"previous result")

    def disk_full(handle, **arrays):
        handle.write(b"half an archive")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pipeline.np, "savez", disk_full)
    with pytest.raises(DDMError, match="prepared.npz: cannot write .No space left on device"):
        write_prepared(out, {"flux": np.zeros(3)})
    assert out.read_bytes() == b"previous result"
    assert [p.name for p in tmp_path.iterdir()] == ["prepared.npz"]


def test_load_prepared_rejects_what_is_not_a_prepared_file(tmp_path, capsys):
    out = tmp_path / "prepared.npz"
    code, _ = _run(capsys, ppxf_sdss_path(STRONG), "-o", out, "--coverage", "fill")
    assert code == 0
    arrays = load_prepared(out)

    missing = tmp_path / "missing.npz"
    np.savez(missing, **{k: v for k, v in arrays.items() if k != "line_snr"})
    with pytest.raises(DDMError, match=f"{missing}: not a PREPARED.npz: lacks line_snr"):
        load_prepared(missing)

    shifted = tmp_path / "shifted.npz"
    np.savez(shifted, **dict(arrays, wavelength=arrays["wavelength"] + 1))
    with pytest.raises(DDMError, match=f"{shifted}: wavelength is not the rest-frame grid"):
        load_prepared(shifted)

    short = tmp_path / "short.npz"
    np.savez(short, **dict(arrays, flux=arrays["flux"][:, :100]))
    with pytest.raises(DDMError, match=r"short.npz: flux has shape \(1, 100\)"):
        load_prepared(short)

    numbered = tmp_path / "numbered.npz"
    np.savez(numbered, **dict(arrays, ids=np.arange(len(arrays["ids"]))))
    with pytest.raises(DDMError, match=f"{numbered}: ids must be strings"):
        load_prepared(numbered)

    for name, content in (("text.npz", b"not an archive"), ("cut.npz", out.read_bytes()[:5000])):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DDMError, match=f"{tmp_path / name}: not a readable PREPARED.npz"):
            load_prepared(tmp_path / name)
