"""BPT classes on points chosen on each side of every demarcation line, both schemes."""

import numpy as np
import pytest

from ddm_jax.model import bpt

S, C, SY, L, U = bpt.STAR_FORMING, bpt.COMPOSITE, bpt.SEYFERT, bpt.LINER, bpt.UNDEFINED
EPS = 0.02  # dex either side of a line


def kauffmann(x):
    return 0.61 / (x - 0.05) + 1.3


def kewley(x):
    return 0.61 / (x - 0.47) + 1.19


def schawinski(x):
    return 1.05 * x + 0.45


# (x, y, standard class, upstream class); y values set EPS above/below the lines at that x.
POINTS = [
    (-0.5, kauffmann(-0.5) - EPS, S, S),                 # below Kauffmann
    (-0.5, kauffmann(-0.5) + EPS, C, C),                 # just above Kauffmann, below Kewley
    (-0.5, kewley(-0.5) + EPS, SY, SY),                  # above Kewley, above Schawinski
    (-0.2, kewley(-0.2) - EPS, C, C),                    # between the curves
    (0.02, kauffmann(0.02) - EPS, S, C),                 # x >= 0 below Kauffmann: upstream says composite
    (0.3, kewley(0.3) - EPS, C, C),                      # right of Kauffmann's asymptote, below Kewley
    (0.3, kewley(0.3) + EPS, L, L),                      # above Kewley, below Schawinski
    (0.3, schawinski(0.3) + EPS, SY, SY),                # above Kewley and Schawinski
    (0.44, kewley(0.44) - EPS, C, L),                    # 0.4 < x < 0.47 below Kewley: upstream says AGN
    (0.6, schawinski(0.6) - EPS, L, L),                  # right of Kewley's asymptote, below Schawinski
    (0.6, schawinski(0.6) + EPS, SY, SY),                # right of Kewley's asymptote, above Schawinski
    (np.nan, 0.0, U, U),
    (0.0, np.inf, U, U),
]


@pytest.mark.parametrize("scheme, column", [("standard", 2), ("upstream", 3)])
def test_nii_classes_each_side_of_every_line(scheme, column):
    x, y = np.array([p[0] for p in POINTS]), np.array([p[1] for p in POINTS])
    expected = np.array([p[column] for p in POINTS], np.int8)
    got = np.asarray(bpt.classify_nii(x, y, scheme))
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, expected)


def test_sii_classes():
    x = np.array([-0.5, -0.5, -0.5, 0.5, 0.5, np.nan])
    y = np.array([bpt.kewley01_sii(-0.5) - EPS, bpt.kewley01_sii(-0.5) + EPS, 2.0,
                  1.89 * 0.5 + 0.76 - EPS, 1.89 * 0.5 + 0.76 + EPS, 0.0])
    # (-0.5, 2.0) is above Kewley and above Kewley 2006's line at x = -0.5 (-0.185): Seyfert
    np.testing.assert_array_equal(np.asarray(bpt.classify_sii(x, y)), [S, SY, SY, L, SY, U])


def test_unknown_scheme():
    with pytest.raises(ValueError, match="unknown BPT scheme"):
        bpt.classify_nii(np.zeros(1), np.zeros(1), "mine")


# The [OI] diagram and Kewley et al. 2006's classes, against their published formulas (their
# eqs. 7-9 and Kewley et al. 2001's [OI] curve), written out here from the papers.
def kewley01_oi(x):
    return 0.73 / (x + 0.59) + 1.33


def kewley06_oi(x):
    return 1.18 * x + 1.30


def kewley01_sii(x):
    return 0.72 / (x - 0.32) + 1.30


def kewley06_sii(x):
    return 1.89 * x + 0.76


def test_oi_classes_each_side_of_both_lines():
    x = np.array([-1.2, -1.2, -0.3, -0.3, np.nan])
    y = np.array([kewley01_oi(-1.2) - EPS, kewley01_oi(-1.2) + EPS, kewley06_oi(-0.3) - EPS,
                  kewley06_oi(-0.3) + EPS, 0.0])
    # (-0.3, *) is right of the asymptote (-0.59): never star-forming
    np.testing.assert_array_equal(np.asarray(bpt.classify_oi(x, y)), [S, SY, L, SY, U])


A = bpt.AMBIGUOUS
# (x_nii, x_sii, x_oi, y, Kewley 2006 class): each class, and a point moved across one line at a time.
KEWLEY06_POINTS = [
    (-0.6, -0.6, -1.5, kauffmann(-0.6) - EPS, S),          # starburst in all three
    (-0.6, -0.6, -1.5, kauffmann(-0.6) + EPS, C),          # across Kauffmann only: composite
    (-0.6, 0.2, -1.5, kauffmann(-0.6) - EPS, A),           # SF in [NII], above kewley01_sii(0.2) = -4.7: ambiguous
    (-0.1, -0.7, -1.5, min(kewley(-0.1), kewley01_sii(-0.7)) - EPS, C),  # composite, SF in the others
    (0.2, 0.1, -0.3, max(kewley06_oi(-0.3), kewley06_sii(0.1)) + EPS, SY),  # above Kewley 2001 and both Sy/LINER lines
    (0.2, 0.1, -0.3, 0.6, L),                              # above Kewley 2001, below both Sy/LINER lines (~0.95)
    (0.2, 0.0, -0.3, kewley06_oi(-0.3) - EPS, A),          # Seyfert in [SII] (above 0.76), LINER in [OI]
    (0.2, np.nan, -0.3, 1.0, U),
]


def test_kewley06_classes():
    columns = [np.array([p[k] for p in KEWLEY06_POINTS]) for k in range(5)]
    got = np.asarray(bpt.classify_kewley06(*columns[:4]))
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, columns[4].astype(np.int8))


def test_whan_classes_each_side_of_every_boundary():
    x = np.array([-0.6, -0.2, -0.2, -0.2, -0.6, np.nan])
    ew = np.array([3.5, 6.5, 5.5, 2.5, 2.5, 10.0])
    np.testing.assert_array_equal(np.asarray(bpt.classify_whan(x, ew)),
                                  [bpt.WHAN_SF, bpt.WHAN_STRONG_AGN, bpt.WHAN_WEAK_AGN, bpt.WHAN_RETIRED,
                                   bpt.WHAN_RETIRED, U])
