"""The stellar mass inside a spectrum's aperture (the fibre or the spaxel), from the continuum fit.

The continuum is P(lambda) sum_i w_i T_i, with T_i the BC03 template i divided by its `norms_i`
(its median in 5300-5700 A, in BC03's units: L_sun/A per M_sun formed) and P a multiplicative
polynomial of mean ~1 over the grid (shape only: the weights carry the amplitude). In the rest
frame the flux density F (what `spectra.resample` gives: observed density x (1 + z), per rest-frame
Angstrom) is a luminosity density L = 4 pi D_L^2 F (the (1 + z) of the bandwidth is already in F),
so population i formed

    M_i = w_i / norms_i x FLUX_UNIT x 4 pi D_L(z)^2 / L_SUN   (M_sun)

and the spectrum's stellar mass is the sum: the mass *formed* (what the templates are scaled to;
the bundled set carries no surviving fractions, so the mass returned to the gas is not taken off:
for old populations the surviving stars and remnants weigh ~0.2 dex less, MPA-JHU's convention).
D_L from astropy's Planck18 cosmology. The error is the fit's (`continuum._template_mass`: the
weights' covariance on the NNLS passive set, with the polynomial free) times sqrt(continuum rchi2)
where that exceeds 1 (template mismatch), in dex. It leaves out the systematics: IMF, template
set, dust (P's mean is fixed at ~1, so grey attenuation over the window is not corrected: masses
of dusty galaxies come out low), flux calibration and aperture losses.
"""

from __future__ import annotations

import numpy as np

# SDSS, MaNGA and DESI spectra are in 1e-17 erg/s/cm^2/A (and so is every flux ddm-jax reads)
FLUX_UNIT_CGS = 1e-17
L_SUN_CGS = 3.826e33  # erg/s: BC03's solar luminosity (their L_sun/A units)
COSMOLOGY = "Planck18"  # astropy.cosmology's Planck 2018 (TT,TE,EE+lowE+lensing+BAO): PREPARED provenance


def luminosity_distance_cm(z: np.ndarray) -> np.ndarray:
    """D_L (cm) in `COSMOLOGY` for redshifts (B,); NaN where z <= 0 or is not finite (no distance)."""
    from astropy import cosmology, units

    z = np.asarray(z, np.float64)
    usable = np.isfinite(z) & (z > 0)
    distance = np.full(z.shape, np.nan)
    if usable.any():
        distance[usable] = getattr(cosmology, COSMOLOGY).luminosity_distance(z[usable]).to_value(units.cm)
    return distance


def stellar_mass(template_mass: np.ndarray, template_mass_err: np.ndarray, z: np.ndarray,
                 continuum_rchi2: np.ndarray) -> dict[str, np.ndarray]:
    """log10 of the stellar mass formed (M_sun) and its error (dex), (B,) float32 each.

    template_mass, template_mass_err (B,): sum_i w_i / norms_i of the continuum fit and its formal
    error (flux units x M_sun per L_sun); z (B,) the redshift the spectrum was brought to rest with;
    continuum_rchi2 (B,). NaN where there is no distance (z <= 0), no stellar light (every weight 0)
    or no error.
    """
    template_mass = np.asarray(template_mass, np.float64)
    solar_masses = template_mass * FLUX_UNIT_CGS * 4 * np.pi * luminosity_distance_cm(z) ** 2 / L_SUN_CGS
    with np.errstate(divide="ignore", invalid="ignore"):
        log_mass = np.where(solar_masses > 0, np.log10(solar_masses), np.nan)
        mismatch = np.sqrt(np.maximum(np.nan_to_num(np.asarray(continuum_rchi2, np.float64), nan=1.0), 1.0))
        error = np.asarray(template_mass_err, np.float64) / template_mass / np.log(10) * mismatch
    error = np.where(np.isfinite(log_mass), error, np.nan)
    return {"log_stellar_mass": log_mass.astype(np.float32), "log_stellar_mass_err": error.astype(np.float32)}
