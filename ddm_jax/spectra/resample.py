"""Observed spectra onto the DDM's rest-frame grid (3700 + 2 i Angstrom): exact flux-conserving rebin.

Each input pixel is a box of constant flux density between edges halfway to its neighbours.
An output bin's value is the overlap-weighted mean density of the good input pixels under it,
so over fully covered bins the integral of flux is conserved exactly (up to float rounding).
To the rest frame: wavelength / (1 + z), flux density * (1 + z), which keeps line fluxes
(density integrated over wavelength) equal to the observed ones.

Single-spectrum functions take inputs padded to a common length (see `pad_batch`), so that
thousands of spectra of different lengths batch under one `vmap` and one compilation.

A spectrum's result does not depend on what else is rebinned with it, to the bit: the rest-frame
edges, flux and variance are computed on the host in float64 (XLA's float32 division by 1 + z
rounds differently from one compiled program to another, which moved flux by up to 2e-4), and
`rebin_spectra` rebins together only spectra with the same padded length and `max_pixels`, so
each one goes through the program its own shape picks.

Output mask bits (uint8, 0 = good): NO_COVERAGE, NO_DATA, FILLED below.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ddm_jax.batching import map_padded
from ddm_jax.constants import N_BINS, WAVELENGTH_START, WAVELENGTH_STEP, wavelength_grid
from ddm_jax.spectra import resample
from ddm_jax.spectra.spectrum import Spectrum, describe

NO_COVERAGE = 1  # the bin is not entirely inside the input's wavelength range
NO_DATA = 2  # inside the range, but every input pixel under it is masked
FILLED = 4  # the value is interpolated from neighbouring good bins (its ivar is 0)

# Padding length is rounded up to a multiple of this, to bound the number of compilations.
PAD_MULTIPLE = 512
BATCH_KEYS = ("edges", "flux", "variance", "good")  # `pad_batch`'s arrays, in `rebin_batch`'s order


def grid_edges(n_bins: int = N_BINS) -> np.ndarray:
    """Bin edges of the rest-frame grid, (n_bins + 1,) float64."""
    return WAVELENGTH_START - WAVELENGTH_STEP / 2 + WAVELENGTH_STEP * np.arange(n_bins + 1)


def pixel_edges(wavelength: np.ndarray) -> np.ndarray:
    """Edges halfway between pixel centres, the ends half a pixel out. (N,) -> (N + 1,) float64."""
    wl = np.asarray(wavelength, dtype=np.float64)
    mid = 0.5 * (wl[1:] + wl[:-1])
    return np.concatenate([[2 * wl[0] - mid[0]], mid, [2 * wl[-1] - mid[-1]]])


def padded_length(spectrum: Spectrum) -> int:
    """The spectrum's pixel count rounded up to a multiple of PAD_MULTIPLE."""
    return -(-spectrum.flux.size // PAD_MULTIPLE) * PAD_MULTIPLE


def rest_edges(spectrum: Spectrum) -> np.ndarray:
    """Rest-frame pixel edges, (N + 1,) float64."""
    return pixel_edges(spectrum.wavelength) / (1 + spectrum.z)


def max_pixels(spectrum: Spectrum) -> int:
    """The most whole pixels of the spectrum inside one output bin, at least 1: the pixel edges
    inside a bin bound the whole pixels it holds."""
    return max(1, int(np.diff(np.searchsorted(rest_edges(spectrum), grid_edges())).max()))


def rebin_key(spectrum: Spectrum) -> tuple[int, int]:
    """(padded length, max_pixels): what picks the compiled program a spectrum is rebinned by."""
    return padded_length(spectrum), max_pixels(spectrum)


def pad_batch(spectra, max_pixels_of_batch: int | None = None) -> dict:
    """Stack `Spectrum` records into padded rest-frame arrays for `rebin_batch`.

    Rest frame on the host, in float64: edges / (1 + z), flux density x (1 + z), variance
    (1 / ivar, 0 where ivar is 0) x (1 + z)^2. Padding pixels have zero width (edges repeat the
    last edge), zero flux and are not good, so they add nothing to any sum. Returns edges
    (B, L+1), flux, variance, good (B, L), and max_pixels, the batch's largest (static for jit;
    `max_pixels_of_batch` where the caller knows it).
    """
    length = max(padded_length(s) for s in spectra)
    batch = {"edges": np.empty((len(spectra), length + 1)), "flux": np.zeros((len(spectra), length)),
             "variance": np.zeros((len(spectra), length)), "good": np.zeros((len(spectra), length), bool)}
    for row, s in enumerate(spectra):
        n, scale = s.flux.size, 1 + s.z
        edges = rest_edges(s)
        batch["edges"][row, : n + 1] = edges
        batch["edges"][row, n + 1:] = edges[-1]
        variance = np.where(s.ivar > 0, 1.0 / np.where(s.ivar > 0, s.ivar, 1.0), 0.0)
        batch["flux"][row, :n], batch["variance"][row, :n] = s.flux * scale, variance * scale**2
        batch["good"][row, :n] = s.good
    batch["max_pixels"] = max_pixels_of_batch or max(max_pixels(s) for s in spectra)
    return batch


def overlap_sums(edges: jax.Array, values: jax.Array, out_edges: jax.Array, power: int,
                 max_pixels: int) -> jax.Array:
    """sum_j overlap(j, k) ** power * values[j] for every output bin k.

    edges: (N+1,) non-decreasing input pixel edges; values: (N,); out_edges: (M+1,) increasing;
    max_pixels: at least the number of whole input pixels inside one output bin. Returns (M,).
    Each bin adds its two partial end pixels and the whole pixels between them directly
    (not as a difference of running sums, which in float32 would cancel badly).
    """
    n = values.shape[0]
    e = jnp.clip(out_edges, edges[0], edges[-1])
    # i: the pixel a bin starts in (or at); m: the pixel it ends in (or at the end of).
    i = jnp.clip(jnp.searchsorted(edges, e[:-1], side="right") - 1, 0, n - 1)
    m = jnp.clip(jnp.searchsorted(edges, e[1:], side="left") - 1, 0, n - 1)
    a, b = e[:-1], e[1:]
    left = (jnp.minimum(edges[i + 1], b) - a) ** power * values[i]
    right = jnp.where(m > i, (b - edges[m]) ** power * values[m], 0.0)
    whole = jnp.diff(edges) ** power * values
    middle = sum(jnp.where(i + t < m, whole[jnp.minimum(i + t, n - 1)], 0.0) for t in range(1, max_pixels + 1))
    return left + middle + right


def rebin(rest: jax.Array, flux: jax.Array, variance: jax.Array, good: jax.Array, max_pixels: int):
    """One spectrum, already in the rest frame (`pad_batch`), onto the rest-frame grid.

    rest: (L+1,) rest-frame pixel edges; flux, variance: (L,) rest-frame density and its
    variance; good: (L,) bool; max_pixels: static, from `pad_batch`.
    Returns flux (2208,), ivar (2208,), mask (2208,) uint8 (NO_COVERAGE / NO_DATA bits).
    Bins that are not fully covered keep the mean over their covered part, flagged.
    """
    out_edges = jnp.asarray(grid_edges(), rest.dtype)
    weight = good.astype(flux.dtype)
    w = overlap_sums(rest, weight, out_edges, 1, max_pixels)
    f = overlap_sums(rest, weight * flux, out_edges, 1, max_pixels)
    v = overlap_sums(rest, weight * variance, out_edges, 2, max_pixels)
    has = w > 0
    out_flux = jnp.where(has, f / jnp.where(has, w, 1.0), 0.0)
    out_ivar = jnp.where(has & (v > 0), w**2 / jnp.where(v > 0, v, 1.0), 0.0)
    covered = (out_edges[:-1] >= rest[0]) & (out_edges[1:] <= rest[-1])
    mask = jnp.where(covered, jnp.where(has, 0, NO_DATA), NO_COVERAGE).astype(jnp.uint8)
    return out_flux, out_ivar, mask


def fill_gaps(flux: jax.Array, ivar: jax.Array, mask: jax.Array):
    """Linear interpolation over flagged bins from the nearest good ones (constant beyond the
    ends); filled bins get ivar 0 and the FILLED bit. (2208,) x3 -> (2208,) x3.
    A spectrum with no good bin comes back unchanged (the caller refuses it)."""
    n = flux.shape[0]
    idx = jnp.arange(n)
    good = mask == 0
    left = jax.lax.cummax(jnp.where(good, idx, -1))
    right = jax.lax.cummin(jnp.where(good, idx, n), reverse=True)
    left_c = jnp.where(left < 0, right, left).clip(0, n - 1)
    right_c = jnp.where(right >= n, left, right).clip(0, n - 1)
    span = jnp.maximum(right_c - left_c, 1)
    t = jnp.where(right_c > left_c, (idx - left_c) / span, 0.0)
    interp = flux[left_c] * (1 - t) + flux[right_c] * t
    fill = ~good & good.any()
    return (jnp.where(fill, interp, flux), jnp.where(fill, 0.0, ivar),
            jnp.where(fill, mask | FILLED, mask).astype(jnp.uint8))


@functools.partial(jax.jit, static_argnames="max_pixels")
def rebin_batch(edges, flux, variance, good, max_pixels: int):
    """`rebin` then `fill_gaps` over a batch: (B, L+1), (B, L) x3 -> (B, 2208) x3.

    Every flagged bin is filled; whether a spectrum with NO_COVERAGE bins is kept is the
    caller's coverage policy.
    """
    def one(*a):
        return fill_gaps(*rebin(*a, max_pixels=max_pixels))
    return jax.vmap(one)(edges, flux, variance, good)


def coverage_report(mask: np.ndarray) -> tuple[int, str]:
    """Number of uncovered bins and their rest-frame ranges, e.g. '3700-3780 A'. mask: (2208,)."""
    uncovered = (np.asarray(mask) & NO_COVERAGE) != 0
    if not uncovered.any():
        return 0, ""
    wl = wavelength_grid().astype(np.float64)
    change = np.flatnonzero(np.diff(np.concatenate([[0], uncovered.astype(int), [0]])))
    ranges = [f"{wl[a]:.0f}-{wl[b - 1]:.0f} A" for a, b in zip(change[::2], change[1::2])]
    return int(uncovered.sum()), ", ".join(ranges)


COVERAGE_POLICIES = ("refuse", "fill")

# Spectra per compiled batch: bounds memory. Batches are padded to a power of two between
# MIN_CHUNK and MAX_CHUNK, so that only a handful of shapes are ever compiled (the fit takes
# seconds to compile).
MIN_CHUNK, MAX_CHUNK = 32, 256


def padded_size(n: int) -> int:
    return min(max(1 << max(n - 1, 0).bit_length(), MIN_CHUNK), MAX_CHUNK)


def rebin_spectra(spectra: list[Spectrum]) -> dict[str, np.ndarray]:
    """Rest-frame flux, ivar, mask (B, 2208) for validated spectra, in batches of spectra that share
    a `rebin_key`, so that each spectrum's result is the one it has alone."""
    def rebin(index):  # padding repeats the last index: a batch of whole spectra
        batch = resample.pad_batch([spectra[i] for i in index], keys[index[0]][1])
        out = resample.rebin_batch(*(batch[k] for k in BATCH_KEYS), max_pixels=batch["max_pixels"])
        return dict(zip(("flux", "ivar", "mask"), out))

    result = {"flux": np.zeros((len(spectra), N_BINS), np.float32),
              "ivar": np.zeros((len(spectra), N_BINS), np.float32), "mask": np.zeros((len(spectra), N_BINS), np.uint8)}
    keys = [rebin_key(s) for s in spectra]
    for key in sorted(set(keys)):
        rows = np.flatnonzero([k == key for k in keys])
        for name, values in map_padded(rebin, (rows,), MAX_CHUNK, padded_size).items():
            result[name][rows] = values
    return result


def coverage_message(spectrum, mask: np.ndarray) -> str | None:
    n_uncovered, ranges = resample.coverage_report(mask)
    if not n_uncovered:
        return None
    return (f"{describe(spectrum)}: {n_uncovered} of {N_BINS} rest-frame bins not covered "
            f"({ranges} at z={spectrum.z:.5f})")
