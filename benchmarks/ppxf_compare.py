"""`prepare`'s fits side by side with pPXF (Cappellari's Penalized PiXel-Fitting, the field's reference
fitter), on template galaxies of known truth and on the committed real spectra.

    python -m benchmarks.ppxf_compare [--galaxies 40] [--seed 0] [--skip-real]

1. Template galaxies: `tests/spectra_helpers.template_galaxy` (BC03 populations broadened to a known
   sigma* and shifted to a known v*, a flux-calibration tilt, narrow Gaussian lines of known flux,
   velocity and width with the doublets at their atomic ratios, noise per SDSS pixel) on SDSS's
   observed grid at z = 0.05, taken to the rest-frame grid by `prepare`'s own path
   (`pipeline.prepare_spectra`, which also fits them: ddm-jax), then fitted by pPXF on the same
   rest-frame arrays. Per line and for v*, sigma*: median bias and scatter against the truth and
   the pull (fit - truth) / error.
2. The committed real spectra (`ddm_jax/data/real_eval.npz`, prepare's fluxes as committed: rebuild
   it with tools/make_real_eval.py after changing the fits): pPXF on the same rest-frame arrays;
   per spectrum and as medians with bootstrap 95 % intervals, ddm-jax / pPXF flux and error ratios
   and the v*, sigma* differences.

pPXF's set-up: the same 40 BC03 templates, convolved to the data's resolution (the template
galaxies': the templates' own 2.3 A FWHM plus the constant-km/s kernel `template_galaxy` adds; the
real spectra's: MaNGA's R(lambda) that prepare matches, `ddm_jax.spectra.instrument`), both with
the 2 A bins' box (sigma 2 / sqrt(12) A); pPXF's own gas templates (`emission_lines`, its fixed
[OIII], [OI] and [NII] doublets, free [SII]); stars and gas as two kinematic components
(moments 2, 2), mdegree 6, no additive polynomial. Its fluxes are `gas_flux` times the log pixel's
width in A at the line (a doublet template's flux split at pPXF's 1 : 0.33), its errors
`gas_flux_error` and `error` times sqrt(chi2) (pPXF's documentation of both). The rest-frame
spectrum is log-rebinned onto as many pixels as it has bins (106.6 km/s), the noise propagated
exactly (the variance of each log pixel's weighted mean of bins).

Writes benchmarks/results/ppxf-compare.json and .md (date, CPU, versions, n per figure) and prints
where the time goes.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import io
import os
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.prepare_speed import cpu_description
from ddm_jax.constants import DOUBLET_RATIOS, EMISSION_LINES, LINE_NAMES, SPEED_OF_LIGHT_KMS, WAVELENGTH_STEP
from ddm_jax.io.safe import write_json_atomic, write_text_atomic

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
C = SPEED_OF_LIGHT_KMS
FWHM_PER_SIGMA = np.sqrt(8 * np.log(2))
BIN_SIGMA = WAVELENGTH_STEP / np.sqrt(12.0)  # A: the 2 A bins' box profile as a Gaussian sigma
# The six BPT lines (the [SII] doublet summed): name -> the LINE_NAMES it sums.
BPT_LINES = {"hbeta": ("hbeta",), "oiii_5007": ("oiii_5007",), "oi_6300": ("oi_6300",), "halpha": ("halpha",),
             "nii_6584": ("nii_6584",), "sii": ("sii_6717", "sii_6731")}
# pPXF's gas template -> (our line, that line's share of the template's counts: pPXF ties the
# weak member of [OIII], [OI] and [NII] at 0.33 of the strong one's counts).
PPXF_LINES = {"Hbeta": ("hbeta", 1.0), "[OIII]5007_d": ("oiii_5007", 1 / 1.33), "[OI]6300_d": ("oi_6300", 1 / 1.33),
              "Halpha": ("halpha", 1.0), "[NII]6583_d": ("nii_6584", 1 / 1.33), "[SII]6716": ("sii_6717", 1.0),
              "[SII]6731": ("sii_6731", 1.0)}
# Template galaxies: drawn per galaxy (uniform unless log-uniform is said).
GALAXY_Z = 0.05
SIGMA_STAR_RANGE = (50.0, 250.0)  # km/s, intrinsic
V_STAR_RANGE = (-150.0, 150.0)
GAS_OFFSET_SD = 30.0  # km/s: v_gas = v* + N(0, GAS_OFFSET_SD)
SIGMA_GAS_RANGE = (40.0, 150.0)
LINE_SCALE_RANGE = (0.3, 5.0)  # log-uniform: times spectra_helpers.TRUE_FLUX (Halpha 300)
YOUNG_FRACTION_RANGE = (0.0, 0.6)
SNR_PER_BIN_RANGE = (10.0, 60.0)  # log-uniform: the continuum's S/N per 2 A bin at 5500 A
CONTINUUM_LEVEL = 100.0  # template_galaxy's continuum near 5500 A, rest-frame density
SNR_WINDOW = (5400.0, 5600.0)
DETECTED_SNR = 3.0  # a real-spectrum flux ratio counts where both fitters detect the line at this S/N
BOOTSTRAP = 2000


def _helpers():
    """tests/spectra_helpers (the template galaxies the tests build): a test module, not a package."""
    sys.path.insert(0, str(ROOT / "tests"))
    import spectra_helpers

    return spectra_helpers


def bootstrap_median(values, rng, statistic=np.median) -> list[float] | None:
    """The 95 % bootstrap interval of `statistic` over `values` (None for fewer than 3)."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if len(values) < 3:
        return None
    draws = [statistic(rng.choice(values, len(values))) for _ in range(BOOTSTRAP)]
    return [float(q) for q in np.percentile(draws, [2.5, 97.5])]


