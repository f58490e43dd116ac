"""BPT demarcation lines and classification (docs/model.md#bpt-classification).

x = log([NII]6584/Halpha), y = log([OIII]5007/Hbeta) for the [NII] diagram;
x = log([SII]6717,6731/Halpha) for the [SII] diagram, x = log([OI]6300/Halpha) for the [OI] one.
All functions are elementwise and jittable.

Class coding (int8), the same for every diagram and scheme:
  -1 undefined (NaN ratio), 0 star-forming, 1 composite, 2 Seyfert, 3 LINER, 4 ambiguous
  (Kewley et al. 2006's classes from all three diagrams, `classify_kewley06`, only).
WHAN classes (Cid Fernandes et al. 2011, `classify_whan`): -1 undefined, 0 star-forming, 1 strong
AGN, 2 weak AGN, 3 retired (or passive).
"""

from __future__ import annotations

import jax.numpy as jnp

UNDEFINED, STAR_FORMING, COMPOSITE, SEYFERT, LINER, AMBIGUOUS = -1, 0, 1, 2, 3, 4
CLASS_NAMES = {UNDEFINED: "undefined", STAR_FORMING: "star-forming", COMPOSITE: "composite",
               SEYFERT: "Seyfert", LINER: "LINER"}
KEWLEY06_CLASS_NAMES = {**CLASS_NAMES, AMBIGUOUS: "ambiguous"}
WHAN_SF, WHAN_STRONG_AGN, WHAN_WEAK_AGN, WHAN_RETIRED = 0, 1, 2, 3
WHAN_CLASS_NAMES = {UNDEFINED: "undefined", WHAN_SF: "star-forming", WHAN_STRONG_AGN: "strong AGN",
                    WHAN_WEAK_AGN: "weak AGN", WHAN_RETIRED: "retired"}
# WHAN boundaries: log [NII]/Halpha, and Halpha EWs (Angstrom) of strong AGN and of any ionisation
# beyond what old stars give.
WHAN_NII_HA, WHAN_STRONG_EW, WHAN_MIN_EW = -0.4, 6.0, 3.0
SCHEMES = ("standard", "upstream")

KAUFFMANN03_ASYMPTOTE = 0.05
KEWLEY01_NII_ASYMPTOTE = 0.47
KEWLEY01_SII_ASYMPTOTE = 0.32
KEWLEY01_OI_ASYMPTOTE = -0.59
UPSTREAM_AGN_X = 0.4  # the upstream notebook's stand-in for the 0.47 asymptote


def kauffmann03(x):
    """Kauffmann et al. 2003 pure star-formation line ([NII] diagram), valid for x < 0.05."""
    return 0.61 / (x - KAUFFMANN03_ASYMPTOTE) + 1.3


def kewley01_nii(x):
    """Kewley et al. 2001 maximum-starburst line ([NII] diagram), valid for x < 0.47."""
    return 0.61 / (x - KEWLEY01_NII_ASYMPTOTE) + 1.19


def kewley01_sii(x):
    """Kewley et al. 2001 maximum-starburst line ([SII] diagram), valid for x < 0.32."""
    return 0.72 / (x - KEWLEY01_SII_ASYMPTOTE) + 1.30


def kewley01_oi(x):
    """Kewley et al. 2001 maximum-starburst line ([OI] diagram), valid for x < -0.59."""
    return 0.73 / (x - KEWLEY01_OI_ASYMPTOTE) + 1.33


def kewley06_oi(x):
    """Kewley et al. 2006 Seyfert/LINER division ([OI] diagram)."""
    return 1.18 * x + 1.30


def schawinski07(x):
    """Schawinski et al. 2007 Seyfert/LINER division ([NII] diagram)."""
    return 1.05 * x + 0.45


def kewley06_sii(x):
    """Kewley et al. 2006 Seyfert/LINER division ([SII] diagram)."""
    return 1.89 * x + 0.76


def _agn_type(x, y, seyfert_line):
    return jnp.where(y > seyfert_line(x), SEYFERT, LINER)


