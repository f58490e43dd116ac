"""Survey readers: real DESI coadds and MaNGA DAP test spectra (committed copies), synthetic MaNGA
DRP cubes and RSS files, content dispatch, and that bad files are named while the batch goes on."""

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

import ddm_jax
from ddm_jax import cli
from ddm_jax.errors import DDMError
from ddm_jax.io.loaders.registry import expand_inputs, fits_layout, read_any, read_many
from ddm_jax.io.loaders.sdss import read_sdss_fits
from ddm_jax.io.outputs.prepared import load_prepared
from ddm_jax.spectra.spectrum import validate
from spectra_helpers import (
    DONOTUSE,
    N_WAVE,
    NOCOV,
    NX,
    NY,
    STRONG,
    WAVE,
    cube_header,
    cube_masks,
    ppxf_sdss_path,
    write_cube,
)

fits = pytest.importorskip("astropy.io.fits", reason="the survey readers need astropy")

REAL = Path(ddm_jax.__file__).parent / "data" / "real_spectra"
DESI = {"4-80613-thru20210324": 39633345008634465, "special-dark-27247": 39089837499744649}
BRIGHT = "4-80613-thru20210324"  # a z = 0.37 emission-line galaxy; the other is a faint z = 0.007 target
DAP_FILES = {"MaNGA_test_spectra": 8, "MaNGA_multicomp_test_spectra": 3}
DAP_MASKED_ROW = 5  # every pixel of MaNGA_test_spectra row 5 is flagged (a spaxel outside the IFU)
DESI_STEP = 0.8  # Angstrom: DESI's cameras share one linear wavelength lattice
DESI_OVERLAPS = ((5760.0, 5800.0), (7520.0, 7620.0))  # B/R and R/Z
# MANGA_DRP2PIXMASK bits
SMEARIMAGE, BADPIX, REJECT3D = 1 << 10, 1 << 15, 1 << 30


def _coadd(stem: str) -> Path:
    return REAL / f"coadd-{stem}.fits.gz"


def _redrock_z(stem: str) -> float:
    return float(fits.getdata(REAL / f"redrock-{stem}.fits.gz", "REDSHIFTS")["Z"][0])


def _arms(path: Path) -> dict[str, tuple[np.ndarray, ...]]:
    with fits.open(path) as hdul:
        return {arm: tuple(np.asarray(hdul[f"{arm}_{kind}"].data, dtype=np.float64).squeeze()
                           for kind in ("WAVELENGTH", "FLUX", "IVAR", "MASK"))
                for arm in "BRZ"}