def robust_sd(values) -> float:
    """1.4826 x the median absolute deviation: the sd of a Gaussian core, deaf to a few outliers."""
    values = np.asarray(values, np.float64)
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def summarise(values, rng) -> dict:
    """median with its 95 % interval, robust sd and plain sd, n, of the finite values."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return {"n": 0}
    return {"n": int(len(values)), "median": float(np.median(values)), "median_ci95": bootstrap_median(values, rng),
            "robust_sd": robust_sd(values), "robust_sd_ci95": bootstrap_median(values, rng, robust_sd),
            "sd": float(np.std(values)), "within_1": float(np.mean(np.abs(values) < 1))}


# --- the galaxies of known truth ---

def draw_galaxies(count: int, seed: int):
    """`count` template galaxies (observed, SDSS-like) and their truth: dict of arrays."""
    helpers = _helpers()
    rng = np.random.default_rng(seed)
    uniform = lambda bounds: rng.uniform(*bounds, count)  # noqa: E731
    log_uniform = lambda bounds: np.exp(rng.uniform(*np.log(bounds), count))  # noqa: E731
    truth = {"sigma_star": uniform(SIGMA_STAR_RANGE), "v_star": uniform(V_STAR_RANGE),
             "sigma_gas": uniform(SIGMA_GAS_RANGE), "line_scale": log_uniform(LINE_SCALE_RANGE),
             "young_fraction": uniform(YOUNG_FRACTION_RANGE), "snr_target": log_uniform(SNR_PER_BIN_RANGE)}
    truth["v_gas"] = truth["v_star"] + rng.normal(0.0, GAS_OFFSET_SD, count)
    # noise per SDSS pixel for the target S/N per 2 A rest bin: a bin holds 2 (1 + z) / (lambda ln10 1e-4)
    # pixels at 5500 A rest, and template_galaxy's observed flux is the density / (1 + z)
    pixels_per_bin = WAVELENGTH_STEP / (5500.0 * np.log(10) * helpers.SDSS_DLOGLAM)
    noise = CONTINUUM_LEVEL / (1 + GALAXY_Z) * np.sqrt(pixels_per_bin) / truth["snr_target"]
    spectra = [helpers.template_galaxy(rng, z=GALAXY_Z, sigma_star=truth["sigma_star"][i], v_star=truth["v_star"][i],
                                       v_gas=truth["v_gas"][i], sigma_gas=truth["sigma_gas"][i],
                                       line_scale=truth["line_scale"][i], young_fraction=truth["young_fraction"][i],
                                       noise=noise[i], spec_id=f"galaxy-{i}")
               for i in range(count)]
    fluxes = [helpers.true_fluxes(truth["line_scale"][i]) for i in range(count)]
    truth["line_flux"] = np.array([[f[name] for name in LINE_NAMES] for f in fluxes])
    return spectra, truth


def template_galaxy_sigma(wavelength):
    """The template galaxies' stellar resolution (Gaussian sigma, A) on the rest grid: the templates'
    own, with template_galaxy's constant-km/s kernel sqrt(INSTRUMENT^2 - template(5500 A)^2)
    (negative: the templates are broader than that instrument at 5500 A, in quadrature) and the bins' box."""
    from ddm_jax.astro.templates import load_templates
    from ddm_jax.prepare.continuum import INSTRUMENT_SIGMA_KMS, REFERENCE_WAVELENGTH

    template = load_templates().fwhm_angstrom / FWHM_PER_SIGMA
    extra_kms2 = INSTRUMENT_SIGMA_KMS**2 - (template / REFERENCE_WAVELENGTH * C) ** 2
    return np.sqrt(template**2 + extra_kms2 * (np.asarray(wavelength) / C) ** 2 + BIN_SIGMA**2)


