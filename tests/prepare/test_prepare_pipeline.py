"""`ddm-jax prepare`: SDSS files and plain arrays to PREPARED.npz; policies; bad input; atomic write."""

import shutil

import numpy as np
import pytest

from ddm_jax import cli
from ddm_jax.constants import LINE_NAMES
from ddm_jax.errors import DDMError
from ddm_jax.io.loaders.arrays import read_array_file
from ddm_jax.io.outputs.prepared import load_prepared
from ddm_jax.prepare import pipeline
from ddm_jax.schema import PREPARED_FORMAT, PREPARED_LINE_FIT_KEYS
from ddm_jax.spectra import resample
from spectra_helpers import STRONG, WEAK, ppxf_sdss_path, sdss_like, sdss_pipeline_meets_snr, sdss_redshift


def _run(capsys, *argv):
    """The console script in-process: (exit code, stderr lines)."""
    code = cli.main(["prepare", *map(str, argv)])
    return code, capsys.readouterr().err.splitlines()


def _write_npz(path, spectrum, **extra):
    np.savez(path, wavelength=spectrum.wavelength, flux=spectrum.flux, ivar=spectrum.ivar, **extra)


def _coadd_hdu(path, drop=()):
    from astropy.io import fits

    data = fits.getdata(ppxf_sdss_path(STRONG), "COADD")
    cols = [fits.Column(name=n, format="E" if n != "and_mask" else "J", array=data[n])
            for n in ("loglam", "flux", "ivar", "and_mask") if n not in drop]
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols, name="COADD")]).writeto(path)


def test_sdss_files_to_prepared_npz(tmp_path, capsys):
    paths = [ppxf_sdss_path(STRONG), ppxf_sdss_path(WEAK)]
    out = tmp_path / "prepared.npz"
    code, err = _run(capsys, *paths, "-o", out, "--coverage", "fill", "--snr-policy", "warn")
    assert code == 0
    data = load_prepared(out)
    assert list(data["ids"]) == [STRONG, WEAK]
    assert list(data["line_names"]) == list(LINE_NAMES)
    np.testing.assert_array_equal(data["z"], [sdss_redshift(p) for p in paths])
    np.testing.assert_array_equal(data["meets_snr"], [sdss_pipeline_meets_snr(p) for p in paths])
    # Legacy SDSS spectra start at 3800 A observed: the blue end is filled and says so.
    for row in range(2):
        count, _ = resample.coverage_report(data["mask"][row])
        assert count > 0 and np.sum(data["mask"][row] & resample.FILLED != 0) >= count
    np.testing.assert_array_equal(data["passes_gate"], data["meets_snr"] & data["line_fit_ok"] & ~data["broad_balmer"]
                                  & data["filled_ok"])
    assert list(data["passes_gate"]) == [True, False] and data["line_fit_ok"].all() and data["filled_ok"].all()
    assert data["continuum"].shape == data["line_model"].shape == data["flux"].shape
    assert set(PREPARED_LINE_FIT_KEYS) <= set(data)
    # every count in the log adds up: 2 read = 0 off the grid + 1 failing + 1 passing, all written
    assert any(line.startswith("2 spectra: 0 off the grid (coverage), 1 failing the gate (kept") and
               line.endswith("1 passing") for line in err), err
    assert any(line.startswith(f"wrote {out}: 2 of the 2 spectra read from 2 file(s)") for line in err)


def test_refuse_is_the_default_and_names_the_file(tmp_path, capsys):
    synthetic = sdss_like(z=0.05, noise=1.0, rng=np.random.default_rng(3), spec_id="covered")
    _write_npz(tmp_path / "covered.npz", synthetic, z=0.05)
    out = tmp_path / "prepared.npz"
    code, err = _run(capsys, ppxf_sdss_path(STRONG), tmp_path / "covered.npz", "-o", out)
    assert code == 0
    assert list(load_prepared(out)["ids"]) == ["covered"]
    refused = [line for line in err if str(ppxf_sdss_path(STRONG)) in line]
    assert len(refused) == 1 and "not covered" in refused[0] and "skipped" in refused[0]
    # the spectrum dropped for coverage is in the counts, which add up to the 2 read
    assert any(line.startswith("2 spectra: 1 off the grid (coverage), 0 failing the gate") and
               line.endswith("1 passing") for line in err), err


def test_snr_gate_skips_by_default(tmp_path, capsys):
    out = tmp_path / "prepared.npz"
    code, err = _run(capsys, ppxf_sdss_path(STRONG), ppxf_sdss_path(WEAK), "-o", out, "--coverage", "fill")
    assert code == 0
    assert list(load_prepared(out)["ids"]) == [STRONG]
    assert any(line.startswith(f"{WEAK}: S/N <= 8 in") and "nii_6584" in line for line in err)
    assert any(line.startswith("2 spectra: 0 off the grid (coverage), 1 failing the gate (skipped")
               for line in err)
    assert any(line.startswith(f"wrote {out}: 1 of the 2 spectra read") for line in err)


