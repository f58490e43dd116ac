"""The gate's filled-bin criteria on masks from the real rebin: SDSS-like spectra with pixels
masked where the rebin then fills bins (resample.FILLED)."""

import numpy as np
import pytest

from ddm_jax.constants import EMISSION_LINES, MAX_FILLED_SHARE, REQUIRED_LINES
from ddm_jax.errors import InputError
from ddm_jax.prepare import pipeline
from ddm_jax.spectra.resample import rebin_spectra
from spectra_helpers import sdss_like

Z = 0.05


def _masked(rest_ranges, rng, spec_id):
    """An SDSS-like spectrum whose observed pixels in the given rest-frame ranges (A) are bad."""
    spectrum = sdss_like(Z, 1.0, rng, spec_id)
    rest = spectrum.wavelength / (1 + Z)
    for low, high in rest_ranges:
        spectrum.good &= ~((rest >= low) & (rest <= high))
    return spectrum


@pytest.fixture(scope="module")
def masks():
    rng = np.random.default_rng(2)
    halpha = EMISSION_LINES["halpha"]
    cases = {
        "clean": [],
        "halpha filled": [(halpha - 4, halpha + 4)],
        "21 % filled far from the lines": [(7180.0, 8114.0)],
        "oii filled": [(3700.0, 3740.0)],  # not a required line, and 1 % of the bins
    }
    grid = rebin_spectra([_masked(ranges, rng, name) for name, ranges in cases.items()])
    return dict(zip(cases, grid["mask"]))


def test_filled_bins_at_a_required_line_or_too_many_fail(masks):
    out = pipeline.filled_check(np.stack(list(masks.values())))
    verdict = dict(zip(masks, out["filled_ok"]))
    assert verdict == {"clean": True, "halpha filled": False, "21 % filled far from the lines": False,
                       "oii filled": True}
    names = list(masks)
    np.testing.assert_array_equal(out["filled_lines"][names.index("halpha filled")],
                                  [name == "halpha" for name in REQUIRED_LINES])
    share = out["filled_share"][names.index("21 % filled far from the lines")]
    assert 0.2 < share < 0.22 and share > MAX_FILLED_SHARE
    assert pipeline.filled_check(masks["21 % filled far from the lines"][None], max_filled=0.25)["filled_ok"][0]


def test_the_gate_message_names_the_line_and_the_share(masks):
    arrays = {"ids": np.array(["a", "b"]), "line_snr": np.full((2, 8), 50.0), "line_fit_ok": np.ones(2, bool),
              "broad_balmer": np.zeros(2, bool),
              **pipeline.filled_check(np.stack([masks["halpha filled"], masks["21 % filled far from the lines"]]))}
    assert "of halpha" in pipeline._gate_message(arrays, 0)
    share = f"{100 * arrays['filled_share'][1]:.1f} %"
    assert f"{share} of the bins interpolated (FILLED), above 5 % (--max-filled)" in pipeline._gate_message(arrays, 1)


def test_a_share_outside_zero_to_one_is_refused_before_the_work():
    with pytest.raises(InputError, match="between 0 and 1"):
        pipeline.prepare_spectra([sdss_like(Z, 1.0, np.random.default_rng(0))], max_filled=1.5)