def manga_sigma(wavelength):
    """The real spectra's resolution (A): MaNGA's R(lambda), which prepare matches, and the bins' box."""
    from ddm_jax.spectra.instrument import target_sigma

    return np.sqrt(target_sigma(wavelength) ** 2 + BIN_SIGMA**2)


# --- pPXF ---

class PpxfSetup:
    """Everything of a pPXF fit that depends on the resolution only (built once per data set)."""

    def __init__(self, resolution_sigma):
        import ppxf.ppxf_util as util

        from ddm_jax.astro.templates import load_templates
        from ddm_jax.constants import wavelength_grid

        self.wave = wavelength_grid().astype(np.float64)
        self.lam_range = self.wave[[0, -1]]  # pPXF's two-element form: the first and last bins' centres
        # the log rebin is linear in the bins: its matrix propagates the variance exactly
        self.rebin, ln_lam, velscale = util.log_rebin(self.lam_range, np.eye(self.wave.size))
        self.velscale = float(velscale)
        self.lam = np.exp(ln_lam)
        templates = load_templates()
        template_sigma = templates.fwhm_angstrom / FWHM_PER_SIGMA
        # the data are at least as broad as the templates here (both resolutions: above 2.3 A FWHM)
        extra = np.sqrt(np.maximum(resolution_sigma(templates.wavelength) ** 2 - template_sigma**2, 0.0))
        smooth = util.varsmooth(templates.wavelength, templates.flux.T.astype(np.float64), extra)
        stars, ln_lam_temp, _ = util.log_rebin(templates.wavelength, smooth, velscale=self.velscale)
        with contextlib.redirect_stdout(io.StringIO()):  # it prints the lines it made
            gas, names, line_wave = util.emission_lines(
                ln_lam_temp, self.lam_range, lambda lam: FWHM_PER_SIGMA * resolution_sigma(lam), vacuum=True)
        inside = (line_wave > self.lam_range[0]) & (line_wave < self.lam_range[1])
        gas, self.gas_names = gas[:, inside], np.asarray(names)[inside]
        self.templates = np.column_stack([stars / np.median(stars), gas])
        self.component = np.array([0] * stars.shape[1] + [1] * gas.shape[1])
        self.lam_temp = np.exp(ln_lam_temp)

    def fit(self, flux, ivar, good) -> dict:
        """pPXF on one rest-frame spectrum (2208,) x3 -> fluxes and errors (LINE_NAMES), kinematics."""
        from ppxf.ppxf import ppxf

        variance = np.where(good, 1.0 / np.where(good, ivar, 1.0), 0.0)
        galaxy = self.rebin @ np.where(good, flux, 0.0)
        noise = np.sqrt(self.rebin**2 @ variance)
        touched_bad = self.rebin @ (~good).astype(np.float64) > 0  # a log pixel fed by any bad bin
        goodpixels = np.flatnonzero(~touched_bad & (noise > 0))
        noise = np.where(noise > 0, noise, np.median(noise[goodpixels]))
        pp = ppxf(self.templates, galaxy, noise, self.velscale, [[0.0, 100.0], [0.0, 100.0]], moments=[2, 2],
                  degree=-1, mdegree=6, component=self.component, gas_component=self.component > 0,
                  gas_names=self.gas_names, lam=self.lam, lam_temp=self.lam_temp, goodpixels=goodpixels, quiet=True)
        scale = np.sqrt(pp.chi2)
        line_flux = np.full(len(LINE_NAMES), np.nan)
        line_err = np.full(len(LINE_NAMES), np.nan)
        pixel_width = self.velscale / C  # a log pixel's width in A is lambda times this
        for template, (line, share) in PPXF_LINES.items():
            j = list(self.gas_names).index(template)
            k = LINE_NAMES.index(line)
            line_flux[k] = pp.gas_flux[j] * share * EMISSION_LINES[line] * pixel_width
            line_err[k] = pp.gas_flux_error[j] * share * EMISSION_LINES[line] * pixel_width * scale
        k = LINE_NAMES.index("nii_6548")  # reported as prepare does: the tied member at its ratio
        line_flux[k] = line_flux[LINE_NAMES.index("nii_6584")] / DOUBLET_RATIOS["nii_6548"][1]
        line_err[k] = line_err[LINE_NAMES.index("nii_6584")] / DOUBLET_RATIOS["nii_6548"][1]
        return {"line_flux": line_flux, "line_flux_err": line_err, "stellar_velocity": pp.sol[0][0],
                "stellar_sigma": pp.sol[0][1], "stellar_velocity_err": pp.error[0][0] * scale,
                "stellar_sigma_err": pp.error[0][1] * scale, "gas_velocity": pp.sol[1][0],
                "gas_sigma": pp.sol[1][1], "chi2": pp.chi2}


