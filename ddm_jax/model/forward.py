"""The jitted pipeline on one batch (docs/model.md#preprocessing, #post-processing):
`decompose_batch` (normalise, DDM, regressor on the three spectra, BPT classes, trust outputs),
`dropout_std` (Monte-Carlo dropout) and `ddm_views` (what the trust calibration reads). Pure and
jittable; `inference.Decomposer` runs them over any number of spectra."""

from __future__ import annotations

from functools import partial

import chex
import jax
import jax.numpy as jnp
from jax import lax

from ddm_jax.constants import NII_HA, OIII_HB
from ddm_jax.model import bpt
from ddm_jax.model.models import DDM, LineRatioRegressor
from ddm_jax.model.preprocess import center_batch, normalize_batch
from ddm_jax.model.scoring import continuum_snr, normalised_ivar, score
from ddm_jax.schema import STD_KEYS


def _ddm_pass(ddm_params, x, ddm: DDM):
    """The DDM on normalised inputs: (outputs, sf_fraction, residual, trunk features)."""
    out, state = ddm.apply({"params": ddm_params}, x, mutable=["intermediates"])
    sf_fraction = jnp.clip(out.p_sf, 0.0, 1.0)
    w = sf_fraction[:, None]
    residual = w * out.sf_spectrum + (1.0 - w) * out.agn_spectrum - x
    return out, sf_fraction, residual, state["intermediates"]["features"][0]


def _finite_rows(*arrays):
    """(B,) True where every value of a row of every array is finite."""
    return jnp.stack([jnp.isfinite(a.reshape(a.shape[0], -1)).all(axis=1) for a in arrays]).all(axis=0)


def _check_batch(spectra, mass, ivar, n_bins: int) -> None:
    """Shapes at trace time (free at run time): spectra (B, n_bins), mass (B,), ivar None or like spectra."""
    chex.assert_shape(spectra, (None, n_bins))
    chex.assert_shape(mass, (spectra.shape[0],))
    if ivar is not None:
        chex.assert_equal_shape([spectra, ivar])


@partial(jax.jit, static_argnames=("ddm",))
def ddm_views(ddm_params, spectra, mass, ivar, *, ddm: DDM):
    """What the trust calibration reads, on raw spectra: x_n, trunk features, residual, finite
    DDM outputs (B,) and ivar in normalised units (None without ivar)."""
    _check_batch(spectra, mass, ivar, ddm.config.n_bins)
    x = normalize_batch(spectra, mass)
    out, _, residual, features = _ddm_pass(ddm_params, x, ddm)
    ivar_n = None if ivar is None else normalised_ivar(spectra, mass, ivar)
    return x, features, residual, _finite_rows(*out), ivar_n


@partial(jax.jit, static_argnames=("ddm", "regressor", "normalize", "bpt_scheme"))
def decompose_batch(ddm_params, regressor_params, spectra, mass, trust_arrays=None, ivar=None, *, ddm: DDM,
                    regressor: LineRatioRegressor, normalize: bool = True, bpt_scheme: str = "standard") -> dict:
    """The whole pipeline on one batch: spectra (B, n_bins), mass (B,) -> dict of OUTPUT_KEYS and
    TRUST_KEYS arrays (docs/model.md#preprocessing, #post-processing, #bpt-classification; docs/trust.md).

    trust_arrays: `model.scoring.scoring_arrays` of the checkpoint's calibration, or None; ivar (B, n_bins):
    the spectra's inverse variance (already in normalised units with `normalize=False`), or None.
    """
    _check_batch(spectra, mass, ivar, ddm.config.n_bins)
    x = normalize_batch(spectra, mass) if normalize else spectra
    out, sf_fraction, residual, features = _ddm_pass(ddm_params, x, ddm)
    parts = jnp.stack([x, out.sf_spectrum, out.agn_spectrum], axis=1)  # (B, 3, n_bins)
    batch = parts.shape[0]
    ratios = regressor.apply({"params": regressor_params}, center_batch(parts.reshape(3 * batch, -1)))
    line_ratios = ratios.reshape(batch, 3, -1)
    bpt_class = bpt.classify_nii(line_ratios[..., NII_HA], line_ratios[..., OIII_HB], bpt_scheme)
    ivar_n = ivar if ivar is None or not normalize else normalised_ivar(spectra, mass, ivar)
    snr = None if ivar is None or not normalize else continuum_snr(spectra, ivar)
    finite = _finite_rows(*out, line_ratios)
    return {"sf_spectrum": out.sf_spectrum, "agn_spectrum": out.agn_spectrum, "p_sf": out.p_sf,
            "p_agn": out.p_agn, "p_total": out.p_total, "sf_fraction": sf_fraction,
            "residual": residual, "line_ratios": line_ratios, "bpt_class": bpt_class,
            **score(trust_arrays, x, features, residual, finite, ivar_n, snr)}


@partial(jax.jit, static_argnames=("ddm", "normalize", "samples"))
def dropout_std(ddm_params, spectra, mass, key, *, ddm: DDM, normalize: bool, samples: int) -> dict:
    """Monte-Carlo dropout on one batch: the std of the DDM's outputs over `samples` passes with
    dropout on (Welford's running moments, so memory does not grow with `samples`)."""
    x = normalize_batch(spectra, mass) if normalize else spectra

    def quantities(k):
        out = ddm.apply({"params": ddm_params}, x, deterministic=False, rngs={"dropout": k})
        return (out.sf_spectrum, out.agn_spectrum, out.p_sf, out.p_agn, out.p_total, jnp.clip(out.p_sf, 0.0, 1.0))

    def step(carry, k):
        count, mean, m2 = carry
        values = quantities(k)
        count = count + 1.0
        delta = jax.tree.map(jnp.subtract, values, mean)
        mean = jax.tree.map(lambda m, d: m + d / count, mean, delta)
        m2 = jax.tree.map(lambda q, d, v, m: q + d * (v - m), m2, delta, values, mean)
        return (count, mean, m2), None

    zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(quantities, key))
    (count, _, m2), _ = lax.scan(step, (0.0, zeros, zeros), jax.random.split(key, samples))
    return {name: jnp.sqrt(q / count) for name, q in zip(STD_KEYS, m2)}
