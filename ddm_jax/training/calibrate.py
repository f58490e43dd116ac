"""The trust calibration (docs/trust.md#calibration): `calibrate` on in-domain spectra,
`calibrate_from_library` on composites of a held-out library, `calibrate_checkpoint` (the
`calibrate` command). What it fits is scored by `model.scoring.score`."""

from __future__ import annotations

import jax
import numpy as np

from ddm_jax.batching import batch_ranges, pad_rows
from ddm_jax.config import DDMConfig, config_from_dict
from ddm_jax.errors import InputError
from ddm_jax.io.checkpoint import attach_trust, load_checkpoint
from ddm_jax.io.safe import params_sha256, sha256_file
from ddm_jax.model.forward import ddm_views
from ddm_jax.model.inputs import validate_inputs, validate_ivar
from ddm_jax.model.models import DDM
from ddm_jax.model.scoring import N_TERMS, TrustCalibration, ood_terms, score, scoring_arrays
from ddm_jax.training.input_pipeline import load_library

DEFAULT_QUANTILE = 0.99
DEFAULT_COMPONENTS = 16  # of the input PCA; in development (not recorded) it separated the OOD kinds best of 8-64
DEFAULT_SAMPLES = 4096
MIN_SPECTRA = 64  # fewer leave a threshold quarter too small for the quantile to mean anything


def _pca(values: np.ndarray, components: int):
    """(mean, basis (F, k), variance (k,), residual_weight) of the rows of `values`, in float64."""
    values = values.astype(np.float64)
    mean = values.mean(axis=0)
    centred = values - mean
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    k = min(components, vt.shape[0])
    variance = singular**2 / (len(values) - 1)
    floor = 1e-9 * variance[0]  # a direction with no spread would give infinite distances
    basis = vt[:k].T
    outside = centred - (centred @ basis) @ basis.T
    power = np.mean(np.sum(outside**2, axis=1))
    weight = 1.0 / power if power > 1e-9 * variance.sum() else 0.0  # k = F: nothing lies outside
    return mean, basis, np.maximum(variance[:k], floor), np.float64(weight)


def _views(ddm_params, ddm_config: DDMConfig, spectra, mass, ivar, batch_size: int):
    """x_n, features, residual, finite and ivar_n (or None) of every spectrum, as NumPy arrays."""
    ddm = DDM(ddm_config)
    rows = min(batch_size, len(spectra))
    parts = []
    for lo, hi in batch_ranges(len(spectra), rows):
        padded = [None if a is None else pad_rows(a[lo:hi], rows) for a in (spectra, mass, ivar)]
        out = jax.device_get(ddm_views(ddm_params, *padded, ddm=ddm))
        parts.append([None if a is None else a[:hi - lo] for a in out])
    return [None if p[0] is None else np.concatenate(p) for p in zip(*parts)]