def fit_all_ppxf(setup: PpxfSetup, flux, ivar, mask) -> dict[str, np.ndarray]:
    results = [setup.fit(flux[i].astype(np.float64), ivar[i].astype(np.float64), (mask[i] == 0) & (ivar[i] > 0))
               for i in range(len(flux))]
    return {key: np.array([r[key] for r in results]) for key in results[0]}


def bpt(line_flux, line_err):
    """(B, 8) fluxes and errors -> {BPT line: (flux (B,), error (B,))}, [SII] summed (errors in quadrature)."""
    out = {}
    for name, parts in BPT_LINES.items():
        idx = [LINE_NAMES.index(p) for p in parts]
        out[name] = (line_flux[:, idx].sum(axis=1), np.sqrt((line_err[:, idx] ** 2).sum(axis=1)))
    return out


# --- the two comparisons ---

def compare_galaxies(count: int, seed: int, timings: dict) -> tuple[dict, dict]:
    """Both fitters on `count` template galaxies: the statistics and the per-galaxy values."""
    from ddm_jax.prepare import pipeline

    rng = np.random.default_rng(seed + 1)
    started = time.perf_counter()
    spectra, truth = draw_galaxies(count, seed)
    timings["galaxies_built_s"] = time.perf_counter() - started
    started = time.perf_counter()
    ours = pipeline.prepare_spectra(spectra, coverage="fill", snr_policy="warn", log=lambda message: None)
    timings["ddm_jax_galaxies_s"] = time.perf_counter() - started  # includes the fit's compilation
    started = time.perf_counter()
    theirs = fit_all_ppxf(PpxfSetup(template_galaxy_sigma), ours["flux"], ours["ivar"], ours["mask"])
    timings["ppxf_galaxies_s"] = time.perf_counter() - started
    window = (ours["wavelength"] >= SNR_WINDOW[0]) & (ours["wavelength"] <= SNR_WINDOW[1])
    snr = np.median(ours["flux"][:, window] * np.sqrt(ours["ivar"][:, window]), axis=1)
    true_lines = bpt(truth["line_flux"], np.zeros_like(truth["line_flux"]))
    stats = {}
    per_galaxy = {"snr_per_bin": snr.tolist(), "truth": {k: np.asarray(v).tolist() for k, v in truth.items()}}
    for fitter, fitted in (("ddm_jax", ours), ("ppxf", theirs)):
        lines = bpt(fitted["line_flux"], fitted["line_flux_err"])
        entry = {}
        for name, (flux, err) in lines.items():
            true = true_lines[name][0]
            entry[name] = {"relative_error": summarise((flux - true) / true, rng),
                           "pull": summarise((flux - true) / err, rng),
                           "true_snr_median": float(np.median(true / err))}
        velocity_err = fitted.get("stellar_velocity_err")
        sigma_err = fitted.get("stellar_sigma_err")
        entry["v_star"] = {"difference_kms": summarise(fitted["stellar_velocity"] - truth["v_star"], rng),
                           "pull": None if velocity_err is None
                           else summarise((fitted["stellar_velocity"] - truth["v_star"]) / velocity_err, rng)}
        entry["sigma_star"] = {"relative_error": summarise(fitted["stellar_sigma"] / truth["sigma_star"] - 1, rng),
                               "pull": None if sigma_err is None
                               else summarise((fitted["stellar_sigma"] - truth["sigma_star"]) / sigma_err, rng)}
        stats[fitter] = entry
        per_galaxy[fitter] = {"line_flux": np.asarray(fitted["line_flux"]).tolist(),
                              "line_flux_err": np.asarray(fitted["line_flux_err"]).tolist(),
                              "stellar_velocity": np.asarray(fitted["stellar_velocity"]).tolist(),
                              "stellar_sigma": np.asarray(fitted["stellar_sigma"]).tolist()}
    ratio = {}
    ours_lines, theirs_lines = bpt(ours["line_flux"], ours["line_flux_err"]), bpt(theirs["line_flux"],
                                                                               theirs["line_flux_err"])
    for name in BPT_LINES:
        ratio[name] = {"flux_ratio": summarise(ours_lines[name][0] / theirs_lines[name][0], rng),
                       "error_ratio": summarise(ours_lines[name][1] / theirs_lines[name][1], rng)}
    stats["ddm_jax_over_ppxf"] = ratio
    stats["snr_per_bin"] = summarise(snr, rng)
    return stats, per_galaxy


