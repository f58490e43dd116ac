"""The bundled nebular-line grids and dust curves (ddm_jax/data/nebular_dust.npz, ddm_jax.nebular):
shapes, the physics a wrong build would break (BPT side of each grid, case-B Balmer ratios, curves
normalised at V), the loader's errors, and a byte-identical rebuild when the wheel is at hand."""

import os
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA, load_tool
from ddm_jax.astro.nebular import CURVES, attenuation, line_attenuation, load_nebular_grids
from ddm_jax.constants import EMISSION_LINES, wavelength_grid
from ddm_jax.errors import DDMError
from ddm_jax.model.bpt import KEWLEY01_NII_ASYMPTOTE, kewley01_nii

LINE = {name: i for i, name in enumerate(EMISSION_LINES)}
NPZ = DATA / "nebular_dust.npz"


@pytest.fixture(scope="module")
def grids():
    return load_nebular_grids()


def log_ratio(grid, numerator, denominator):
    return np.log10(grid.fluxes[:, LINE[numerator]].astype(np.float64) / grid.fluxes[:, LINE[denominator]])


def above_kewley01(grid):
    """(N,) bool: on or above the Kewley et al. 2001 maximum-starburst line of the [NII] BPT diagram."""
    x, y = log_ratio(grid, "nii_6584", "halpha"), log_ratio(grid, "oiii_5007", "hbeta")
    return ~((x < KEWLEY01_NII_ASYMPTOTE) & (y < kewley01_nii(x)))


def test_shapes_finite_positive(grids):
    assert set(grids) == {"hii", "nlr"}
    expected = {"hii": ("12 + log O/H", "log U", "log P/k"), "nlr": ("12 + log O/H", "log U", "log P/k", "log E_peak")}
    for name, grid in grids.items():
        assert grid.param_names == expected[name]
        assert grid.params.dtype == grid.fluxes.dtype == np.float32
        assert grid.params.shape == (grid.fluxes.shape[0], len(expected[name]))
        assert grid.fluxes.shape[1] == len(EMISSION_LINES) == 14
        assert np.all(np.isfinite(grid.params)) and np.all(np.isfinite(grid.fluxes)) and np.all(grid.fluxes > 0)
        assert not grid.fluxes.flags.writeable
    # Full grids (12 x 9 x 12 and 12 x 11 x 12 x 6) less the HII rows without [OIII] (see the provenance).
    assert grids["hii"].fluxes.shape[0] == 12 * 9 * 12 - 10
    assert grids["nlr"].fluxes.shape[0] == 12 * 11 * 12 * 6


def test_hbeta_is_the_unit_and_doublets_have_atomic_ratios(grids):
    for grid in grids.values():
        np.testing.assert_array_equal(grid.fluxes[:, LINE["hbeta"]], 1.0)
        flux = {name: grid.fluxes[:, i].astype(np.float64) for name, i in LINE.items()}
        np.testing.assert_allclose(flux["oiii_5007"] / flux["oiii_4959"], 2.98, rtol=1e-6)
        np.testing.assert_allclose(flux["nii_6584"] / flux["nii_6548"], 3.05, rtol=1e-6)
        # [OI] comes from the grid itself: MAPPINGS' ratio is 3.13.
        np.testing.assert_allclose(flux["oi_6300"] / flux["oi_6363"], 3.13, rtol=0.01)
        # [SII] 6717/6731 within its physical range, high- to low-density limit
        sii = flux["sii_6717"] / flux["sii_6731"]
        assert np.all((sii > 0.4) & (sii < 1.5))


def test_hii_grid_is_star_forming_on_the_bpt_diagram(grids):
    # Kewley et al. 2001 drew their line above models like these: measured 100 % below it.
    assert above_kewley01(grids["hii"]).mean() <= 0.01


def test_nlr_grid_is_mostly_agn_on_the_bpt_diagram(grids):
    nlr = grids["nlr"]
    above = above_kewley01(nlr)
    # Measured 58.5 % of all rows: metal-poor NLRs (12 + log O/H <= 8.06) fall on the star-forming
    # side; from 12 + log O/H = 8.76 with log E_peak >= -1.75, 92.3 %.
    assert 0.55 <= above.mean() <= 0.65
    metal_rich_hard = (nlr.params[:, 0] >= 8.75) & (nlr.params[:, 3] >= -1.75)
    assert above[metal_rich_hard].mean() >= 0.9
    assert above[nlr.params[:, 0] <= 7.7].mean() == 0.0


