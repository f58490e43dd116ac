"""Evaluation on real spectra: the committed set `data/real_eval.npz`, composites of its real SF
and AGN spectra with a known SF share, and the metrics of a decomposition of either.

The set is a PREPARED.npz (ddm_jax.prepare.pipeline; `prepare --coverage fill --snr-policy warn`
over every real spectrum the project can ship, rebuilt by tools/make_real_eval.py, provenance in
data/real_spectra/PROVENANCE.md) with the fitted models dropped and, per spectrum:
  name (B,) str            who it is, e.g. 'SDSS NGC 3073 (945-52652-470)', 'MaNGA 8258-6102 spaxel (27, 27)'
  survey (B,) str          'SDSS', 'DESI' or 'MaNGA'
  measured_class (B,) int8 [NII]-BPT class (ddm_jax.bpt coding) of the measured ratios where
                           both are measured (`ratio_measured`), bpt.UNDEFINED (-1) elsewhere

A ratio counts as measured when each of its lines is detected at S/N > DETECTION_SNR: prepare
writes a ratio for any non-zero flux, and a ratio of noise says nothing about the network.

Metrics take `decompose` outputs (docs/model.md#post-processing) of the set, or of the composites,
decomposed in order with one mass per spectrum (1 unless given).
"""

from __future__ import annotations

import math
from importlib import resources

import numpy as np

from ddm_jax.constants import LINE_NAMES, N_BINS, NII_HA, OIII_HB, SII_HA, SNR_MIN, norm_window_slice
from ddm_jax.errors import InputError
from ddm_jax.io.safe import load_npz
from ddm_jax.model import bpt
from ddm_jax.schema import REAL_SET_KEYS
from ddm_jax.training.calibrate import composite_ivar

DEFAULT_FILE = "real_eval.npz"
DETECTION_SNR = 3.0
# The three ratios the released regressor is known to give: PREPARED key, regressor index, its lines.
RATIOS = (("log_nii_ha", NII_HA, ("nii_6584", "halpha")),
          ("log_oiii_hb", OIII_HB, ("oiii_5007", "hbeta")),
          ("log_sii_ha", SII_HA, ("sii_6717", "sii_6731", "halpha")))
# Fallback selection of composite parts: the gate's S/N threshold on the [NII]-BPT lines only.
BPT_LINES = ("hbeta", "oiii_5007", "halpha", "nii_6584")
# AGN-dominated parts: on or above the Kewley 2001 maximum-starburst line, where no star formation
# alone can put a spectrum. Composites (between Kauffmann and Kewley) are mixtures already, which
# would blur the known SF share, so they are left out unless asked for.
AGN_CLASSES = (bpt.SEYFERT, bpt.LINER)
COMPOSITE_WEIGHTS = (0.1, 0.3, 0.5, 0.7, 0.9)
_WINDOW = norm_window_slice(N_BINS)


def load_real_set(path=None) -> dict[str, np.ndarray]:
    """The committed evaluation set (or the file at `path`): every array in it (module docstring)."""
    if path is None:
        with resources.as_file(resources.files("ddm_jax") / "data" / DEFAULT_FILE) as committed:
            return load_real_set(committed)
    arrays = load_npz(path, "real evaluation set", REAL_SET_KEYS)
    if tuple(arrays["line_names"]) != LINE_NAMES:
        raise InputError(f"{path}: line_names {tuple(arrays['line_names'])}, expected {LINE_NAMES}")
    if arrays["flux"].shape != (len(arrays["ids"]), N_BINS):
        raise InputError(f"{path}: flux has shape {arrays['flux'].shape}, expected ({len(arrays['ids'])}, {N_BINS})")
    return arrays