def compare_real(timings: dict) -> dict:
    """pPXF on the committed real spectra against prepare's committed fit."""
    from ddm_jax.evaluation.real_eval import load_real_set

    rng = np.random.default_rng(7)
    real = load_real_set()
    started = time.perf_counter()
    theirs = fit_all_ppxf(PpxfSetup(manga_sigma), real["flux"], real["ivar"], real["mask"])
    timings["ppxf_real_s"] = time.perf_counter() - started
    ours_lines = bpt(real["line_flux"], real["line_flux_err"])
    theirs_lines = bpt(theirs["line_flux"], theirs["line_flux_err"])
    per_spectrum = []
    for i, name in enumerate(real["name"]):
        row = {"name": str(name), "survey": str(real["survey"][i]), "passes_gate": bool(real["passes_gate"][i]),
               "line_wing": bool(real["line_wing"][i]), "broad_balmer": bool(real["broad_balmer"][i]),
               "resolution_sigma_kms": float(real["resolution_sigma_kms"][i]),
               "line_fit_rchi2": float(real["line_fit_rchi2"][i]), "continuum_rchi2": float(real["continuum_rchi2"][i]),
               "ppxf_chi2": float(theirs["chi2"][i]),
               "v_star": [float(real["stellar_velocity"][i]), float(theirs["stellar_velocity"][i])],
               "sigma_star": [float(real["stellar_sigma"][i]), float(theirs["stellar_sigma"][i])],
               "ppxf_sigma_star_err": float(theirs["stellar_sigma_err"][i]),
               "ppxf_gas": [float(theirs["gas_velocity"][i]), float(theirs["gas_sigma"][i])],
               "lines": {}}
        for line in BPT_LINES:
            (f1, e1), (f2, e2) = ours_lines[line], theirs_lines[line]
            row["lines"][line] = {"ddm_jax": [float(f1[i]), float(e1[i])], "ppxf": [float(f2[i]), float(e2[i])]}
        per_spectrum.append(row)
    summary = {}
    for line in BPT_LINES:
        (f1, e1), (f2, e2) = ours_lines[line], theirs_lines[line]
        both = (f1 / e1 > DETECTED_SNR) & (f2 / e2 > DETECTED_SNR)
        summary[line] = {"flux_ratio_detected": summarise((f1 / f2)[both], rng),
                         "error_ratio_all": summarise(e1 / e2, rng),
                         "detected_by": {"ddm_jax": int((f1 / e1 > DETECTED_SNR).sum()),
                                         "ppxf": int((f2 / e2 > DETECTED_SNR).sum()), "both": int(both.sum())}}
    summary["v_star_difference_kms"] = summarise(real["stellar_velocity"] - theirs["stellar_velocity"], rng)
    summary["sigma_star_difference_kms"] = summarise(real["stellar_sigma"] - theirs["stellar_sigma"], rng)
    summary["n_spectra"] = int(len(real["name"]))
    return {"summary": summary, "per_spectrum": per_spectrum}


