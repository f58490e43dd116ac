"""Training data: spectral libraries and the batches each network trains on.

Normalisation (docs/model.md#preprocessing). Library spectra are scaled to unit median in
the normalisation window, so `w` is the SF share of the composite's flux there. The DDM
sees `normalize(c, mass)` of the composite `c = w SF + (1 - w) AGN`, i.e. `(c - m) / (s mass)`
with m, s the window median and std of c. Its targets are the two parts under that same
affine map, `(SF - m) / (s mass)` and `(AGN - m) / (s mass)`; since w + (1 - w) = 1 the
targets recombine exactly into the input, `w sf_t + (1 - w) agn_t = x`, which is how
`decompose` reconstructs (residual = reconstruction - normalised input). The regressor
sees `center(normalize(part, mass))` of single SF or AGN spectra, as `decompose` feeds it
the predicted parts, and learns their eight `constants.LINE_QUANTITIES`.

A batch is a pure function of (library, key): both networks' batches draw the same spectra
for the same key.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ddm_jax.constants import N_BINS, N_LINE_QUANTITIES, norm_window_slice
from ddm_jax.errors import InputError
from ddm_jax.io.safe import load_npz
from ddm_jax.model.preprocess import center_batch, normalize_batch, window_median_std
from ddm_jax.training import synthetic

_WINDOW = norm_window_slice(N_BINS)


class SpectralLibrary(NamedTuple):
    """SF and AGN spectra at unit window median, with optional true line quantities (N, 8) and
    inverse variances (N, n_bins) on the same scale (used to calibrate `trust`, not to train)."""

    sf: jax.Array  # (N_sf, n_bins)
    agn: jax.Array  # (N_agn, n_bins)
    sf_lines: jax.Array | None = None
    agn_lines: jax.Array | None = None
    sf_ivar: jax.Array | None = None
    agn_ivar: jax.Array | None = None

    @property
    def has_lines(self) -> bool:
        return self.sf_lines is not None and self.agn_lines is not None

    @property
    def has_ivar(self) -> bool:
        return self.sf_ivar is not None and self.agn_ivar is not None

    def rows(self, sf_rows: slice, agn_rows: slice) -> SpectralLibrary:
        """The library of the chosen SF and AGN rows (e.g. a training / held-out split)."""
        pick = {"sf": sf_rows, "agn": agn_rows}
        return SpectralLibrary(**{field: None if value is None else value[pick[field.split("_")[0]]]
                                  for field, value in self._asdict().items()})


def _check_spectra(name: str, spectra) -> tuple[np.ndarray, np.ndarray]:
    """(spectra scaled to unit window median, the medians divided by)."""
    spectra = np.asarray(spectra, dtype=np.float32)
    if spectra.ndim != 2 or spectra.shape[1] != N_BINS:
        raise InputError(f"{name} spectra must have shape (N, {N_BINS}) on the rest-frame grid, got {spectra.shape}")
    if spectra.shape[0] == 0:
        raise InputError(f"the library has no {name} spectra: training needs both SF and AGN spectra")
    bad = ~np.isfinite(spectra).all(axis=1)
    if bad.any():
        raise InputError(f"{name} spectra {np.flatnonzero(bad)[:5].tolist()} contain NaN or inf")
    medians = np.median(spectra[:, _WINDOW], axis=1)
    if (medians <= 0).any():
        raise InputError(f"{name} spectra {np.flatnonzero(medians <= 0)[:5].tolist()} have a non-positive "
                         "median flux in 4000-7000 A: cannot put them on a common scale")
    return spectra / medians[:, None], medians


def _check_ivar(name: str, ivar, medians: np.ndarray) -> np.ndarray | None:
    """Inverse variances (N, n_bins) moved to the unit-median scale of their spectra."""
    if ivar is None:
        return None
    ivar = np.asarray(ivar, dtype=np.float32)
    if ivar.shape != (len(medians), N_BINS):
        raise InputError(f"{name} ivar must have shape ({len(medians)}, {N_BINS}), got {ivar.shape}")
    if not np.isfinite(ivar).all() or (ivar < 0).any():
        raise InputError(f"{name} ivar must be finite and >= 0")
    return ivar * medians[:, None] ** 2


def _check_lines(name: str, lines, n: int) -> np.ndarray | None:
    if lines is None:
        return None
    lines = np.asarray(lines, dtype=np.float32)
    if lines.shape != (n, N_LINE_QUANTITIES):
        raise InputError(f"{name} line quantities must have shape ({n}, {N_LINE_QUANTITIES}), got {lines.shape}")
    if not np.isfinite(lines).all():
        raise InputError(f"{name} line quantities contain NaN or inf")
    return lines


def _as_jax(array):
    return None if array is None else jnp.asarray(array)


def library_from_arrays(sf, agn, sf_lines=None, agn_lines=None, sf_ivar=None, agn_ivar=None) -> SpectralLibrary:
    """Validate user spectra (e.g. MaNGA spaxels) and scale each to unit window median."""
    (sf, sf_medians), (agn, agn_medians) = _check_spectra("SF", sf), _check_spectra("AGN", agn)
    for what, pair in (("line quantities", (sf_lines, agn_lines)), ("ivar", (sf_ivar, agn_ivar))):
        if (pair[0] is None) != (pair[1] is None):
            raise InputError(f"give {what} for both the SF and the AGN spectra, or for neither")
    return SpectralLibrary(jnp.asarray(sf), jnp.asarray(agn), _as_jax(_check_lines("SF", sf_lines, len(sf))),
                           _as_jax(_check_lines("AGN", agn_lines, len(agn))),
                           _as_jax(_check_ivar("SF", sf_ivar, sf_medians)),
                           _as_jax(_check_ivar("AGN", agn_ivar, agn_medians)))


def load_library(path) -> SpectralLibrary:
    """A library from an .npz with `sf`, `agn` (N, 2208) and optional `sf_lines`, `agn_lines` (N, 8),
    `sf_ivar`, `agn_ivar` (N, 2208)."""
    arrays = load_npz(path, f"spectral library (an .npz of 'sf' and 'agn' arrays (N, {N_BINS}))", ("sf", "agn"))
    return library_from_arrays(arrays["sf"], arrays["agn"], arrays.get("sf_lines"), arrays.get("agn_lines"),
                               arrays.get("sf_ivar"), arrays.get("agn_ivar"))


def synthetic_library(seed: int = 0, n_sf: int = 2048, n_agn: int = 2048, snr: float = 30.0,
                      spread: float = 1.0) -> SpectralLibrary:
    """A library of synthetic spectra (`ddm_jax.synthetic`), a pure function of its arguments.

    `spread` < 1 narrows the parameter ranges (more homogeneous classes, an easier split)."""
    sf_key, agn_key = jax.random.split(jax.random.PRNGKey(seed))
    sf, sf_lines = synthetic.sf_spectra(sf_key, n_sf, snr, spread)
    agn, agn_lines = synthetic.agn_spectra(agn_key, n_agn, snr, spread=spread)
    return library_from_arrays(sf, agn, sf_lines, agn_lines)


def realistic_library(seed: int = 0, n_sf: int = 2048, n_agn: int = 2048, seyfert_fraction: float = 0.5,
                      chunk: int = 512) -> SpectralLibrary:
    """A library of realistic spectra (`ddm_jax.realistic`, with ivar), a pure function of its
    arguments; generated in chunks of `chunk` spectra to bound memory."""
    from ddm_jax.training import realistic

    sf_key, agn_key = jax.random.split(jax.random.PRNGKey(seed))

    def in_chunks(key, n, make):
        keys = jax.random.split(key, -(-n // chunk))
        parts = [make(k, min(chunk, n - i * chunk)) for i, k in enumerate(keys)]
        return [np.concatenate([np.asarray(field) for field in fields]) for fields in zip(*parts)]

    sf, sf_ivar, sf_lines, _ = in_chunks(sf_key, n_sf, lambda k, n: realistic.galaxies(k, n, "sf"))
    agn, agn_ivar, agn_lines, _ = in_chunks(agn_key, n_agn, lambda k, n: realistic.agn_galaxies(k, n, seyfert_fraction))
    return library_from_arrays(sf, agn, sf_lines, agn_lines, sf_ivar, agn_ivar)


def library_fingerprint(library: SpectralLibrary) -> str:
    """SHA-256 of the library's arrays: a resumed run must see the very same data."""
    digest = hashlib.sha256()
    for array in library:
        if array is not None:
            digest.update(np.ascontiguousarray(np.asarray(array)).tobytes())
    return digest.hexdigest()


