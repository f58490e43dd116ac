"""The Galaxy's dust and the spectrograph between a galaxy and the frame the DDM learned, undone
(or matched) in the observed frame before the rest-frame rebin (docs/prepare.md#the-frame).

Galactic extinction: Fitzpatrick (1999) with R_V = GALACTIC_RV (`dust_extinction.parameter_averages.F99`),
the law the SFD / Schlafly & Finkbeiner (2011) E(B-V) of the survey files is defined with.

Resolution: a spectrum's line-spread function is a Gaussian of sigma `lsf_sigma` (Angstrom, per
observed pixel). The target is MaNGA's (what the released network saw): R = lambda / FWHM from
constants.TARGET_RESOLVING_POWER at the rest wavelength, i.e. sigma_target(lambda_rest) in rest
Angstrom, (1 + z) times that in the observed frame. A sharper spectrum is convolved with the
missing sigma_extra = sqrt(sigma_target^2 - sigma^2) (a kernel of that variance in the pixel's own
width, good pixels only); a coarser one cannot be sharpened, and is reported (`coarser_fraction`).
The inverse variance is kept: smoothing correlates neighbouring pixels, and the noise of a sum over
a line or a 2 A bin, what the fits see, is nearly unchanged by it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ddm_jax.constants import (
    GALACTIC_RV,
    N_BINS,
    SPEED_OF_LIGHT_KMS,
    TARGET_RESOLUTION_WAVELENGTH,
    TARGET_RESOLVING_POWER,
    WAVELENGTH_START,
    WAVELENGTH_STEP,
)
from ddm_jax.errors import InputError
from ddm_jax.spectra.spectrum import Spectrum, describe

FWHM_PER_SIGMA = float(np.sqrt(8 * np.log(2)))
KERNEL_SIGMAS = 5.0  # the convolution kernel reaches this many sigma_extra either side
SAMPLED_MIN = 0.75  # pixels: from this sigma_extra up the kernel is a sampled Gaussian
# An instrument counts as coarser than the target where its sigma exceeds the target's by more
# than this: MaNGA's own spaxels scatter by ~10 % about the median that the target is.
COARSER_TOLERANCE = 0.1
EXTINCTION_LAW = f"F99 (dust_extinction), R_V = {GALACTIC_RV}"  # as the provenance names it
RESOLUTIONS = ("manga", "native")  # prepare's --resolution: convolve to the target, or leave as observed


def target_sigma(rest_wavelength) -> np.ndarray:
    """The target's Gaussian sigma in rest-frame Angstrom at rest wavelengths (any shape)."""
    rest = np.asarray(rest_wavelength, np.float64)
    return rest / np.interp(rest, TARGET_RESOLUTION_WAVELENGTH, TARGET_RESOLVING_POWER) / FWHM_PER_SIGMA


def target_sigma_kms(rest_wavelength) -> np.ndarray:
    """The target's sigma in km/s at rest wavelengths (any shape)."""
    rest = np.asarray(rest_wavelength, np.float64)
    return target_sigma(rest) / rest * SPEED_OF_LIGHT_KMS


def sigma_from_resolving_power(wavelength, resolving_power) -> np.ndarray:
    """sigma (Angstrom) = lambda / R / sqrt(8 ln 2) for R = lambda / FWHM (MaNGA's SPECRES and
    the DAP's SRES); NaN where R is not finite and > 0. Same shapes (broadcast)."""
    r = np.asarray(resolving_power, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isfinite(r) & (r > 0), np.asarray(wavelength, np.float64) / r / FWHM_PER_SIGMA, np.nan)


def sigma_from_wdisp(wavelength, wdisp) -> np.ndarray:
    """sigma (Angstrom) from SDSS's `wdisp`, a sigma in units of the log10-wavelength pixel
    (1e-4 dex): wdisp * dlog10(lambda) * ln(10) * lambda. (N,) -> (N,)."""
    wavelength = np.asarray(wavelength, np.float64)
    step = np.gradient(np.log10(wavelength))
    return np.asarray(wdisp, np.float64) * step * np.log(10.0) * wavelength


def sigma_from_resolution_matrix(resolution, wavelength) -> np.ndarray:
    """sigma (Angstrom) of each row of DESI resolution matrices, the kernel of each pixel.

    resolution (n, n_diag, N): desispec's band-diagonal storage (scipy dia_matrix data, offsets
    n_diag // 2 down to -(n_diag // 2)): element (i, i + k) of the matrix is
    resolution[:, n_diag // 2 - k, i + k]. sigma^2 is the kernel's weighted variance in pixels,
    times the local pixel width; the first and last n_diag // 2 pixels, whose kernels the matrix
    cuts off, take their inner neighbour's. Returns (n, N); NaN where a kernel does not sum to > 0.
    """
    resolution = np.asarray(resolution, np.float64)
    n_diag, n_pixels = resolution.shape[1:]
    offsets = n_diag // 2 - np.arange(n_diag)
    columns = np.arange(n_pixels)[None, :] + offsets[:, None]  # (n_diag, N): j = i + k
    inside = (columns >= 0) & (columns < n_pixels)
    rows = np.take_along_axis(resolution, np.broadcast_to(np.clip(columns, 0, n_pixels - 1), resolution.shape), 2)
    weight = np.where(inside, rows, 0.0)
    total = weight.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = (weight * offsets[:, None]).sum(axis=1) / total
        variance = (weight * offsets[:, None] ** 2).sum(axis=1) / total - mean**2
    sigma_pixels = np.where(total > 0, np.sqrt(np.maximum(variance, 0.0)), np.nan)
    half = n_diag // 2
    if n_pixels > 2 * half:
        sigma_pixels[:, :half] = sigma_pixels[:, half, None]
        sigma_pixels[:, n_pixels - half:] = sigma_pixels[:, n_pixels - half - 1, None]
    return sigma_pixels * np.gradient(np.asarray(wavelength, np.float64))