# --- the report ---

def _fmt(entry, key="median", digits=3) -> str:
    if not entry or not entry.get("n"):
        return "–"
    value = entry[key]
    ci = entry.get(f"{key}_ci95")
    text = f"{value:.{digits}f}"
    return text + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def markdown(report: dict) -> str:
    galaxies, real = report.get("template_galaxies"), report.get("real_spectra")
    out = [f"# `prepare` against pPXF, {report['date']}", "",
           f"{report['cpu'].get('model', 'CPU')} ({report['cpu'].get('cpu_count')} cores), versions "
           + ", ".join(f"{k} {v}" for k, v in report["versions"].items())
           + f"; `python -m benchmarks.ppxf_compare` ({report['command']}). Intervals: bootstrap 95 %.", ""]
    if galaxies:
        stats = galaxies["stats"]
        n = galaxies["n"]
        out += [f"## Template galaxies (n = {n}, known truth)", "",
                f"Continuum S/N per 2 A bin at 5400-5600 A: median {_fmt(stats['snr_per_bin'], digits=1)}. "
                "Relative error = fit / truth - 1; pull = (fit - truth) / reported error (sd 1 if the errors "
                "are honest; robust sd = 1.4826 MAD; `|pull|<1` expects 0.68).", "",
                "| quantity | fitter | median true S/N | median rel. error | robust sd of rel. error | median pull "
                "| robust sd of pull | sd of pull | share with abs(pull) < 1 |",
                "|---|---|---|---|---|---|---|---|---|"]
        for name in (*BPT_LINES, "v_star", "sigma_star"):
            for fitter in ("ddm_jax", "ppxf"):
                entry = stats[fitter][name]
                error = entry.get("relative_error") or entry.get("difference_kms")
                pull = entry["pull"]
                unit = " (km/s)" if name == "v_star" else ""
                snr = f"{entry['true_snr_median']:.1f}" if "true_snr_median" in entry else "–"
                pulls = (f"{_fmt(pull)} | {_fmt(pull, 'robust_sd')} | {pull['sd']:.2f} | {pull['within_1']:.2f}" if pull
                         else "no error reported | – | – | –")
                spread = _fmt(error, "robust_sd")
                out.append(f"| {name}{unit} | {fitter} | {snr} | {_fmt(error)} | {spread} | {pulls} |")
        out += ["", "ddm-jax / pPXF on the same galaxies (median [95 %]):", "",
                "| line | flux ratio | error ratio |", "|---|---|---|"]
        for name, entry in stats["ddm_jax_over_ppxf"].items():
            out.append(f"| {name} | {_fmt(entry['flux_ratio'])} | {_fmt(entry['error_ratio'])} |")
    if real:
        summary = real["summary"]
        out += ["", f"## The committed real spectra (n = {summary['n_spectra']})", "",
                f"ddm-jax / pPXF; flux ratios where both detect the line at S/N > {DETECTED_SNR:g}, error ratios "
                "on every spectrum.", "",
                "| line | n both detect | flux ratio | n | error ratio |", "|---|---|---|---|---|"]
        for line in BPT_LINES:
            entry = summary[line]
            out.append(f"| {line} | {entry['detected_by']['both']} | {_fmt(entry['flux_ratio_detected'])} | "
                       f"{entry['error_ratio_all'].get('n', 0)} | {_fmt(entry['error_ratio_all'])} |")
        out += ["", f"v* ddm-jax - pPXF: {_fmt(summary['v_star_difference_kms'], digits=1)} km/s; "
                f"sigma*: {_fmt(summary['sigma_star_difference_kms'], digits=1)} km/s (n = "
                f"{summary['sigma_star_difference_kms']['n']}).", "",
                "| spectrum | gate | line rchi2 | cont. rchi2 | pPXF chi2 | v* ours, pPXF | sigma* ours, pPXF (err) "
                "| Halpha ratio | [NII] ratio | [OIII] ratio | Hbeta ratio | Halpha err ratio |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for row in real["per_spectrum"]:
            ratio = lambda line, k=0, row=row: _ratio(row["lines"][line]["ddm_jax"][k],  # noqa: E731
                                                      row["lines"][line]["ppxf"][k])
            out.append(f"| {row['name']} | {'pass' if row['passes_gate'] else 'fail'} | {row['line_fit_rchi2']:.2f} | "
                       f"{row['continuum_rchi2']:.2f} | {row['ppxf_chi2']:.2f} | {row['v_star'][0]:.0f}, "
                       f"{row['v_star'][1]:.0f} | {row['sigma_star'][0]:.0f}, {row['sigma_star'][1]:.0f} "
                       f"({row['ppxf_sigma_star_err']:.0f}) | {ratio('halpha'):.3f} | {ratio('nii_6584'):.3f} | "
                       f"{ratio('oiii_5007'):.3f} | {ratio('hbeta'):.3f} | {ratio('halpha', 1):.2f} |")
    out += ["", "Time: " + ", ".join(f"{k} {v:.1f} s" for k, v in report["timings"].items())]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--galaxies", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-real", action="store_true", help="only the template galaxies")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--name", default="ppxf-compare")
    args = parser.parse_args(argv)
    from ddm_jax.runtime import disable_cpu_concurrent_scheduler

    disable_cpu_concurrent_scheduler()  # before JAX starts: the batched fits hang under the concurrent scheduler
    timings: dict[str, float] = {}
    report = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_description(), "load_average_start": os.getloadavg(),
              "command": " ".join(["--galaxies", str(args.galaxies), "--seed", str(args.seed)]
                                  + (["--skip-real"] if args.skip_real else [])),
              "versions": {name: importlib.metadata.version(name) for name in ("ddm-jax", "jax", "numpy", "ppxf")},
              "python": sys.version.split()[0]}
    np.seterr(divide="ignore", invalid="ignore")  # ratios of undetected (zero) fluxes: NaN or inf, left out
    if args.galaxies:
        stats, per_galaxy = compare_galaxies(args.galaxies, args.seed, timings)
        report["template_galaxies"] = {"n": args.galaxies, "stats": stats, "per_galaxy": per_galaxy}
        print(f"template galaxies: {timings}", flush=True)
    if not args.skip_real:
        report["real_spectra"] = compare_real(timings)
    report["timings"] = {k: round(v, 2) for k, v in timings.items()}
    report["load_average_end"] = os.getloadavg()
    out = Path(args.out)
    write_json_atomic(out / f"{args.name}.json", report)
    text = markdown(report)
    write_text_atomic(out / f"{args.name}.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