def test_bad_files_are_named_and_the_batch_goes_on(tmp_path, capsys):
    pytest.importorskip("astropy", reason="writing FITS test files needs astropy")
    batch = tmp_path / "batch"
    batch.mkdir()
    shutil.copy(ppxf_sdss_path(STRONG), batch / f"{STRONG}.fits")
    (batch / "truncated.fits").write_bytes(ppxf_sdss_path(STRONG).read_bytes()[:30000])
    _coadd_hdu(batch / "no_ivar.fits", drop=("ivar",))
    _coadd_hdu(batch / "no_z.fits")
    good = sdss_like(z=0.05, noise=1.0, rng=np.random.default_rng(4))
    _write_npz(batch / "negative_z.npz", good, z=-0.01)
    masked = sdss_like(z=0.05, noise=1.0, rng=np.random.default_rng(4))
    masked.ivar[:] = 0.0
    _write_npz(batch / "all_masked.npz", masked, z=0.05)
    np.savez(batch / "no_ivar.npz", wavelength=good.wavelength, flux=good.flux, z=0.05)
    (batch / "corrupt.npz").write_bytes((batch / "negative_z.npz").read_bytes()[:5000])
    np.savetxt(batch / "reversed.csv", np.stack([good.wavelength[::-1], good.flux, good.ivar], 1),
               delimiter=",", header="wavelength,flux,ivar", comments="")
    out = tmp_path / "prepared.npz"
    code, err = _run(capsys, batch, "-o", out, "--coverage", "fill", "--snr-policy", "warn")
    assert code == 0
    assert list(load_prepared(out)["ids"]) == [STRONG]
    expected = {"truncated.fits": "truncated FITS file", "no_ivar.fits": "lacks column(s) ivar",
                "no_z.fits": "no redshift", "negative_z.npz": "redshift must be finite and >= 0",
                "all_masked.npz": "every pixel is masked", "reversed.csv": "not finite and strictly increasing",
                "no_ivar.npz": "lacks ivar", "corrupt.npz": "not a readable .npz file"}
    for name, reason in expected.items():
        mentions = [line for line in err if line.startswith(str(batch / name))]
        assert len(mentions) == 1 and reason in mentions[0], (name, mentions)
    assert any(line.endswith("; 8 file(s) or spectra unreadable or invalid") for line in err)


def test_plain_arrays_give_what_the_fits_file_gives(tmp_path, capsys):
    pytest.importorskip("astropy", reason="reading the SDSS file needs astropy")
    from astropy.io import fits

    data = fits.getdata(ppxf_sdss_path(STRONG), "COADD")
    wavelength, flux = 10.0 ** data["loglam"].astype(np.float64), data["flux"].astype(np.float64)
    ivar, and_mask = data["ivar"].astype(np.float64), data["and_mask"]
    np.save(tmp_path / "as_npy.npy", np.stack([wavelength, flux, np.where(and_mask, 0.0, ivar)]))
    np.savetxt(tmp_path / "as_csv.csv", np.stack([wavelength, flux, ivar, and_mask], 1), fmt="%.17g",
               delimiter=",", header="wavelength,flux,ivar,mask", comments="")
    np.savez(tmp_path / "as_npz.npz", wavelength=wavelength, flux=np.stack([flux, flux]),
             ivar=np.stack([ivar, ivar]), mask=np.stack([and_mask, and_mask]))
    z = sdss_redshift(ppxf_sdss_path(STRONG))
    (tmp_path / "z.csv").write_text(f"id,z\nas_npy,{z!r}\nas_csv,{z!r}\nas_npz#0,{z!r}\nas_npz#1,{z!r}\n")
    out = tmp_path / "prepared.npz"
    code, _ = _run(capsys, ppxf_sdss_path(STRONG), tmp_path / "as_npy.npy", tmp_path / "as_csv.csv",
                   tmp_path / "as_npz.npz", "-o", out, "--coverage", "fill", "--z-table", tmp_path / "z.csv",
                   "--resolution", "native")  # plain arrays carry no wdisp: compare the spectra as observed
    assert code == 0
    result = load_prepared(out)
    assert list(result["ids"]) == [STRONG, "as_npy", "as_csv", "as_npz#0", "as_npz#1"]
    for row in range(1, 5):
        for key in ("flux", "ivar", "mask", "line_flux"):
            np.testing.assert_array_equal(result[key][row], result[key][0], err_msg=f"{key}, row {row}")


def test_failed_run_leaves_the_old_output_and_no_temporary_file(tmp_path, capsys):
    out = tmp_path / "prepared.npz"
    out.write_bytes(b"previous result")
    code, err = _run(capsys, ppxf_sdss_path(STRONG), "-o", out)  # refused: nothing to write
    assert code == 2 and err[-1].startswith("ddm-jax prepare: error: none of the 1 spectra is left")
    assert out.read_bytes() == b"previous result"
    assert [p.name for p in tmp_path.iterdir()] == ["prepared.npz"]


def test_a_prepared_file_is_refused_as_raw_input(tmp_path):
    """Its wavelengths are rest-frame already: reading it as a raw spectrum would de-redshift twice."""
    path = tmp_path / "prepared.npz"
    grid = np.linspace(3700.0, 8114.0, 2208)
    np.savez(path, wavelength=grid, flux=np.ones((2, 2208)), ivar=np.ones((2, 2208)), z=np.zeros(2),
             format=np.array(PREPARED_FORMAT))
    with pytest.raises(DDMError, match="already on the rest-frame grid"):
        read_array_file(path)


def test_prepare_onto_a_folder_is_refused_before_the_work(tmp_path):
    with pytest.raises(DDMError, match="is a folder; give a file name"):
        pipeline.run([str(tmp_path / "none.fits")], str(tmp_path))