def galactic_transmission(wavelength, ebv: float) -> np.ndarray:
    """The fraction of light the Galaxy's dust lets through at observed wavelengths (Angstrom):
    10^(-0.4 A(lambda)), A from F99 with R_V = GALACTIC_RV and E(B-V) = `ebv`. (N,) -> (N,)."""
    import astropy.units as u
    from dust_extinction.parameter_averages import F99

    if not np.isfinite(ebv) or ebv < 0:
        raise InputError(f"E(B-V) must be finite and >= 0, got {ebv}")
    wavelength = np.asarray(wavelength, np.float64)
    if ebv == 0:
        return np.ones_like(wavelength)
    return np.asarray(F99(Rv=GALACTIC_RV).extinguish(wavelength * u.AA, Ebv=ebv), np.float64)


def deredden(spectrum: Spectrum, ebv: float) -> Spectrum:
    """The spectrum as it left the galaxy: flux / T, ivar * T^2 (T = `galactic_transmission`)."""
    try:
        transmission = galactic_transmission(spectrum.wavelength, ebv)
    except ValueError as err:  # outside the law's range (1000 A - 3.3 micron), or a bad E(B-V)
        raise InputError(f"{describe(spectrum)}: cannot correct Galactic extinction ({err})") from None
    return dataclasses.replace(spectrum, flux=spectrum.flux / transmission, ivar=spectrum.ivar * transmission**2)


def _grid_pixels(wavelength: np.ndarray, z: float) -> np.ndarray:
    """Observed pixels whose rest wavelength falls on the DDM's grid. (N,) bool."""
    rest = wavelength / (1 + z)
    low = WAVELENGTH_START - WAVELENGTH_STEP / 2
    return (rest >= low) & (rest <= low + N_BINS * WAVELENGTH_STEP)


def coarser_fraction(spectrum: Spectrum) -> float:
    """Of the good pixels that land on the rest-frame grid, the fraction where the instrument is
    coarser than the target by more than COARSER_TOLERANCE; NaN without `lsf_sigma`."""
    if spectrum.lsf_sigma is None:
        return float("nan")
    target = target_sigma(spectrum.wavelength / (1 + spectrum.z)) * (1 + spectrum.z)
    counted = spectrum.good & _grid_pixels(spectrum.wavelength, spectrum.z)
    if not counted.any():
        return 0.0
    return float(np.mean(spectrum.lsf_sigma[counted] > target[counted] * (1 + COARSER_TOLERANCE)))


def resolution_kms(spectrum: Spectrum, matched: bool, rest_wavelength: float) -> float:
    """The prepared spectrum's instrumental sigma (km/s) at `rest_wavelength`: the larger of the
    instrument's and the target's once matched, the instrument's otherwise; NaN if not known."""
    if spectrum.lsf_sigma is None:
        return float("nan")
    observed = rest_wavelength * (1 + spectrum.z)
    sigma = np.interp(observed, spectrum.wavelength, spectrum.lsf_sigma)
    if matched:
        sigma = max(sigma, float(target_sigma(rest_wavelength)) * (1 + spectrum.z))
    return float(sigma / observed * SPEED_OF_LIGHT_KMS)


def _kernel_weight(offset: np.ndarray, extra_pixels: np.ndarray, k: int) -> np.ndarray:
    """Weight of the neighbour k pixels away: a sampled Gaussian of sigma `extra_pixels` (its
    variance right to < 0.2 % from SAMPLED_MIN pixels up), or below that [a, 1 - 2a, a] with
    2a = sigma^2, the narrowest kernel of that variance (a sampled Gaussian's would be too small)."""
    gaussian = np.exp(-0.5 * (offset / np.maximum(extra_pixels, 1e-6)) ** 2)
    three = np.where(k == 0, 1 - extra_pixels**2, 0.5 * extra_pixels**2) if abs(k) <= 1 else 0.0
    return np.where(extra_pixels >= SAMPLED_MIN, gaussian, three)


def match_resolution(spectrum: Spectrum) -> Spectrum:
    """The spectrum convolved to the target resolution where its instrument is sharper (needs
    `lsf_sigma` and `z`; pixels coarser than the target are left as they are). Each good pixel
    becomes the mean of the good pixels around it, weighted by a kernel of the missing variance
    (`_kernel_weight`, in the pixel's own width); masks and ivar are kept (module docstring)."""
    wavelength, flux, good = spectrum.wavelength, spectrum.flux, spectrum.good
    target = target_sigma(wavelength / (1 + spectrum.z)) * (1 + spectrum.z)
    width = np.gradient(wavelength)
    extra_pixels = np.sqrt(np.maximum(target**2 - spectrum.lsf_sigma**2, 0.0)) / width
    reach = int(np.ceil(KERNEL_SIGMAS * np.max(extra_pixels))) + 1
    n = wavelength.size
    index = np.arange(n)
    total, weights = np.zeros(n), np.zeros(n)
    for k in range(-reach, reach + 1):
        j = np.clip(index + k, 0, n - 1)
        offset = (wavelength[j] - wavelength) / width  # in the pixel's own widths
        w = _kernel_weight(offset, extra_pixels, k) * width[j] / width
        w = np.where((index + k >= 0) & (index + k < n) & good[j], w, 0.0)
        total += w * flux[j]
        weights += w
    smoothed = np.where(good & (weights > 0), total / np.where(weights > 0, weights, 1.0), flux)
    return dataclasses.replace(spectrum, flux=smoothed)
