"""The realistic spectrum generator: classes on their side of the BPT diagram, dust in the Balmer
decrement, noise as its ivar says, truth that `prepare`'s own line fit recovers, and the library."""

import jax
import numpy as np
import pytest

from ddm_jax.constants import LINE_QUANTITIES, N_BINS, NII_HA, OIII_HB, SII_HA, norm_window_slice
from ddm_jax.model import bpt
from ddm_jax.prepare.pipeline import measure
from ddm_jax.training import realistic
from ddm_jax.training.input_pipeline import realistic_library

N = 256
WINDOW = norm_window_slice()
CASE_B_MIN = np.log10(2.75)  # the grids' lowest intrinsic Halpha/Hbeta is 2.79; dust only raises it
RATIO_TOLERANCE_DEX = 0.1  # prepare's ratios against the generator's truth at high S/N


@pytest.fixture(scope="module")
def sf():
    return realistic.galaxies(jax.random.PRNGKey(0), N, "sf")


@pytest.fixture(scope="module")
def agn():
    return realistic.agn_galaxies(jax.random.PRNGKey(1), N)


def test_shapes_scale_and_finiteness(sf, agn):
    for galaxies in (sf, agn):
        assert galaxies.spectrum.shape == galaxies.ivar.shape == (N, N_BINS)
        assert galaxies.lines.shape == (N, len(LINE_QUANTITIES))
        assert all(np.isfinite(np.asarray(field)).all() for field in galaxies)
        assert (np.asarray(galaxies.ivar) > 0).all()
        np.testing.assert_allclose(np.median(np.asarray(galaxies.noiseless)[:, WINDOW], axis=1), 1.0, rtol=1e-5)


def test_classes_lie_on_their_side_of_the_bpt_diagram(sf, agn):
    sf_class = np.asarray(bpt.classify_nii(sf.lines[:, NII_HA], sf.lines[:, OIII_HB]))
    agn_class = np.asarray(bpt.classify_nii(agn.lines[:, NII_HA], agn.lines[:, OIII_HB]))
    # the grid rows are on their side; the 0.05 dex per-species scatter moves a few across a line
    assert np.mean(sf_class == bpt.STAR_FORMING) > 0.9
    assert np.mean(agn_class >= bpt.SEYFERT) > 0.9
    liners = np.asarray(bpt.classify_sii(agn.lines[:, SII_HA], agn.lines[:, OIII_HB])) == bpt.LINER
    assert 0.3 < liners.mean() < 0.7  # seyfert_fraction 0.5


def test_dust_raises_the_balmer_decrement(sf, agn):
    ha_hb = LINE_QUANTITIES.index("log_ha_hb")
    for galaxies in (sf, agn):
        decrement = np.asarray(galaxies.lines[:, ha_hb])
        assert decrement.min() > CASE_B_MIN and np.percentile(decrement, 90) > np.log10(4.0)


def test_noise_matches_its_ivar_and_the_snr_range(sf):
    residual = (np.asarray(sf.spectrum) - np.asarray(sf.noiseless)) * np.sqrt(np.asarray(sf.ivar))
    assert np.std(residual) == pytest.approx(1.0, abs=0.01)
    snr = np.median((np.asarray(sf.noiseless) * np.sqrt(np.asarray(sf.ivar)))[:, WINDOW], axis=1)
    assert snr.min() >= realistic.SNR_RANGE[0] * 0.99 and snr.max() <= realistic.SNR_RANGE[1] * 1.01


def test_a_galaxy_is_a_pure_function_of_its_key():
    first = realistic.galaxies(jax.random.PRNGKey(3), 4, "liner")
    again = realistic.galaxies(jax.random.PRNGKey(3), 4, "liner")
    other = realistic.galaxies(jax.random.PRNGKey(4), 4, "liner")
    np.testing.assert_array_equal(np.asarray(first.spectrum), np.asarray(again.spectrum))
    assert not np.allclose(np.asarray(first.spectrum), np.asarray(other.spectrum))


def test_prepare_measures_the_true_ratios():
    """The truth the networks learn is what `prepare` measures on the same spectrum (high S/N)."""
    galaxies = [realistic.galaxies(jax.random.PRNGKey(5), 6, kind, snr_range=(60.0, 80.0))
                for kind in ("sf", "seyfert", "liner")]
    flux = np.concatenate([np.asarray(g.spectrum) for g in galaxies])
    ivar = np.concatenate([np.asarray(g.ivar) for g in galaxies])
    truth = np.concatenate([np.asarray(g.lines) for g in galaxies])
    measured = measure(flux, ivar)
    for key, index in (("log_nii_ha", NII_HA), ("log_oiii_hb", OIII_HB), ("log_sii_ha", SII_HA)):
        detected = measured["line_snr"].min(axis=1) > 3  # every line measured (weak [OIII] in LINERs is not)
        error = np.abs(measured[key] - truth[:, index])[detected]
        assert detected.sum() >= 9, key
        assert np.median(error) < RATIO_TOLERANCE_DEX / 2 and np.max(error) < 2 * RATIO_TOLERANCE_DEX, (key, error)


def test_the_library_carries_ivar_on_the_unit_median_scale():
    library = realistic_library(seed=2, n_sf=24, n_agn=24, chunk=12)  # two chunks, one compilation per kind
    assert library.sf.shape == (24, N_BINS) and library.agn.shape == (24, N_BINS)
    assert library.has_lines and library.has_ivar
    np.testing.assert_allclose(np.median(np.asarray(library.sf)[:, WINDOW], axis=1), 1.0, rtol=1e-5)
    part = library.rows(slice(0, 4), slice(4, 6))
    assert part.sf_ivar.shape == (4, N_BINS) and part.agn_lines.shape == (2, len(LINE_QUANTITIES))