class DDMBatch(NamedTuple):
    """Normalised composites and their targets (module docstring)."""

    inputs: jax.Array  # (B, n_bins)
    sf_target: jax.Array  # (B, n_bins)
    agn_target: jax.Array  # (B, n_bins)
    sf_weight: jax.Array  # (B,) true w


class RegressorBatch(NamedTuple):
    inputs: jax.Array  # (B, n_bins) centred, normalised single SF or AGN spectra
    targets: jax.Array  # (B, 8) their line quantities


def normalize_example(sf, agn, sf_weight, mass):
    """The composite's normalisation applied to it and to its parts (module docstring).

    sf, agn: (n_bins,) unit-median spectra; sf_weight, mass: (). Returns three (n_bins,).
    """
    mixed = synthetic.composite(sf, agn, sf_weight)
    offset, std = window_median_std(mixed)  # the very map `normalize(mixed, mass)` applies
    return tuple((spectrum - offset) / std / mass for spectrum in (mixed, sf, agn))


class _Draws(NamedTuple):
    w_key: jax.Array
    mass_key: jax.Array
    pick_key: jax.Array
    sf_index: jax.Array
    agn_index: jax.Array
    single_mass_key: jax.Array


def _draw(library: SpectralLibrary, key: jax.Array, batch_size: int) -> _Draws:
    """The random choices behind one step's batches (both networks'), from one key."""
    w_key, mass_key, pick_key, sf_key, agn_key, single_mass_key = jax.random.split(key, 6)
    return _Draws(w_key, mass_key, pick_key,
                  jax.random.randint(sf_key, (batch_size,), 0, library.sf.shape[0]),
                  jax.random.randint(agn_key, (batch_size,), 0, library.agn.shape[0]), single_mass_key)