def classify_nii(x, y, scheme: str = "standard"):
    """[NII]-BPT class (coding in the module docstring) of arrays x, y of one shape.

    standard: SF below Kauffmann (x < 0.05); AGN on or above Kewley 2001 or x >= 0.47;
      composite between; AGN split by Schawinski 2007.
    upstream: as the original notebook: only x < 0 can be SF, and x > 0.4 is always AGN.
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    if scheme == "standard":
        star_forming = (x < KAUFFMANN03_ASYMPTOTE) & (y < kauffmann03(x))
        below_kewley = (x < KEWLEY01_NII_ASYMPTOTE) & (y < kewley01_nii(x))
    elif scheme == "upstream":
        star_forming = (x < 0.0) & (y < kauffmann03(x))
        below_kewley = (x <= UPSTREAM_AGN_X) & (y < kewley01_nii(x))
    else:
        raise ValueError(f"unknown BPT scheme {scheme!r}; choose one of {SCHEMES}")
    cls = jnp.where(star_forming, STAR_FORMING,
                    jnp.where(below_kewley, COMPOSITE, _agn_type(x, y, schawinski07)))
    return jnp.where(jnp.isfinite(x) & jnp.isfinite(y), cls, UNDEFINED).astype(jnp.int8)


def _below(x, y, curve, asymptote):
    """Below a Kewley 2001 curve, on its valid (left) side."""
    return (x < asymptote) & (y < curve(x))


def _classify_agn_diagram(x, y, curve, asymptote, seyfert_line):
    x, y = jnp.asarray(x), jnp.asarray(y)
    cls = jnp.where(_below(x, y, curve, asymptote), STAR_FORMING, _agn_type(x, y, seyfert_line))
    return jnp.where(jnp.isfinite(x) & jnp.isfinite(y), cls, UNDEFINED).astype(jnp.int8)


def classify_sii(x, y):
    """[SII]-BPT class: SF below Kewley 2001, else Seyfert/LINER by Kewley 2006 (no composite)."""
    return _classify_agn_diagram(x, y, kewley01_sii, KEWLEY01_SII_ASYMPTOTE, kewley06_sii)


def classify_oi(x, y):
    """[OI]-BPT class: SF below Kewley 2001, else Seyfert/LINER by Kewley 2006 (no composite)."""
    return _classify_agn_diagram(x, y, kewley01_oi, KEWLEY01_OI_ASYMPTOTE, kewley06_oi)


def classify_kewley06(x_nii, x_sii, x_oi, y):
    """Kewley et al. 2006's classes from the three diagrams at once (their section 4): star-forming
    below Kauffmann 2003 ([NII]) and Kewley 2001 ([SII], [OI]); composite between Kauffmann and
    Kewley in [NII] and below Kewley 2001 in the others; Seyfert (LINER) above Kewley 2001 in all
    three and above (below) the Seyfert/LINER lines in both [SII] and [OI]; ambiguous otherwise.
    Undefined where a ratio is NaN."""
    x_nii, x_sii, x_oi, y = (jnp.asarray(a) for a in (x_nii, x_sii, x_oi, y))
    below_kauffmann = (x_nii < KAUFFMANN03_ASYMPTOTE) & (y < kauffmann03(x_nii))
    below_nii = _below(x_nii, y, kewley01_nii, KEWLEY01_NII_ASYMPTOTE)
    below_sii = _below(x_sii, y, kewley01_sii, KEWLEY01_SII_ASYMPTOTE)
    below_oi = _below(x_oi, y, kewley01_oi, KEWLEY01_OI_ASYMPTOTE)
    starburst_others = below_sii & below_oi
    agn_all = ~below_nii & ~below_sii & ~below_oi
    seyfert_both = (y > kewley06_sii(x_sii)) & (y > kewley06_oi(x_oi))
    liner_both = (y <= kewley06_sii(x_sii)) & (y <= kewley06_oi(x_oi))
    cls = jnp.where(below_kauffmann & starburst_others, STAR_FORMING,
                    jnp.where(~below_kauffmann & below_nii & starburst_others, COMPOSITE,
                              jnp.where(agn_all & seyfert_both, SEYFERT,
                                        jnp.where(agn_all & liner_both, LINER, AMBIGUOUS))))
    finite = jnp.isfinite(x_nii) & jnp.isfinite(x_sii) & jnp.isfinite(x_oi) & jnp.isfinite(y)
    return jnp.where(finite, cls, UNDEFINED).astype(jnp.int8)


def classify_whan(x_nii, ew_halpha):
    """WHAN class (Cid Fernandes et al. 2011) from log [NII]/Halpha and the Halpha emission EW (A):
    retired below WHAN_MIN_EW; above it star-forming left of WHAN_NII_HA, right of it a strong AGN
    above WHAN_STRONG_EW and a weak one below."""
    x, ew = jnp.asarray(x_nii), jnp.asarray(ew_halpha)
    agn = jnp.where(ew > WHAN_STRONG_EW, WHAN_STRONG_AGN, WHAN_WEAK_AGN)
    cls = jnp.where(ew < WHAN_MIN_EW, WHAN_RETIRED, jnp.where(x < WHAN_NII_HA, WHAN_SF, agn))
    return jnp.where(jnp.isfinite(x) & jnp.isfinite(ew), cls, UNDEFINED).astype(jnp.int8)