def ratio_measured(line_snr: np.ndarray, ratios: dict[str, np.ndarray]) -> np.ndarray:
    """(B, 3) bool in RATIOS order: every line of the ratio at S/N > DETECTION_SNR, and the ratio finite."""
    snr = np.asarray(line_snr)
    columns = []
    for key, _, lines in RATIOS:
        detected = np.all([snr[:, LINE_NAMES.index(line)] > DETECTION_SNR for line in lines], axis=0)
        columns.append(detected & np.isfinite(ratios[key]))
    return np.stack(columns, axis=1)


def measured_class(line_snr: np.ndarray, ratios: dict[str, np.ndarray], scheme: str = "standard") -> np.ndarray:
    """[NII]-BPT class (B,) int8 of the measured ratios; bpt.UNDEFINED where either is not measured."""
    measured = ratio_measured(line_snr, ratios)
    both = measured[:, 0] & measured[:, 1]
    x = np.where(both, ratios["log_nii_ha"], np.nan)
    y = np.where(both, ratios["log_oiii_hb"], np.nan)
    return np.asarray(bpt.classify_nii(x, y, scheme), np.int8)


def _unit_median(flux: np.ndarray, ivar: np.ndarray, names) -> tuple[np.ndarray, np.ndarray]:
    """Flux and ivar scaled to unit median flux in the normalisation window, as training libraries are."""
    median = np.median(flux[:, _WINDOW].astype(np.float64), axis=1)
    if not np.all(median > 0):
        bad = [str(names[i]) for i in np.flatnonzero(~(median > 0))]
        raise InputError(f"non-positive median flux in 4000-7000 A, cannot scale: {', '.join(bad)}")
    return flux / median[:, None], ivar * median[:, None] ** 2


def select_parts(real_set: dict[str, np.ndarray], agn_classes=AGN_CLASSES) -> tuple[np.ndarray, np.ndarray, str]:
    """Indices of the SF and the AGN parts for composites, and the rule that chose them.

    Gated spectra (passes_gate) whose measured class is star-forming, or in `agn_classes`. If either
    group is empty, both are chosen again among spectra with S/N > SNR_MIN in the four
    [NII]-BPT lines and no broad Balmer lines, whatever the fit-quality verdict and [SII].
    """
    classes = real_set["measured_class"]
    is_sf, is_agn = classes == bpt.STAR_FORMING, np.isin(classes, agn_classes)
    agn_names = " or ".join(bpt.CLASS_NAMES[c] for c in agn_classes)
    gated = real_set["passes_gate"].astype(bool)
    if (gated & is_sf).any() and (gated & is_agn).any():
        chosen = gated
        rule = f"gated spectra (passes_gate); SF part: measured star-forming; AGN part: measured {agn_names}"
    else:
        snr = real_set["line_snr"][:, [LINE_NAMES.index(line) for line in BPT_LINES]]
        chosen = np.all(snr > SNR_MIN, axis=1) & ~real_set["broad_balmer"].astype(bool)
        rule = (f"fallback, too few gated SF or AGN spectra: S/N > {SNR_MIN:g} in {', '.join(BPT_LINES)} and "
                f"no broad Balmer lines; SF part: measured star-forming; AGN part: measured {agn_names}")
    sf, agn = np.flatnonzero(chosen & is_sf), np.flatnonzero(chosen & is_agn)
    if not (sf.size and agn.size):
        raise InputError(f"no composites: {sf.size} SF and {agn.size} AGN spectra under the rule '{rule}'")
    return sf, agn, rule