def make_ddm_batch(library: SpectralLibrary, key: jax.Array, batch_size: int,
                   mass_range: tuple[float, float] = (1.0, 1.0)) -> DDMBatch:
    """Composites of random library members with w ~ U(0, 1), normalised, and their parts."""
    draws = _draw(library, key, batch_size)
    w = jax.random.uniform(draws.w_key, (batch_size,))
    mass = jax.random.uniform(draws.mass_key, (batch_size,), minval=mass_range[0], maxval=mass_range[1])
    inputs, sf_target, agn_target = jax.vmap(normalize_example)(
        library.sf[draws.sf_index], library.agn[draws.agn_index], w, mass)
    return DDMBatch(inputs, sf_target, agn_target, w)


def make_regressor_batch(library: SpectralLibrary, key: jax.Array, batch_size: int,
                         mass_range: tuple[float, float] = (1.0, 1.0)) -> RegressorBatch:
    """Single SF or AGN library members (even odds), as the regressor sees them, and their line
    quantities (the library must have them)."""
    draws = _draw(library, key, batch_size)
    use_sf = jax.random.bernoulli(draws.pick_key, 0.5, (batch_size,))
    single = jnp.where(use_sf[:, None], library.sf[draws.sf_index], library.agn[draws.agn_index])
    mass = jax.random.uniform(draws.single_mass_key, (batch_size,), minval=mass_range[0], maxval=mass_range[1])
    targets = jnp.where(use_sf[:, None], library.sf_lines[draws.sf_index], library.agn_lines[draws.agn_index])
    return RegressorBatch(center_batch(normalize_batch(single, mass)), targets)


MAKE_BATCH = {"ddm": make_ddm_batch, "regressor": make_regressor_batch}
