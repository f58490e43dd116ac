"""BPT demarcation lines and classification (docs/model.md#bpt-classification).

x = log([NII]6584/Halpha), y = log([OIII]5007/Hbeta) for the [NII] diagram;
x = log([SII]6717,6731/Halpha) for the [SII] diagram. All functions are elementwise and jittable.

Class coding (int8), the same for both schemes:
  -1 undefined (NaN ratio), 0 star-forming, 1 composite, 2 Seyfert, 3 LINER.
"""

from __future__ import annotations

import jax.numpy as jnp

UNDEFINED, STAR_FORMING, COMPOSITE, SEYFERT, LINER = -1, 0, 1, 2, 3
CLASS_NAMES = {UNDEFINED: "undefined", STAR_FORMING: "star-forming", COMPOSITE: "composite",
               SEYFERT: "Seyfert", LINER: "LINER"}
SCHEMES = ("standard", "upstream")

KAUFFMANN03_ASYMPTOTE = 0.05
KEWLEY01_NII_ASYMPTOTE = 0.47
KEWLEY01_SII_ASYMPTOTE = 0.32
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


def classify_sii(x, y):
    """[SII]-BPT class: SF below Kewley 2001, else Seyfert/LINER by Kewley 2006 (no composite)."""
    x, y = jnp.asarray(x), jnp.asarray(y)
    star_forming = (x < KEWLEY01_SII_ASYMPTOTE) & (y < kewley01_sii(x))
    cls = jnp.where(star_forming, STAR_FORMING, _agn_type(x, y, kewley06_sii))
    return jnp.where(jnp.isfinite(x) & jnp.isfinite(y), cls, UNDEFINED).astype(jnp.int8)