def _pixels(wavelength: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.flatnonzero((wavelength > lo - 1e-6) & (wavelength < hi + 1e-6))


# --- DESI -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("stem", sorted(DESI))
def test_desi_coadd_one_merged_spectrum_per_target_with_the_redrock_redshift(stem):
    (spectrum,) = read_any(_coadd(stem))
    assert spectrum.id == f"coadd-{stem}#{DESI[stem]}"
    assert spectrum.source == str(_coadd(stem))
    assert spectrum.z == _redrock_z(stem)
    wl = spectrum.wavelength
    assert np.all(np.diff(wl) > 0)
    np.testing.assert_allclose(np.diff(wl), DESI_STEP, rtol=1e-6)  # one lattice: no doubled overlap pixels
    assert wl[0] == pytest.approx(3600.0) and wl[-1] == pytest.approx(9824.0)
    assert spectrum.flux.shape == spectrum.ivar.shape == spectrum.good.shape == wl.shape
    assert spectrum.good.all()  # these coadds have no flagged pixel
    validate(spectrum)  # what the resampler needs


def test_desi_cameras_kept_outside_the_overlaps_and_inverse_variance_weighted_inside():
    (spectrum,) = read_any(_coadd(BRIGHT))
    arms = _arms(_coadd(BRIGHT))
    wl = spectrum.wavelength
    covered = np.zeros(wl.size, int)
    for w, *_ in arms.values():
        at = _pixels(wl, w[0], w[-1])
        np.testing.assert_allclose(wl[at], w, atol=1e-6)
        covered[at] += 1
    single = covered == 1
    for w, f, iv, _ in arms.values():
        at = _pixels(wl, w[0], w[-1])
        alone = single[at]
        np.testing.assert_array_equal(spectrum.flux[at][alone], f[alone])
        np.testing.assert_array_equal(spectrum.ivar[at][alone], iv[alone])
    for (blue, red), (lo, hi) in zip((("B", "R"), ("R", "Z")), DESI_OVERLAPS):
        at = _pixels(wl, lo, hi)
        assert np.all(covered[at] == 2) and covered.sum() - covered.size >= at.size
        (wb, fb, ib, _), (wr, fr, ir, _) = arms[blue], arms[red]
        fb, ib = fb[_pixels(wb, lo, hi)], ib[_pixels(wb, lo, hi)]
        fr, ir = fr[_pixels(wr, lo, hi)], ir[_pixels(wr, lo, hi)]
        np.testing.assert_allclose(spectrum.flux[at], (ib * fb + ir * fr) / (ib + ir), rtol=1e-12)
        np.testing.assert_allclose(spectrum.ivar[at], ib + ir, rtol=1e-12)
        lower, upper = np.minimum(fb, fr), np.maximum(fb, fr)
        assert np.all((spectrum.flux[at] >= lower - 1e-12) & (spectrum.flux[at] <= upper + 1e-12))
        # Continuous: the overlap's mean flux sits between its neighbours' (60 A either side),
        # within the noise, though the two cameras' edges differ by several per cent here.
        sides = [_pixels(wl, lo - 60, lo - DESI_STEP), _pixels(wl, hi + DESI_STEP, hi + 60)]
        mean = [spectrum.flux[p].mean() for p in [at, *sides]]
        error = [1 / np.sqrt(spectrum.ivar[p].sum()) for p in [at, *sides]]
        jump = mean[0] - 0.5 * (mean[1] + mean[2])
        assert abs(jump) < 4 * np.sqrt(error[0] ** 2 + (error[1] ** 2 + error[2] ** 2) / 4), (lo, mean, error)


def _masked_coadd(folder: Path) -> Path:
    """The bright coadd with flags: B pixels at 3680-3688 A (B only), B at 5770-5780 A and R at
    5785-5790 A (ivar 0) inside the B/R overlap, and both cameras at 5795-5798 A."""
    path = folder / f"coadd-{BRIGHT}.fits"
    with fits.open(_coadd(BRIGHT)) as hdul:
        for arm, lo, hi, what in (("B", 3680, 3688, "MASK"), ("B", 5770, 5780, "MASK"),
                                  ("R", 5785, 5790, "IVAR"), ("B", 5795, 5798, "MASK"), ("R", 5795, 5798, "MASK")):
            at = _pixels(hdul[f"{arm}_WAVELENGTH"].data, lo, hi)
            data = hdul[f"{arm}_{what}"].data
            data[0, at] = 0 if what == "IVAR" else 4
        hdul.writeto(path)
    shutil.copy(REAL / f"redrock-{BRIGHT}.fits.gz", folder)
    return path


def test_desi_flagged_pixels_are_not_good_and_the_other_camera_fills_the_overlap(tmp_path):
    (spectrum,) = read_any(_masked_coadd(tmp_path))
    arms = _arms(tmp_path / f"coadd-{BRIGHT}.fits")
    wl = spectrum.wavelength
    assert spectrum.z == _redrock_z(BRIGHT)
    for lo, hi in ((3680, 3688), (5795, 5798)):
        at = _pixels(wl, lo, hi)
        assert at.size and not spectrum.good[at].any() and not spectrum.ivar[at].any()
    for (lo, hi), other in (((5770, 5780), "R"), ((5785, 5790), "B")):
        at = _pixels(wl, lo, hi)
        w, f, iv, _ = arms[other]
        assert spectrum.good[at].all()
        np.testing.assert_array_equal(spectrum.flux[at], f[_pixels(w, lo, hi)])
        np.testing.assert_array_equal(spectrum.ivar[at], iv[_pixels(w, lo, hi)])
    assert spectrum.good.sum() == wl.size - _pixels(wl, 3680, 3688).size - _pixels(wl, 5795, 5798).size


def test_desi_coadd_without_its_redrock_file_names_file_and_target_and_the_batch_goes_on(tmp_path):
    alone, paired = tmp_path / "alone", tmp_path / "paired"
    alone.mkdir()
    paired.mkdir()
    shutil.copy(_coadd(BRIGHT), alone)
    faint = "special-dark-27247"
    shutil.copy(_coadd(faint), paired)
    shutil.copy(REAL / f"redrock-{faint}.fits.gz", paired)
    paths = expand_inputs([alone, paired])
    assert [p.name for p in paths] == [f"coadd-{BRIGHT}.fits.gz", f"coadd-{faint}.fits.gz"]  # redrock: companion
    spectra, errors = read_many(paths)
    assert [s.id for s in spectra] == [f"coadd-{faint}#{DESI[faint]}"]
    assert len(errors) == 1
    assert errors[0].startswith(f"{alone / f'coadd-{BRIGHT}.fits.gz'} [coadd-{BRIGHT}#{DESI[BRIGHT]}]: no redshift")
    assert f"redrock-{BRIGHT}.fits" in errors[0] and "--z" in errors[0]
    spectra, errors = read_many(paths, z_override={f"coadd-{BRIGHT}#{DESI[BRIGHT]}": 0.5})
    assert not errors and [s.z for s in spectra] == [0.5, _redrock_z(faint)]
    spectra, errors = read_many(paths, z_all=0.1)
    assert not errors and [s.z for s in spectra] == [0.1, 0.1]


def test_desi_zbest_catalogue_and_zwarn(tmp_path):
    shutil.copy(_coadd(BRIGHT), tmp_path)
    with fits.open(REAL / f"redrock-{BRIGHT}.fits.gz") as hdul:
        hdul["REDSHIFTS"].name = "ZBEST"  # the older production's name for the same table
        hdul.writeto(tmp_path / f"zbest-{BRIGHT}.fits")
        assert read_any(tmp_path / f"coadd-{BRIGHT}.fits.gz")[0].z == _redrock_z(BRIGHT)
        hdul["ZBEST"].data["ZWARN"][:] = 4
        hdul.writeto(tmp_path / f"zbest-{BRIGHT}.fits", overwrite=True)
    spectra, errors = read_many([tmp_path / f"coadd-{BRIGHT}.fits.gz"])
    assert not spectra and len(errors) == 1 and "ZWARN=4" in errors[0] and "no redshift" in errors[0]


def test_a_redrock_file_given_as_input_is_named_as_such():
    with pytest.raises(DDMError, match=r"redrock-.*: is a DESI redshift catalogue, not spectra"):
        read_any(REAL / f"redrock-{BRIGHT}.fits.gz")


# --- MaNGA DAP test spectra -----------------------------------------------------------------------

@pytest.mark.parametrize("stem", sorted(DAP_FILES))
def test_manga_dap_test_spectra_one_per_row_with_their_redshifts(stem):
    path = REAL / f"{stem}.fits.gz"
    spectra = read_any(path)
    assert [s.id for s in spectra] == [f"{stem}#{row}" for row in range(DAP_FILES[stem])]
    with fits.open(path) as hdul:
        z, wave, flux, mask = (hdul[k].data for k in ("Z", "WAVE", "FLUX", "MASK"))
        assert [s.z for s in spectra] == [float(v) for v in z]
        for row, spectrum in enumerate(spectra):
            np.testing.assert_array_equal(spectrum.wavelength, wave)
            np.testing.assert_array_equal(spectrum.flux, flux[row])
            np.testing.assert_array_equal(spectrum.good, mask[row] == 0)
    assert all(s.position is None and s.wcs is None for s in spectra)


def test_manga_dap_test_spectra_in_a_batch_masked_row_named_redshift_overridable():
    paths = [REAL / f"{stem}.fits.gz" for stem in DAP_FILES]
    spectra, errors = read_many(paths)
    assert len(spectra) == sum(DAP_FILES.values()) - 1
    assert errors == [f"{paths[0]} [MaNGA_test_spectra#{DAP_MASKED_ROW}]: every pixel is masked or has ivar 0"]
    spectra, _ = read_many(paths, z_override={"MaNGA_test_spectra#0": 0.2,
                                              "MaNGA_multicomp_test_spectra": 0.3})
    z = {s.id: s.z for s in spectra}
    assert z["MaNGA_test_spectra#0"] == 0.2 and z["MaNGA_test_spectra#1"] != 0.2
    assert [z[f"MaNGA_multicomp_test_spectra#{row}"] for row in range(3)] == [0.3] * 3


def test_content_not_name_decides_the_reader(tmp_path):
    renamed = tmp_path / "spectra.fits.gz"
    shutil.copy(REAL / "MaNGA_test_spectra.fits.gz", renamed)
    assert len(read_any(renamed)) == 8
    desi = tmp_path / "mine.fits.gz"
    shutil.copy(_coadd(BRIGHT), desi)
    (spectrum,) = read_any(desi)
    assert spectrum.id == f"mine#{DESI[BRIGHT]}" and spectrum.z is None
    assert "only coadd-X.fits files are paired" in spectrum.z_note


# --- MaNGA DRP cubes and RSS files (synthetic, in the DRP layout) ---------------------------------


def test_manga_cube_one_spectrum_per_spaxel_with_data_positions_and_wcs(tmp_path):
    from astropy.wcs import WCS

    path = tmp_path / "manga-8485-1901-LOGCUBE.fits.gz"
    mask, ivar = cube_masks()
    cube = write_cube(path, mask, ivar)
    spectra = read_any(path)
    expected = [(i, j) for j in range(NY) for i in range(NX) if (i, j) not in ((0, 0), (4, 3))]
    assert [s.position for s in spectra] == expected
    assert [s.id for s in spectra] == [f"8485-1901#x{i}y{j}" for i, j in expected]
    sky = WCS(cube_header()).celestial
    for spectrum in spectra:
        i, j = spectrum.position
        assert spectrum.z is None and spectrum.source == str(path)
        np.testing.assert_array_equal(spectrum.wavelength, WAVE)
        np.testing.assert_array_equal(spectrum.flux, cube["flux"][:, j, i])
        np.testing.assert_array_equal(spectrum.good, mask[:, j, i] == 0)
        on_sky = WCS(fits.Header.fromstring(spectrum.wcs)).pixel_to_world(i, j)
        assert on_sky.separation(sky.pixel_to_world(i, j)).arcsec < 1e-6
    (partly,) = [s for s in spectra if s.position == (2, 1)]
    assert partly.good.sum() == N_WAVE - 50
    # No redshift in a DRP cube: one line for the file, and a z-table row for the plateifu serves it.
    spectra, errors = read_many([path])
    assert not spectra and errors == [
        f"{path}: no redshift for any of its 18 spectra (8485-1901#x1y0, 8485-1901#x2y0, 8485-1901#x3y0, ...; "
        "give one with --z or --z-table, by spectrum id or by the part of the id before '#')"]
    spectra, errors = read_many([path], z_override={"8485-1901": 0.03, "8485-1901#x1y0": 0.031})
    assert not errors and len(spectra) == 18
    assert {s.id: s.z for s in spectra}["8485-1901#x1y0"] == 0.031
    assert {s.z for s in spectra} == {0.03, 0.031}


def test_manga_cube_name_from_the_header_when_the_file_is_renamed(tmp_path):
    path = tmp_path / "galaxy.fits"
    write_cube(path, np.zeros((N_WAVE, NY, NX), np.int32), plateifu="7443-12703")
    assert read_any(path)[0].id == "7443-12703#x0y0"


def test_manga_rss_one_spectrum_per_row_with_data(tmp_path):
    path = tmp_path / "manga-8485-1901-LOGRSS.fits.gz"
    rng = np.random.default_rng(1)
    n_rows = 6
    flux = rng.normal(1.0, 0.1, (n_rows, N_WAVE)).astype(np.float32)
    mask = np.zeros((n_rows, N_WAVE), np.int32)
    mask[2] = REJECT3D  # a rejected row: no spectrum
    mask[3] = SMEARIMAGE  # informational only: every pixel good
    mask[4, :30] = BADPIX
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(flux, name="FLUX"),
                  fits.ImageHDU(np.full(flux.shape, 50.0, np.float32), name="IVAR"),
                  fits.ImageHDU(mask, name="MASK"), fits.ImageHDU(WAVE, name="WAVE"),
                  fits.ImageHDU(np.zeros((n_rows, N_WAVE)), name="XPOS"),
                  fits.ImageHDU(np.zeros((n_rows, N_WAVE)), name="YPOS")]).writeto(path)
    spectra = read_any(path)
    assert [s.id for s in spectra] == [f"8485-1901#f{k}" for k in (0, 1, 3, 4, 5)]
    assert [s.position for s in spectra] == [(k,) for k in (0, 1, 3, 4, 5)]
    assert spectra[2].good.all() and spectra[3].good.sum() == N_WAVE - 30
    np.testing.assert_array_equal(spectra[3].flux, flux[4])