def real_composites(real_set: dict[str, np.ndarray], weights=COMPOSITE_WEIGHTS,
                    agn_classes=AGN_CLASSES) -> dict[str, np.ndarray]:
    """Composites `w A + (1 - w) B` of every (SF spectrum A, AGN spectrum B) pair of `select_parts`,
    each part at unit median flux in the normalisation window, as the training composites
    (ddm_jax.synthetic.composite): `w` is then the SF share of the flux in the window.

    Returns composite, ivar (n, 2208) float32 (variance w^2 var_A + (1 - w)^2 var_B on the
    unit-median scale; 0 where either part's ivar is 0), mask (n, 2208) uint8 (either part's bits),
    true_sf_fraction (n,) float32, sf_index, agn_index (n,) rows of `real_set`, pair (n,) the pair's
    number, sf_name, agn_name (n,) str, and selection () str, the rule that chose the parts.
    Pairs in (SF, AGN) order, weights innermost.
    """
    weights = np.asarray(weights, np.float64)
    if weights.ndim != 1 or not np.all((weights >= 0) & (weights <= 1)):
        raise InputError(f"composite weights must be a list of numbers in [0, 1], got {weights.tolist()}")
    sf, agn, rule = select_parts(real_set, agn_classes)
    flux, ivar = _unit_median(real_set["flux"].astype(np.float64), real_set["ivar"].astype(np.float64),
                              real_set["name"])
    sf_index = np.repeat(np.repeat(sf, agn.size), weights.size)
    agn_index = np.repeat(np.tile(agn, sf.size), weights.size)
    w = np.tile(weights, sf.size * agn.size)[:, None]
    return {
        "composite": (w * flux[sf_index] + (1 - w) * flux[agn_index]).astype(np.float32),
        "ivar": composite_ivar(ivar[sf_index], ivar[agn_index], w[:, 0]),
        "mask": real_set["mask"][sf_index] | real_set["mask"][agn_index],
        "true_sf_fraction": w[:, 0].astype(np.float32),
        "sf_index": sf_index, "agn_index": agn_index,
        "pair": np.repeat(np.arange(sf.size * agn.size), weights.size),
        "sf_name": real_set["name"][sf_index], "agn_name": real_set["name"][agn_index],
        "selection": np.array(rule),
    }


def residual_chi2(residual: np.ndarray, flux: np.ndarray, ivar: np.ndarray, mass=1.0) -> np.ndarray:
    """Reduced chi^2 (B,) of decompose's residual against the input's ivar: mean over bins with
    ivar > 0 of residual_flux^2 ivar. The DDM's input is (x - m) / (s mass), so the residual in flux
    units is residual s mass (s: population std of x in the normalisation window). NaN for a
    spectrum with no bin of ivar > 0."""
    flux = np.asarray(flux, np.float64)
    scale = np.std(flux[:, _WINDOW], axis=1) * np.broadcast_to(np.asarray(mass, np.float64), flux.shape[:1])
    terms = (np.asarray(residual, np.float64) * scale[:, None]) ** 2 * ivar
    return _mean_where(terms, np.asarray(ivar) > 0)