def test_balmer_ratios_near_case_b(grids):
    hii = grids["hii"].fluxes
    halpha = hii[:, LINE["halpha"]]
    # Measured 2.805-3.384 (median 2.925); above 3.2 only at 12 + log O/H >= 9.08 (cool gas).
    assert np.all((halpha > 2.7) & (halpha < 3.5)) and np.mean(halpha <= 3.2) >= 0.95
    assert 2.85 < np.median(halpha) < 3.0
    np.testing.assert_allclose(np.median(hii[:, LINE["hgamma"]]), 0.468, rtol=0.02)
    np.testing.assert_allclose(np.median(hii[:, LINE["hdelta"]]), 0.259, rtol=0.02)


@pytest.mark.parametrize("curve", CURVES)
def test_attenuation_curves(curve):
    grid = wavelength_grid()
    table = attenuation(curve)
    assert table.shape == grid.shape and table.dtype == np.float32 and np.all(np.isfinite(table))
    rises = np.flatnonzero(np.diff(table) >= 0)
    if curve == "calzetti00":
        # Calzetti et al. 2000, eq. 4 is two polynomials that do not quite meet at 0.63 um:
        # A/A_V steps up by 0.006 there, as published; it falls everywhere else.
        assert grid[rises].tolist() == [6298.0]
    else:
        assert rises.size == 0, "attenuation must fall with wavelength"
    np.testing.assert_allclose(table[grid == 5500.0], 1.0, atol=1e-2)
    np.testing.assert_allclose(attenuation(curve, 5500.0), 1.0, atol=1e-2)
    # Interpolation reproduces the table at its nodes and clips outside it.
    np.testing.assert_allclose(attenuation(curve, grid[::7]), table[::7], rtol=1e-6)
    np.testing.assert_allclose(attenuation(curve, [3000.0, 9000.0]), table[[0, -1]], rtol=1e-6)
    # The line values are the curve itself at the lines: a linear interpolation agrees closely.
    lines = line_attenuation(curve)
    assert lines.shape == (14,) and np.all(np.diff(lines) < 0)
    np.testing.assert_allclose(lines, attenuation(curve, list(EMISSION_LINES.values())), rtol=1e-4)


def test_balmer_decrement_slope_of_the_curves():
    # A(Hbeta) - A(Halpha) per A_V: Calzetti's k(Hb) - k(Ha) = 1.27 (R_V 4.05); CCM89's 1.07 (R_V 3.1).
    for curve, expected in (("calzetti00", 1.27 / 4.05), ("ccm89", 1.07 / 3.1)):
        lines = line_attenuation(curve)
        np.testing.assert_allclose(lines[LINE["hbeta"]] - lines[LINE["halpha"]], expected, rtol=0.02)


def test_unknown_curve_names_the_valid_ones():
    with pytest.raises(DDMError, match="calzetti00, ccm89"):
        attenuation("f99")
    with pytest.raises(DDMError, match="calzetti00, ccm89"):
        line_attenuation("smc")


def test_npz_loads_without_pickles():
    with np.load(NPZ, allow_pickle=False) as data:
        for key in data.files:
            assert data[key].dtype.kind in "fU", key
            assert data[key].dtype.kind == "U" or data[key].dtype == np.float32, key


def test_rebuild_is_byte_identical(tmp_path):
    wheel = os.environ.get("NEBULABAYES_WHEEL")
    if not wheel or not Path(wheel).is_file():
        pytest.skip("set NEBULABAYES_WHEEL to NebulaBayes-0.9.9-py2.py3-none-any.whl "
                    "(pip download --no-deps nebulabayes==0.9.9) to check the rebuild")
    for module in ("astropy", "dust_extinction", "extinction"):
        pytest.importorskip(module, reason=f"the rebuild needs {module} (build-time only)")
    make = load_tool("make_nebular_dust")
    arrays, _ = make.build(Path(wheel))
    output = tmp_path / "nebular_dust.npz"
    make.save_npz_compressed_atomic(output, arrays)
    assert output.read_bytes() == NPZ.read_bytes()