def test_bad_cubes_are_one_clear_error_each_and_the_batch_goes_on(tmp_path):
    good = tmp_path / "manga-8485-1901-LOGCUBE.fits.gz"
    write_cube(good, *cube_masks())
    masked = tmp_path / "manga-8485-1902-LOGCUBE.fits.gz"
    write_cube(masked, np.full((N_WAVE, NY, NX), NOCOV | DONOTUSE, np.int32))
    raw = tmp_path / "full.fits"
    write_cube(raw, np.zeros((N_WAVE, NY, NX), np.int32))
    truncated = tmp_path / "manga-8485-1903-LOGCUBE.fits"
    truncated.write_bytes(raw.read_bytes()[: raw.stat().st_size // 2])
    truncated_gz = tmp_path / "manga-8485-1904-LOGCUBE.fits.gz"
    truncated_gz.write_bytes(gzip.compress(raw.read_bytes())[:20000])
    unknown = tmp_path / "unknown.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros(3), name="FOO")]).writeto(unknown)
    paths = [good, masked, truncated, truncated_gz, unknown, REAL / "MaNGA_multicomp_test_spectra.fits.gz"]
    spectra, errors = read_many(paths, z_all=0.03)
    assert len(spectra) == 18 + 3
    expected = {masked: "every spaxel is masked", truncated: "truncated FITS file",
                truncated_gz: "truncated FITS file", unknown: "not a FITS layout ddm-jax reads (HDUs: PRIMARY, FOO)"}
    assert len(errors) == len(expected)
    for path, reason in expected.items():
        mentions = [e for e in errors if e.startswith(f"{path}: ")]
        assert len(mentions) == 1 and reason in mentions[0], (path, errors)


# --- SDSS and arrays: as before --------------------------------------------------------------------

def test_sdss_spec_files_read_as_before():
    path = ppxf_sdss_path(STRONG)
    (spectrum,) = read_any(path)
    direct = read_sdss_fits(path)
    with fits.open(path) as hdul:
        assert fits_layout(hdul) == "sdss"
        coadd = hdul["COADD"].data
        np.testing.assert_array_equal(spectrum.wavelength, 10.0 ** coadd["loglam"].astype(np.float64))
        np.testing.assert_array_equal(spectrum.good, coadd["and_mask"] == 0)
        assert spectrum.z == float(hdul["SPECOBJ"].data["Z"][0])
    assert spectrum.id == direct.id == STRONG
    for key in ("wavelength", "flux", "ivar", "good"):
        np.testing.assert_array_equal(getattr(spectrum, key), getattr(direct, key))
    assert spectrum.position is None and spectrum.wcs is None and spectrum.z_note is None


def test_the_committed_real_spectra_through_prepare(tmp_path, capsys):
    out = tmp_path / "prepared.npz"
    code = cli.main(["prepare", str(REAL), "-o", str(out), "--coverage", "fill", "--snr-policy", "warn"])
    err = capsys.readouterr().err.splitlines()
    assert code == 0, err
    ids = {f"coadd-{stem}#{target}" for stem, target in DESI.items()}
    ids |= {f"{stem}#{row}" for stem, n in DAP_FILES.items() for row in range(n)}
    ids -= {f"MaNGA_test_spectra#{DAP_MASKED_ROW}"}
    prepared = load_prepared(out)
    assert set(prepared["ids"]) == ids
    assert any(f"MaNGA_test_spectra#{DAP_MASKED_ROW}" in line and "every pixel is masked" in line for line in err)
    # the DESI files' FIBERMAP E(B-V) corrected for; the DAP test files carry none: 0, said once
    ebv = dict(zip(prepared["ids"], prepared["ebv_galactic"]))
    for stem, target in DESI.items():
        expected = float(fits.getdata(_coadd(stem), "FIBERMAP")["EBV"][0])
        assert ebv[f"coadd-{stem}#{target}"] == pytest.approx(expected, rel=1e-6)  # float32 in PREPARED
    assert all(ebv[i] == 0 for i in ids if i.startswith("MaNGA"))
    assert len([line for line in err if "no Galactic E(B-V)" in line]) == 1
    assert np.isnan(prepared["spaxel_velocity"]).all()  # no cube here: single spectra keep their redshift


# --- the instrument's resolution (lsf_sigma) and the Galactic E(B-V) -------------------------------

# What the surveys' documentation leads one to expect, with a margin: SDSS's wdisp is ~1 pixel of
# 1e-4 dex (69 km/s); MaNGA's R = lambda / FWHM runs ~1400 (3600 A) to ~2600 (10000 A), single
# spaxels scattering about it; DESI's cameras R ~ 2000 (3600 A) to ~5500 (9800 A).
SDSS_WDISP_PIXELS = (0.5, 1.5)
MANGA_RESOLVING_POWER = (1000.0, 3000.0)
DESI_RESOLVING_POWER = (1900.0, 5800.0)
FWHM_PER_SIGMA = np.sqrt(8 * np.log(2))


def _inside(values: np.ndarray, bounds: tuple[float, float]) -> bool:
    return bool(np.all((values >= bounds[0]) & (values <= bounds[1])))


@pytest.mark.parametrize("name", ["NGC3073_SDSS_DR18", "NGC3522_SDSS_DR18"])
def test_sdss_lsf_is_wdisp_in_angstrom(name):
    path = ppxf_sdss_path(name)
    (spectrum,) = read_any(path)
    wdisp = fits.getdata(path, "COADD")["wdisp"].astype(np.float64)
    pixels = spectrum.lsf_sigma / (spectrum.wavelength * np.log(10) * np.gradient(np.log10(spectrum.wavelength)))
    np.testing.assert_allclose(pixels, wdisp, rtol=1e-9)
    assert _inside(pixels[spectrum.good], SDSS_WDISP_PIXELS)


@pytest.mark.parametrize("stem", sorted(DAP_FILES))
def test_manga_dap_lsf_is_the_sres_resolving_power(stem):
    path = REAL / f"{stem}.fits.gz"
    spectra = read_any(path)
    wave, sres = fits.getdata(path, "WAVE"), fits.getdata(path, "SRES")
    for row, spectrum in enumerate(spectra):
        if row == DAP_MASKED_ROW and stem == "MaNGA_test_spectra":
            continue  # outside the IFU: SRES is meaningless there, and validate refuses the row
        np.testing.assert_allclose(spectrum.lsf_sigma, wave / sres[row] / FWHM_PER_SIGMA, rtol=1e-12)
        assert _inside(spectrum.wavelength / (FWHM_PER_SIGMA * spectrum.lsf_sigma), MANGA_RESOLVING_POWER)


@pytest.mark.parametrize("stem", sorted(DESI))
def test_desi_lsf_from_the_resolution_matrices_and_ebv_from_the_fibermap(stem):
    from ddm_jax.spectra.instrument import sigma_from_resolution_matrix

    (spectrum,) = read_any(_coadd(stem))
    power = spectrum.wavelength / (FWHM_PER_SIGMA * spectrum.lsf_sigma)
    assert _inside(power, DESI_RESOLVING_POWER)
    assert np.all(np.diff(power[: 2000]) > -50)  # rises through the B camera, no jumps
    with fits.open(_coadd(stem)) as hdul:
        assert spectrum.ebv == float(hdul["FIBERMAP"].data["EBV"][0])
        b_wave = hdul["B_WAVELENGTH"].data.astype(np.float64)
        b_sigma = sigma_from_resolution_matrix(np.asarray(hdul["B_RESOLUTION"].data), b_wave)[0]
    alone = _pixels(spectrum.wavelength, b_wave[0], DESI_OVERLAPS[0][0] - 1)  # the B camera alone
    np.testing.assert_allclose(spectrum.lsf_sigma[alone], b_sigma[: alone.size], rtol=1e-12)


def test_manga_cube_lsf_prefers_lsfpost_over_specres_and_reads_ebvgal(tmp_path):
    path = tmp_path / "manga-8485-1901-LOGCUBE.fits"
    write_cube(path, np.zeros((N_WAVE, NY, NX), np.int32))
    (first, *_) = read_any(path)
    np.testing.assert_allclose(first.lsf_sigma, WAVE / 2000.0 / FWHM_PER_SIGMA, rtol=1e-12)  # SPECRES 2000
    assert first.ebv is None
    lsfpost = np.broadcast_to((1.0 + 0.1 * np.arange(NX))[None, None, :], (N_WAVE, NY, NX)).astype(np.float32)
    with fits.open(path, mode="update") as hdul:
        hdul.append(fits.ImageHDU(lsfpost, name="LSFPOST"))
        hdul[0].header["EBVGAL"] = 0.034
    for spectrum in read_any(path):
        i, j = spectrum.position
        np.testing.assert_allclose(spectrum.lsf_sigma, lsfpost[:, j, i], rtol=1e-6)
        assert spectrum.ebv == 0.034


def test_ebv_from_the_z_table_or_for_all_where_the_file_has_none(tmp_path):
    table = tmp_path / "z.csv"
    table.write_text("id,z,ebv\nMaNGA_test_spectra#0,0.05,0.02\nMaNGA_multicomp_test_spectra,0.03,\n")
    from ddm_jax.io.loaders.arrays import read_ebv_table

    ebv_table = read_ebv_table(table)
    assert ebv_table == {"MaNGA_test_spectra#0": 0.02}  # an empty cell gives no value
    paths = [REAL / "MaNGA_test_spectra.fits.gz", REAL / "MaNGA_multicomp_test_spectra.fits.gz", _coadd(BRIGHT)]
    spectra, _ = read_many(paths, ebv_override=ebv_table, ebv_all=0.01)
    ebv = {s.id: s.ebv for s in spectra}
    assert ebv["MaNGA_test_spectra#0"] == 0.02 and ebv["MaNGA_test_spectra#1"] == 0.01
    assert ebv["MaNGA_multicomp_test_spectra#0"] == 0.01
    assert ebv[f"coadd-{BRIGHT}#{DESI[BRIGHT]}"] == float(fits.getdata(_coadd(BRIGHT), "FIBERMAP")["EBV"][0])  # its own
    spectra, errors = read_many(paths[:1], ebv_all=-0.1)
    assert not spectra and errors and all("E(B-V) must be finite and >= 0" in e for e in errors)
