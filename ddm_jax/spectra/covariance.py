"""The noise correlation that the flux-conserving rebin (`resample`) creates, as a per-bin
variance-inflation factor for sums over neighbouring bins.

An input pixel that straddles the edge of two 2 A bins puts its noise into both, so adjacent bins
are correlated (SDSS's log grid at Halpha, 1.5 A pixels: correlation ~0.18) and a line flux
summed over many bins has more variance than the bins' own ivar says (1 + 2 sum_k rho_k, ~1.4x).
`variance_inflation` gives, per bin j, F_j = (var_j + sum_k cov(j, j+-k)) / var_j from the same
overlaps the rebin uses: sum_j F_j var_j is the exact variance of a sum of whole stretches of bins,
and a line's flux error grows by sqrt of the profile-weighted mean of F over its bins
(`lines.measure_lines`). NumPy, one spectrum at a time (the work is a few sorts per spectrum).
"""

from __future__ import annotations

import numpy as np

from ddm_jax.constants import N_BINS
from ddm_jax.spectra.resample import grid_edges, pixel_edges
from ddm_jax.spectra.spectrum import Spectrum


def _segments(pixel_edges_rest: np.ndarray, usable: np.ndarray):
    """The pieces where one input pixel overlaps one output bin, in wavelength order.

    Returns pixel index, bin index and overlap length (Angstrom) of each piece over a usable
    pixel inside the grid, (S,) each. Each (pixel, bin) pair is one piece, and a pixel's pieces
    are consecutive with consecutive bins.
    """
    out = grid_edges()
    cuts = np.unique(np.concatenate([pixel_edges_rest, out]))
    cuts = cuts[(cuts >= max(pixel_edges_rest[0], out[0])) & (cuts <= min(pixel_edges_rest[-1], out[-1]))]
    middle = 0.5 * (cuts[1:] + cuts[:-1])
    pixel = np.searchsorted(pixel_edges_rest, middle, side="right") - 1
    bin_ = np.searchsorted(out, middle, side="right") - 1
    inside = (pixel >= 0) & (pixel < usable.size) & (bin_ >= 0) & (bin_ < N_BINS)
    keep = inside & usable[np.clip(pixel, 0, usable.size - 1)]
    return pixel[keep], bin_[keep], np.diff(cuts)[keep]


def variance_inflation(spectrum: Spectrum) -> np.ndarray:
    """F_j (module docstring) of one validated spectrum on the rest-frame grid: (2208,) float32,
    >= 1, and 1 where a bin has no data (its ivar is 0 and it carries no weight)."""
    usable = spectrum.good & (spectrum.ivar > 0)
    variance = np.where(usable, 1.0 / np.where(usable, spectrum.ivar, 1.0), 0.0)
    pixel, bin_, overlap = _segments(pixel_edges(spectrum.wavelength) / (1 + spectrum.z), usable)
    weight = np.bincount(bin_, overlap, N_BINS)  # the rebin's normalisation of each bin
    own = np.bincount(bin_, overlap**2 * variance[pixel], N_BINS)
    norm = np.where(weight > 0, weight, 1.0)
    bin_variance = own / norm**2
    shared = np.zeros(N_BINS)
    lag = 1
    while lag < pixel.size and np.any(same := pixel[lag:] == pixel[:-lag]):
        a, b = bin_[:-lag][same], bin_[lag:][same]
        cov = overlap[:-lag][same] * overlap[lag:][same] * variance[pixel[lag:][same]] / (norm[a] * norm[b])
        shared += np.bincount(a, cov, N_BINS) + np.bincount(b, cov, N_BINS)
        lag += 1
    ok = bin_variance > 0
    return np.where(ok, (bin_variance + shared) / np.where(ok, bin_variance, 1.0), 1.0).astype(np.float32)


def inflation_factors(spectra: list[Spectrum]) -> np.ndarray:
    """`variance_inflation` of each spectrum: (B, 2208) float32."""
    return np.stack([variance_inflation(s) for s in spectra]) if spectra else np.ones((0, N_BINS), np.float32)