def calibrate(ddm_params, ddm_config: DDMConfig, spectra, mass=None, ivar=None, *, seed: int = 0,
              quantile: float = DEFAULT_QUANTILE, components: int = DEFAULT_COMPONENTS, description: str = "",
              batch_size: int = 256, split=None) -> TrustCalibration:
    """Fit the trust calibration on in-domain spectra (B, n_bins) with masses (B,) (None: ones) and
    optional ivar (B, n_bins); docs/trust.md#calibration.

    A seeded permutation splits the spectra (or `split`, three index arrays, does): one half fits the
    two PCAs and the reconstruction scale; a quarter sets the thresholds (the `quantile` of its
    scores); the last quarter measures the false-alarm rate of the whole `trusted` rule.
    """
    if not 0.5 <= quantile < 1:
        raise InputError(f"the quantile must lie in [0.5, 1), got {quantile}")
    if components < 1:
        raise InputError(f"need at least one PCA component, got {components}")
    spectra = np.asarray(spectra)
    if mass is None:
        mass = np.ones(len(spectra) if spectra.ndim == 2 else 1, np.float32)
    spectra, mass = validate_inputs(spectra, mass, ddm_config.n_bins)
    count = len(spectra)
    if count < MIN_SPECTRA:
        raise InputError(f"calibration needs at least {MIN_SPECTRA} in-domain spectra, got {count}")
    if ivar is not None:
        ivar = validate_ivar(ivar, count, ddm_config.n_bins)
    x, features, residual, finite, ivar_n = _views(ddm_params, ddm_config, spectra, mass, ivar, batch_size)
    if not finite.all():
        raise InputError(f"the DDM gives non-finite outputs for {int((~finite).sum())} calibration spectra")
    if split is None:
        order = np.random.default_rng(seed).permutation(count)
        split = np.split(order, [count // 2, count // 2 + count // 4])
    fit, thresholds, test = split
    feature_pca, input_pca = _pca(features[fit], components), _pca(x[fit], components)
    recon_power = np.mean(residual[fit].astype(np.float64) ** 2, axis=1)
    unset = np.float64(np.nan)
    fitted = TrustCalibration(*feature_pca, *input_pca, np.float64(1.0 / np.median(recon_power)), np.ones(N_TERMS),
                              np.float64(np.inf), unset, np.float64(quantile), unset,
                              np.array([len(fit), len(thresholds), len(test)]), np.array(params_sha256(ddm_params)),
                              np.array(description))
    fitted = fitted._replace(**{name: np.asarray(value, np.float32) for name, value in scoring_arrays(fitted).items()})
    arrays = scoring_arrays(fitted)
    terms = np.asarray(jax.jit(ood_terms)(arrays, x[thresholds], features[thresholds], residual[thresholds]))
    scales = np.quantile(terms, quantile, axis=0, method="higher")
    fitted = fitted._replace(term_scales=np.where(scales > 0, scales, np.inf).astype(np.float32))
    scores = jax.device_get(jax.jit(score)(scoring_arrays(fitted), x, features, residual, finite, ivar_n))
    limits = {"ood_threshold": np.quantile(scores["ood_score"][thresholds], quantile, method="higher")}
    if ivar_n is not None:
        chi2 = scores["reconstruction_chi2"][thresholds]
        limits["chi2_threshold"] = np.quantile(chi2[np.isfinite(chi2)], quantile, method="higher")
    fitted = fitted._replace(**{name: np.asarray(value, np.float32) for name, value in limits.items()})
    trusted = jax.device_get(jax.jit(score)(scoring_arrays(fitted), x[test], features[test], residual[test],
                                            finite[test], None if ivar_n is None else ivar_n[test]))["trusted"]
    return fitted._replace(false_alarm_rate=np.asarray(1.0 - trusted.mean(), np.float32))


def composite_ivar(sf_ivar, agn_ivar, sf_weight):
    """ivar of w·SF + (1 − w)·AGN from its parts' (0 where either part has none)."""
    w = sf_weight[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):  # a bin without data: 0 below, whatever w
        variance = w**2 / sf_ivar + (1 - w) ** 2 / agn_ivar
    return np.where((sf_ivar > 0) & (agn_ivar > 0), 1.0 / variance, 0.0).astype(np.float32)


def library_composites(library, n: int, seed: int, mass_range=(1.0, 1.0), sf_rows=None, agn_rows=None):
    """(spectra, mass, ivar or None): n composites of random library members (among `sf_rows`,
    `agn_rows` if given) with w ~ U(0, 1), as the training composites (`input_pipeline.make_ddm_batch`)
    before their normalisation; ivar from the library's where it has one."""
    rng = np.random.default_rng(seed)
    sf_rows = np.arange(library.sf.shape[0]) if sf_rows is None else sf_rows
    agn_rows = np.arange(library.agn.shape[0]) if agn_rows is None else agn_rows
    sf_index, agn_index = rng.choice(sf_rows, n), rng.choice(agn_rows, n)
    w = rng.uniform(size=n).astype(np.float32)
    mass = rng.uniform(*mass_range, size=n).astype(np.float32)
    sf, agn = np.asarray(library.sf)[sf_index], np.asarray(library.agn)[agn_index]
    spectra = w[:, None] * sf + (1 - w[:, None]) * agn
    ivar = None
    if library.has_ivar:
        ivar = composite_ivar(np.asarray(library.sf_ivar)[sf_index], np.asarray(library.agn_ivar)[agn_index], w)
    return spectra, mass, ivar


def calibrate_from_library(ddm_params, ddm_config: DDMConfig, library, n: int = DEFAULT_SAMPLES, seed: int = 0, *,
                           quantile: float = DEFAULT_QUANTILE, components: int = DEFAULT_COMPONENTS,
                           mass_range=(1.0, 1.0), description: str | None = None) -> TrustCalibration:
    """`calibrate` on n composites of a held-out `input_pipeline.SpectralLibrary` (unit-median
    spectra, with ivar where the library has it), drawn as in training.

    The fit half, the threshold quarter and the test quarter are composites of *disjoint* halves and
    quarters of the library's spectra: composites that share parent spectra with the PCA's fit set
    look closer than new galaxies do, and would set thresholds (and a false-alarm rate) too tight.
    """
    rng = np.random.default_rng(seed)
    shares = (0.5, 0.25, 0.25)
    sf_groups = np.split(rng.permutation(library.sf.shape[0]), _cuts(library.sf.shape[0], shares))
    agn_groups = np.split(rng.permutation(library.agn.shape[0]), _cuts(library.agn.shape[0], shares))
    sizes = np.diff([0, *_cuts(n, shares), n])
    if min(min(len(g) for g in sf_groups), min(len(g) for g in agn_groups)) < 1:
        raise InputError(f"calibration needs at least 4 SF and 4 AGN library spectra, got {library.sf.shape[0]} "
                         f"and {library.agn.shape[0]}")
    parts = [library_composites(library, int(size), seed + 1 + i, mass_range, sf_rows, agn_rows)
             for i, (size, sf_rows, agn_rows) in enumerate(zip(sizes, sf_groups, agn_groups))]
    spectra, mass = (np.concatenate([part[k] for part in parts]) for k in (0, 1))
    ivar = None if parts[0][2] is None else np.concatenate([part[2] for part in parts])
    if description is None:
        description = (f"{n} composites w*SF + (1-w)*AGN, w ~ U(0,1), mass ~ U{tuple(mass_range)}, of a library of "
                       f"{library.sf.shape[0]} SF and {library.agn.shape[0]} AGN spectra (fit, threshold and test "
                       f"sets from disjoint spectra), {'with' if ivar is not None else 'without'} ivar, seed {seed}")
    split = np.split(np.arange(n), np.cumsum(sizes)[:2])
    return calibrate(ddm_params, ddm_config, spectra, mass, ivar, seed=seed, quantile=quantile,
                     components=components, description=description, split=split)


def _cuts(count: int, shares) -> list[int]:
    """Where to cut `count` items into consecutive groups of the given shares."""
    return [round(count * share) for share in np.cumsum(shares)[:-1]]


def composite_mass_range(expects: dict, mass_range, checkpoint) -> tuple[float, float]:
    """`mass_range`, or (1, 1) for a checkpoint that expects no mass; a DDMError where none is
    given and the checkpoint needs a mass (ones would be the wrong amplitude for its network)."""
    if mass_range is not None:
        return tuple(mass_range)
    if expects.get("needs_mass", True):
        convention = expects.get("mass_convention", "convention not stated")
        raise InputError(f"{checkpoint} needs a mass per spectrum ({convention}): give the "
                         "composites' masses, --mass LOW HIGH in that convention")
    return (1.0, 1.0)


def calibrate_checkpoint(checkpoint, library_path, n: int = DEFAULT_SAMPLES, seed: int = 0, *,
                         quantile: float = DEFAULT_QUANTILE, components: int = DEFAULT_COMPONENTS,
                         mass_range=None) -> TrustCalibration:
    """The `calibrate` command: calibrate a checkpoint on composites of a library file and attach it.
    `mass_range` (low, high): the composites' masses, uniform between them, in the checkpoint's
    mass convention; None: ones, for a checkpoint that expects no mass (a DDMError for one that needs one)."""
    ddm_params, _, metadata = load_checkpoint(checkpoint)
    mass_range = composite_mass_range(metadata.get("expects", {}), mass_range, checkpoint)
    config = config_from_dict(DDMConfig, metadata["ddm_config"])
    library = load_library(library_path)
    description = (f"{n} composites w*SF + (1-w)*AGN, w ~ U(0,1), mass ~ U{tuple(mass_range)}, of {library_path} "
                   f"(sha256 {sha256_file(library_path)[:16]}), {'with' if library.has_ivar else 'without'} "
                   f"ivar, seed {seed}")
    calibration = calibrate_from_library(ddm_params, config, library, n, seed, quantile=quantile,
                                         components=components, mass_range=mass_range, description=description)
    attach_trust(checkpoint, calibration)
    return calibration
