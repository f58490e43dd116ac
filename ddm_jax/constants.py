"""Domain constants, each with one source: the rest-frame grid, the emission lines, and the
eight line quantities the regressor learns (docs/model.md#input-grid and
#the-line-ratio-regressor). Synthesis, measurement, inference and plotting all read them here.
"""

from __future__ import annotations

import numpy as np

N_BINS = 2208
WAVELENGTH_START = 3700.0  # Angstrom, rest frame, vacuum
WAVELENGTH_STEP = 2.0
SPEED_OF_LIGHT_KMS = 299_792.458
NORM_WINDOW = (4000.0, 7000.0)  # normalisation window: 4000 < lambda <= 7000 Angstrom


def wavelength_grid(n_bins: int = N_BINS) -> np.ndarray:
    """The DDM's rest-frame grid, `3700 + 2 i` Angstrom, float32 of shape (n_bins,)."""
    return (WAVELENGTH_START + WAVELENGTH_STEP * np.arange(n_bins)).astype(np.float32)


def norm_window_slice(n_bins: int = N_BINS) -> slice:
    """Index range of the normalisation window on the grid (static, so jit sees a slice)."""
    wl = wavelength_grid(n_bins).astype(np.float64)
    idx = np.flatnonzero((wl > NORM_WINDOW[0]) & (wl <= NORM_WINDOW[1]))
    return slice(int(idx[0]), int(idx[-1]) + 1)


# The frame the DDM learned (docs/prepare.md#instrument-and-galactic-extinction): MaNGA's median
# resolving power R = lambda / FWHM at these wavelengths (Angstrom; linear in between, constant
# beyond the ends), from real DR15 spaxels (tools/make_manga_resolution.py). `prepare` convolves a
# spectrum to it on the rest-frame grid where the instrument is sharper.
TARGET_RESOLUTION_WAVELENGTH = (3600.0, 4000.0, 4500.0, 5000.0, 5500.0, 6000.0, 6500.0, 7000.0, 7500.0,
                                8000.0, 8500.0)
TARGET_RESOLVING_POWER = (1423.0, 1611.0, 1762.0, 1815.0, 1870.0, 1895.0, 1827.0, 1960.0, 2086.0, 2176.0, 2335.0)
# Galactic extinction: R_V of the law (dust_extinction's F99, the law of the SFD / Schlafly &
# Finkbeiner 2011 E(B-V) that DESI and MaNGA record).
GALACTIC_RV = 3.1


# Rest-frame vacuum wavelengths (Angstrom), as SDSS's spZline table lists them: SDSS and MaNGA
# spectra are on vacuum wavelengths (air ones sit ~1.8 A bluer at Halpha).
EMISSION_LINES = {
    "oii_3726": 3727.092, "oii_3729": 3729.875, "hdelta": 4102.892, "hgamma": 4341.684,
    "hbeta": 4862.683, "oiii_4959": 4960.295, "oiii_5007": 5008.240, "oi_6300": 6302.046,
    "oi_6363": 6365.536, "nii_6548": 6549.859, "halpha": 6564.614, "nii_6584": 6585.268,
    "sii_6717": 6718.294, "sii_6731": 6732.678,
}

# Weaker lines that are only masked when the stellar continuum is fitted (vacuum, to ~0.5 A: the
# masks are +-10 A wide or more).
MASKED_ONLY_LINES = {
    "neiii_3869": 3870.9, "hepsilon": 3971.2, "nii_5755": 5756.2, "hei_5876": 5877.3, "hei_6678": 6680.0,
    "hei_7065": 7067.1, "ariii_7135": 7137.8, "oii_7320": 7321.9, "oii_7330": 7332.2,
}

# Stellar absorption lines (vacuum Å) of the out-of-domain star spectra (ddm_jax.ood): the Balmer
# series to H8, then Ca II K and H, the G band, Mg b, Fe 5270 and 5335 and Na D.
STELLAR_ABSORPTION_LINES = {
    "halpha": EMISSION_LINES["halpha"], "hbeta": EMISSION_LINES["hbeta"], "hgamma": EMISSION_LINES["hgamma"],
    "hdelta": EMISSION_LINES["hdelta"], "hepsilon": 3971.2, "h8": 3890.2, "ca_k": 3934.8, "ca_h": 3969.6,
    "g_band": 4305.0, "mg_b": 5176.7, "fe_5270": 5270.4, "fe_5335": 5335.1, "na_d2": 5891.6, "na_d1": 5897.6,
}

# Night-sky emission lines (observed frame, air, Å) of the out-of-domain sky spectra: O I, Na D, OH.
SKY_LINES = (5577.34, 6300.30, 6363.78, 5889.95, 5895.92, 6863.96, 7276.41, 7316.28, 7340.88, 7571.75,
             7750.64, 7794.11, 7821.50, 7913.71, 7993.33, 8344.60, 8399.17, 8430.17, 8465.36, 8504.63, 8827.10,
             8885.85, 8919.61, 8943.40, 8958.08)

