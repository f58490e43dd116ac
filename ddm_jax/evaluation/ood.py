"""Out-of-domain test inputs for the trust outputs (docs/trust.md#out-of-domain-test-inputs).

Four kinds of spectra the DDM was never trained on, on the 2208-bin rest-frame grid at unit
median in the normalisation window, each with its inverse variance (of the noise added):

- `type1_agn`: an in-domain composite plus a blue power law (f_λ ∝ λ^-β, β 1-2.5, 0.3-2 times the
  galaxy at 5500 Å) and broad Hα, Hβ, Hγ, Hδ (FWHM 2000-8000 km/s, Hα EW 100-600 Å against
  the total continuum, Balmer decrement 2.5-4).
- `stars`: a crude stellar spectrum, not a stellar population: a Planck curve of 3500-30000 K
  times Gaussian absorption lines: Balmer lines (deepest near 10000 K) and Ca II H&K, G band,
  Mg b, Fe 5270/5335 and Na D (deeper the cooler the star).
- `sky`: a faint flat continuum dominated by night-sky emission lines (O I 5577, 6300, 6364,
  Na D and OH lines, observed-frame air wavelengths) moved to the rest frame of z ~ U(0.02, 0.2).
- `low_snr`: in-domain composites with Gaussian noise at S/N 1-3 per bin.

Pure NumPy, a function of (seed, arguments).
"""

from __future__ import annotations

import numpy as np

from ddm_jax.constants import (
    EMISSION_LINES,
    SKY_LINES,
    SPEED_OF_LIGHT_KMS,
    STELLAR_ABSORPTION_LINES,
    norm_window_slice,
    wavelength_grid,
)
from ddm_jax.training.synthetic import HDELTA_TO_HBETA, HGAMMA_TO_HBETA

KINDS = ("type1_agn", "stars", "sky", "low_snr")
SNR = 30.0  # per bin, the noise of the synthetic training spectra
BROAD_LINES = {"halpha": 1.0, "hbeta": 1.0, "hgamma": HGAMMA_TO_HBETA, "hdelta": HDELTA_TO_HBETA}  # Hβ-relative but Hα
BALMER = ("halpha", "hbeta", "hgamma", "hdelta", "hepsilon", "h8")  # deepest near 10000 K; the rest: cooler stars
BALMER_ABSORPTION = tuple(STELLAR_ABSORPTION_LINES[name] for name in BALMER)
METAL_ABSORPTION = tuple(value for name, value in STELLAR_ABSORPTION_LINES.items() if name not in BALMER)
PLANCK_HC_K = 1.4387769e8  # h c / k in Å K


def _gaussians(wave, centres, sigmas, amplitudes):
    """Sum of Gaussians with the given integrated fluxes: (B, n_bins) from (B, P) parameters."""
    profile = np.exp(-0.5 * ((wave[None, None] - centres[..., None]) / sigmas[..., None]) ** 2)
    return np.sum(amplitudes[..., None] * profile / (np.sqrt(2 * np.pi) * sigmas[..., None]), axis=1)


def _unit_median(spectra):
    return spectra / np.median(spectra[:, norm_window_slice(spectra.shape[1])], axis=1, keepdims=True)


def _noisy(rng, spectra, snr):
    """Unit-median spectra plus Gaussian noise of sd 1/snr per bin, and their ivar (both float32)."""
    snr = np.broadcast_to(np.asarray(snr, np.float64).reshape(-1, 1), spectra.shape)
    noisy = spectra + rng.standard_normal(spectra.shape) / snr
    return noisy.astype(np.float32), (snr**2).astype(np.float32)


def _composites(rng, library, n):
    sf = np.asarray(library.sf)[rng.integers(0, library.sf.shape[0], n)]
    agn = np.asarray(library.agn)[rng.integers(0, library.agn.shape[0], n)]
    w = rng.uniform(size=(n, 1))
    return w * sf + (1 - w) * agn


def type1_agn(library, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    wave = wavelength_grid()
    galaxy = _composites(rng, library, n)
    beta = rng.uniform(1.0, 2.5, (n, 1))
    power_law = rng.uniform(0.3, 2.0, (n, 1)) * (wave / 5500.0) ** -beta
    continuum = galaxy + power_law
    names = list(BROAD_LINES)
    centres = np.tile([EMISSION_LINES[name] for name in names], (n, 1))
    fwhm = rng.uniform(2000.0, 8000.0, (n, 1))
    sigmas = centres * fwhm / SPEED_OF_LIGHT_KMS / (2 * np.sqrt(2 * np.log(2)))
    halpha_bin = np.searchsorted(wave, EMISSION_LINES["halpha"])
    ha_flux = rng.uniform(100.0, 600.0, (n, 1)) * continuum[:, halpha_bin:halpha_bin + 1]  # each spectrum's own EW
    decrement = rng.uniform(2.5, 4.0, (n, 1))
    relative = np.array([BROAD_LINES[name] for name in names])[None] / decrement
    relative[:, 0] = 1.0
    spectra = continuum + _gaussians(wave, centres, sigmas, ha_flux * relative)
    return _noisy(rng, _unit_median(spectra), SNR)


def stars(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    wave = wavelength_grid()
    temperature = np.exp(rng.uniform(np.log(3500.0), np.log(30000.0), (n, 1)))
    planck = wave**-5 / np.expm1(PLANCK_HC_K / (wave * temperature))
    balmer_depth = 0.6 * np.exp(-0.5 * (np.log(temperature / 10000.0) / 0.35) ** 2)
    metal_depth = 0.6 * np.clip((9000.0 - temperature) / 5500.0, 0.0, 1.0)
    centres = np.array(BALMER_ABSORPTION + METAL_ABSORPTION)
    depth = np.concatenate([np.repeat(balmer_depth, len(BALMER_ABSORPTION), 1),
                            np.repeat(metal_depth, len(METAL_ABSORPTION), 1)], axis=1)
    sigmas = np.concatenate([rng.uniform(8.0, 20.0, (n, len(BALMER_ABSORPTION))),
                             rng.uniform(2.0, 6.0, (n, len(METAL_ABSORPTION)))], axis=1)
    optical_depth = np.sum(depth[..., None] * np.exp(-0.5 * ((wave - centres[:, None]) / sigmas[..., None]) ** 2), 1)
    return _noisy(rng, _unit_median(planck * np.exp(-optical_depth)), SNR)


def sky(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    wave = wavelength_grid()
    z = rng.uniform(0.02, 0.2, (n, 1))
    centres = np.array(SKY_LINES)[None] / (1 + z)
    fluxes = rng.uniform(5.0, 60.0, centres.shape)  # in units of the continuum per Å
    fluxes[:, 0] *= 3.0  # O I 5577 is the brightest
    continuum = 1.0 + rng.uniform(-0.2, 0.2, (n, 1)) * (wave - 5500.0) / 2000.0
    spectra = continuum + _gaussians(wave, centres, np.full(centres.shape, 1.5), fluxes)
    return _noisy(rng, _unit_median(spectra), rng.uniform(3.0, 10.0, n))


def low_snr(library, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return _noisy(rng, _composites(rng, library, n), rng.uniform(1.0, 3.0, n))


def ood_sets(library, n: int, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each kind's (spectra, ivar), (n, 2208) float32, from an in-domain library (`SpectralLibrary`)."""
    return {"type1_agn": type1_agn(library, n, seed), "stars": stars(n, seed + 1), "sky": sky(n, seed + 2),
            "low_snr": low_snr(library, n, seed + 3)}
