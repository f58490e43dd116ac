"""Per-spectrum trust outputs (docs/trust.md): `reconstruction_chi2`, `ood_score`, `trusted`.

A network trained on synthetic spectra fails silently on what it never saw; these outputs say
when a decomposition should not be believed. The scoring (`score`) is jittable and runs inside
`model.forward.decompose_batch`; the calibration (`training.calibrate`) is fitted once on in-domain
spectra and stored beside the checkpoint's params (`io.checkpoint`).

ood_score is the largest of five terms, each divided by its in-domain `quantile`:
  - the DDM's trunk features `h` (sown by `models.DDM`): the Mahalanobis distance in a k-component
    PCA subspace (mean over components), and the power outside that subspace;
  - the same two for the normalised input `x_n` (what the network sees, on its own grid);
  - the reconstruction power mean(residual²).
The maximum of quantile-scaled terms lets one strongly deviant view reject a spectrum; a sum
let the heavy-tailed terms drown the others (measured: docs/trust.md#measured).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from ddm_jax.constants import MIN_CONTINUUM_SNR, norm_window_slice


class TrustCalibration(NamedTuple):
    """What `score` needs, fitted on in-domain spectra (docs/trust.md#calibration). NumPy arrays."""

    feature_mean: np.ndarray  # (F,) trunk features
    feature_basis: np.ndarray  # (F, k) principal directions
    feature_variance: np.ndarray  # (k,) variance along each
    feature_residual_weight: np.ndarray  # () 1 / mean out-of-subspace power on the fit set (0 when k = F)
    input_mean: np.ndarray  # (n_bins,) normalised inputs x_n, likewise
    input_basis: np.ndarray  # (n_bins, k)
    input_variance: np.ndarray  # (k,)
    input_residual_weight: np.ndarray  # ()
    reconstruction_weight: np.ndarray  # () 1 / median in-domain mean(residual²): the assumed noise variance
    term_scales: np.ndarray  # (5,) each term's `quantile` on the threshold quarter (inf: term unused)
    ood_threshold: np.ndarray  # () the `quantile` of the threshold quarter's ood_score
    chi2_threshold: np.ndarray  # () likewise for reconstruction_chi2 against ivar; NaN if calibrated without ivar
    quantile: np.ndarray  # ()
    false_alarm_rate: np.ndarray  # () 1 - trusted fraction on the test quarter
    counts: np.ndarray  # (3,) spectra used to fit, to set thresholds, to measure the false-alarm rate
    ddm_sha256: np.ndarray  # () str: the DDM params it was fitted for
    description: np.ndarray  # () str: the calibration data, free-form


SCORING_FIELDS = TrustCalibration._fields[:12]

N_TERMS = 5


def scoring_arrays(calibration: TrustCalibration) -> dict[str, np.ndarray]:
    """The float32 arrays `score` reads (a jittable pytree)."""
    return {name: np.asarray(getattr(calibration, name), np.float32) for name in SCORING_FIELDS}


def _subspace_distance(values, mean, basis, variance, residual_weight):
    """Mean Mahalanobis² over the PCA components, and the weighted out-of-subspace power: two (B,)."""
    centred = values - mean
    coords = centred @ basis
    outside = centred - coords @ basis.T
    return jnp.mean(coords**2 / variance, axis=-1), jnp.sum(outside**2, axis=-1) * residual_weight


def ood_terms(arrays, x, features, residual):
    """The five unscaled terms of ood_score (module docstring): (B, 5)."""
    return jnp.stack([
        *_subspace_distance(features, arrays["feature_mean"], arrays["feature_basis"], arrays["feature_variance"],
                            arrays["feature_residual_weight"]),
        *_subspace_distance(x, arrays["input_mean"], arrays["input_basis"], arrays["input_variance"],
                            arrays["input_residual_weight"]),
        jnp.mean(residual**2, axis=-1) * arrays["reconstruction_weight"]], axis=-1)


def reconstruction_chi2(residual, ivar_n):
    """Reduced χ²: mean over bins with ivar_n > 0 of residual² · ivar_n (NaN where no bin has ivar)."""
    used = ivar_n > 0
    return jnp.sum(jnp.where(used, residual**2 * ivar_n, 0.0), axis=-1) / jnp.sum(used, axis=-1)


def continuum_snr(spectra, ivar):
    """Median S/N per bin over the normalisation window, of raw spectra and their ivar: (B,)."""
    window = norm_window_slice(spectra.shape[1])
    snr = jnp.where(ivar[:, window] > 0, spectra[:, window] * jnp.sqrt(ivar[:, window]), jnp.nan)
    return jnp.nanmedian(snr, axis=1)


def score(arrays, x, features, residual, finite, ivar_n=None, snr=None) -> dict:
    """The TRUST_KEYS of one batch (jittable). `arrays`: `scoring_arrays` or None (no calibration);
    x, residual, ivar_n (B, n_bins) in normalised units; features (B, F); finite (B,) bool; snr (B,)
    the continuum S/N (`continuum_snr`) where raw spectra and ivar are known: below
    MIN_CONTINUUM_SNR a spectrum is not trusted whatever its score."""
    batch = x.shape[0]
    nan = jnp.full(batch, jnp.nan, jnp.float32)
    if arrays is None:
        chi2 = nan if ivar_n is None else reconstruction_chi2(residual, ivar_n)
        return {"reconstruction_chi2": chi2, "ood_score": nan, "trusted": jnp.zeros(batch, bool)}
    ood = jnp.max(ood_terms(arrays, x, features, residual) / arrays["term_scales"], axis=-1)
    trusted = finite & (ood <= arrays["ood_threshold"])
    if ivar_n is None:  # against the calibration's assumed noise; not part of `trusted` (docs/trust.md)
        chi2 = jnp.mean(residual**2, axis=-1) * arrays["reconstruction_weight"]
    else:
        chi2 = reconstruction_chi2(residual, ivar_n)
        threshold = arrays["chi2_threshold"]
        trusted = trusted & (jnp.isnan(threshold) | (chi2 <= threshold))
    if snr is not None:
        trusted = trusted & (snr >= MIN_CONTINUUM_SNR)
    return {"reconstruction_chi2": chi2.astype(jnp.float32), "ood_score": ood.astype(jnp.float32),
            "trusted": trusted}


def normalised_ivar(spectra, mass, ivar):
    """ivar in the units of x_n = (x − median) / (std · mass): ivar · (std · mass)²."""
    std = jnp.std(spectra[:, norm_window_slice(spectra.shape[1])], axis=1)
    return ivar * ((std * mass) ** 2)[:, None]