def _mean_where(values: np.ndarray, where: np.ndarray) -> np.ndarray:
    count = where.sum(axis=1)
    total = np.where(where, values, 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _check_outputs(outputs: dict[str, np.ndarray], n: int, keys, what: str) -> None:
    for key in keys:
        if key not in outputs:
            raise InputError(f"decompose outputs lack {key}")
        if len(outputs[key]) != n:
            raise InputError(f"decompose outputs have {len(outputs[key])} rows of {key}, {what} has {n}")


def _number(value) -> float | None:
    """A JSON-safe float: None for NaN (no spectrum to take the median of)."""
    value = float(value)
    return None if math.isnan(value) else value


def finite_median(values) -> float | None:
    """The median of the finite values, or None if there are none."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    return _number(np.median(values)) if values.size else None


def real_spectrum_metrics(outputs: dict[str, np.ndarray], real_set: dict[str, np.ndarray],
                          mass=1.0) -> dict:
    """How `decompose` outputs of the real set (same order, masses `mass`) compare with what was measured.

    Per spectrum (B, ...): predicted_ratios, measured_ratios, ratio_measured, abs_delta (B, 3) in
    RATIOS order (abs_delta NaN where not measured); bpt_agrees (B,) the composite's class equals the
    measured one (False where that is undefined); residual_rms (B,) over bins with ivar > 0 in
    normalised units; reduced_chi2 (B,) (residual_chi2). `summary` (JSON-serialisable) gives medians
    and counts over the gated spectra and, separately, over every spectrum with the quantity measured.
    """
    n = len(real_set["ids"])
    _check_outputs(outputs, n, ("line_ratios", "bpt_class", "residual"), "the real set")
    ratios = {key: real_set[key] for key, _, _ in RATIOS}
    measured_mask = ratio_measured(real_set["line_snr"], ratios)
    predicted = np.stack([np.asarray(outputs["line_ratios"])[:, 0, index] for _, index, _ in RATIOS], axis=1)
    measured = np.stack([ratios[key] for key, _, _ in RATIOS], axis=1).astype(np.float64)
    abs_delta = np.where(measured_mask, np.abs(predicted - measured), np.nan)
    classes = real_set["measured_class"]
    class_defined = classes != bpt.UNDEFINED
    bpt_agrees = class_defined & (np.asarray(outputs["bpt_class"])[:, 0] == classes)
    observed = np.asarray(real_set["ivar"]) > 0
    residual = np.asarray(outputs["residual"], np.float64)
    residual_rms = np.sqrt(_mean_where(residual**2, observed))
    chi2 = residual_chi2(residual, real_set["flux"], real_set["ivar"], mass)
    gated = real_set["passes_gate"].astype(bool)

    def summarise(rows: np.ndarray) -> dict:
        return {
            "n_spectra": int(rows.sum()),
            "median_abs_delta": {key: finite_median(abs_delta[rows & measured_mask[:, k], k])
                                 for k, (key, _, _) in enumerate(RATIOS)},
            "n_ratio_measured": {key: int((rows & measured_mask[:, k]).sum()) for k, (key, _, _) in enumerate(RATIOS)},
            "bpt_agree": int((rows & bpt_agrees).sum()), "bpt_defined": int((rows & class_defined).sum()),
            "median_residual_rms": finite_median(residual_rms[rows]), "median_reduced_chi2": finite_median(chi2[rows]),
        }

    return {
        "predicted_ratios": predicted, "measured_ratios": measured, "ratio_measured": measured_mask,
        "abs_delta": abs_delta, "bpt_agrees": bpt_agrees, "residual_rms": residual_rms, "reduced_chi2": chi2,
        "summary": {"ratios": [key for key, _, _ in RATIOS], "gated": summarise(gated),
                    "measured": summarise(np.ones(n, bool))},
    }


def real_composite_metrics(outputs: dict[str, np.ndarray], composites: dict[str, np.ndarray]) -> dict:
    """SF-fraction errors of `decompose` outputs of `real_composites` (same order).

    Returns error (n,) (predicted - true) and `summary` (JSON-serialisable): MAE, bias (mean error)
    and the largest |error| overall, per pair (with its two names) and per true SF fraction.
    """
    truth = np.asarray(composites["true_sf_fraction"], np.float64)
    _check_outputs(outputs, truth.size, ("sf_fraction",), "the composites")
    error = np.asarray(outputs["sf_fraction"], np.float64) - truth

    def summarise(rows: np.ndarray) -> dict:
        return {"n": int(rows.sum()), "mae": _number(np.abs(error[rows]).mean()), "bias": _number(error[rows].mean()),
                "max_abs_error": _number(np.abs(error[rows]).max())}

    pairs = []
    for pair in np.unique(composites["pair"]):
        rows = composites["pair"] == pair
        first = np.flatnonzero(rows)[0]
        pairs.append({"sf": str(composites["sf_name"][first]), "agn": str(composites["agn_name"][first]),
                      **summarise(rows)})
    by_weight = [{"true_sf_fraction": _number(w), **summarise(truth == w)} for w in np.unique(truth)]
    return {"error": error, "summary": {"overall": summarise(np.ones(truth.size, bool)), "pairs": pairs,
                                        "by_true_sf_fraction": by_weight,
                                        "selection": str(composites["selection"])}}