# The regressor's eight outputs, in order. Upstream documents indices 0, 1 and 6; the other
# five are this project's choice, picked so that the eight values fix every line flux
# (docs/model.md#the-line-ratio-regressor):
#   0 log [NII]6584/Halpha          4 log Halpha/Hbeta (Balmer decrement)
#   1 log [OIII]5007/Hbeta          5 log [SII]6717/[SII]6731 (density)
#   2 log [OI]6300/Halpha           6 log ([SII]6717+6731)/Halpha
#   3 log ([OII]3726+3729)/Hbeta    7 log10 of the Halpha emission equivalent width (A)
LINE_QUANTITIES = ("log_nii_ha", "log_oiii_hb", "log_oi_ha", "log_oii_hb", "log_ha_hb",
                   "log_sii_ratio", "log_sii_ha", "log_ha_ew")
N_LINE_QUANTITIES = len(LINE_QUANTITIES)
NII_HA, OIII_HB, SII_HA = (LINE_QUANTITIES.index(name) for name in ("log_nii_ha", "log_oiii_hb", "log_sii_ha"))


def binned_gaussian(x, centre, sigma):
    """Unit-flux Gaussians averaged over the 2 A bins centred on x, in flux per Angstrom.

    x (K,), centre (P,), sigma (P,) in Angstrom -> (K, P). Every line profile of the project
    (synthetic spectra and the line fit) is this one, as the flux-conserving rebin averages a
    spectrum over each bin. Jittable; JAX is imported here so that the constants load without it.
    """
    import jax.numpy as jnp
    from jax.scipy.special import erf

    half = WAVELENGTH_STEP / 2
    scale = jnp.sqrt(2.0) * sigma
    upper = erf((x[:, None] + half - centre) / scale)
    lower = erf((x[:, None] - half - centre) / scale)
    return 0.5 * (upper - lower) / WAVELENGTH_STEP


# Continuum S/N per 2 A bin below which no spectrum is trusted: the training spectra have 8-50, and
# noise that dominates the continuum hides from a reconstruction chi^2 (the errors are as large).
MIN_CONTINUUM_SNR = 5.0

# The lines measured and reported, in output order.
LINE_NAMES = ("hbeta", "oiii_5007", "oi_6300", "halpha", "nii_6548", "nii_6584", "sii_6717", "sii_6731")

# The DDM was trained only on spectra with S/N > 8 in each of these (docs/model.md#training).
REQUIRED_LINES = ("halpha", "hbeta", "oiii_5007", "nii_6584", "sii_6717", "sii_6731")
SNR_MIN = 8.0
# A PREPARED stellar mass less certain than this (dex) is not used as a network's input: at low
# continuum S/N the fit's weights are unconstrained (a real z = 0.37 DESI galaxy: 7.9 +- 8.6).
MASS_ERR_MAX_DEX = 0.3
# The gate's fit criteria (ddm_jax.prepare.fit says why these values): reduced chi^2 maxima of the
# line and continuum fits, and a broad Halpha that counts (S/N above, and chi^2 lowered by more than).
LINE_RCHI2_MAX = 10.0
CONTINUUM_RCHI2_MAX = 20.0
BROAD_SNR_MIN = 10.0
BROAD_DELTA_CHI2_MIN = 100.0

# Doublets fitted at their atomic flux ratios (weak line: (strong line, strong / weak)): [OIII] and
# [NII] from Storey & Zeippen 2000 (2.98, 3.05), [OI] 3.0 (both from the same upper level).
DOUBLET_RATIOS = {"oiii_4959": ("oiii_5007", 2.98), "nii_6548": ("nii_6584", 3.05), "oi_6363": ("oi_6300", 3.0)}
# [SII]6717/6731 between its high- and low-density limits (Osterbrock & Ferland 2006: ~0.44 at
# n_e >~ 1e4 cm^-3, ~1.45 below ~10 cm^-3); a fit outside is refitted at the limit it crossed.
SII_RATIO_RANGE = (0.44, 1.45)
BALMER_LINES = ("hbeta", "halpha")  # fitted with their own width; the forbidden lines share another
# A second (wing) component is kept when it lowers the BIC by more than this ("very strong"
# evidence on Kass & Raftery's 1995 scale), chi^2 rescaled so the kept model's rchi2 is >= 1.
WING_DELTA_BIC_MIN = 10.0
# The gate's filled-bin limits (resample.FILLED): no filled bin within FILLED_GUARD_KMS of a
# REQUIRED_LINES line (the gas lies within a few hundred km/s of z; narrow lines are < 300 km/s
# wide), and at most MAX_FILLED_SHARE of all bins filled (`prepare --max-filled`).
FILLED_GUARD_KMS = 500.0
MAX_FILLED_SHARE = 0.05
