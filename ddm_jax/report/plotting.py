"""Figures of a decomposition (the arrays of `decompose`'s OUT.npz) as PNG files.

Figures are built on matplotlib's object API with the Agg canvas: no pyplot, no global
backend switch, nothing shown on screen.

    out = load_decomposition("OUT.npz")   # or the dict `Decomposer` returns, with `wavelength`
    save_png(spectrum_figure(out, 0), "spectrum_0.png")
    save_png(bpt_figure(out), "bpt.png")
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from ddm_jax.constants import EMISSION_LINES, NII_HA, OIII_HB, SII_HA
from ddm_jax.errors import InputError
from ddm_jax.io.safe import load_npz, write_atomic
from ddm_jax.model import bpt
from ddm_jax.schema import FIGURE_KEYS

COMPOSITE, SF, AGN = 0, 1, 2  # axis 1 of line_ratios
DENSITY_THRESHOLD = 200  # above this many galaxies, composites are drawn as a density
COLORS = {"composite": "black", "sf": "tab:blue", "agn": "tab:red", "model": "0.55"}
NII_LIMITS = ((-2.0, 1.0), (-1.5, 1.5))
SII_LIMITS = ((-1.5, 1.0), (-1.5, 1.5))
DPI = 110


def load_decomposition(path) -> dict:
    """The arrays of a decompose output (.npz or FITS catalogue), checked for the keys and shapes plots need."""
    from ddm_jax.io.outputs.base import is_fits_name
    from ddm_jax.io.outputs.files import read_arrays

    path = Path(path)
    out = (read_arrays(path, FIGURE_KEYS) if is_fits_name(path)
           else load_npz(path, "`ddm-jax decompose` output", FIGURE_KEYS))
    check_decomposition(out, path)
    return out


def check_decomposition(out: dict, where) -> None:
    """A DDMError naming `where` unless `out` has the keys and shapes plots need."""
    missing = [key for key in FIGURE_KEYS if key not in out]
    if missing:
        raise InputError(f"{where}: not a decomposition: lacks {', '.join(missing)}")
    n, n_bins = out["sf_spectrum"].shape
    expected = {"wavelength": (n_bins,), "agn_spectrum": (n, n_bins), "residual": (n, n_bins),
                "sf_fraction": (n,)}
    for key, shape in expected.items():
        if out[key].shape != shape:
            raise InputError(f"{where}: {key} has shape {out[key].shape}, expected {shape}")
    if out["line_ratios"].shape[:2] != (n, 3):
        raise InputError(f"{where}: line_ratios has shape {out['line_ratios'].shape}, expected ({n}, 3, 8)")


def save_png(figure: Figure, path) -> Path:
    """Render `figure` to `path` as PNG, via a temporary file renamed when complete."""
    return write_atomic(path, lambda f: figure.savefig(f, format="png", dpi=DPI))


def new_figure(size) -> Figure:
    figure = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def draw_nii_lines(ax) -> None:
    x = np.linspace(NII_LIMITS[0][0], bpt.KAUFFMANN03_ASYMPTOTE - 0.01, 200)
    ax.plot(x, bpt.kauffmann03(x), "k--", lw=1, label="Kauffmann+03")
    x = np.linspace(NII_LIMITS[0][0], bpt.KEWLEY01_NII_ASYMPTOTE - 0.01, 200)
    ax.plot(x, bpt.kewley01_nii(x), "k-", lw=1, label="Kewley+01")
    x = np.linspace(-0.18, NII_LIMITS[0][1], 50)  # Schawinski+07 from where it crosses Kewley
    ax.plot(x, bpt.schawinski07(x), "k:", lw=1, label="Schawinski+07")
    ax.set(xlim=NII_LIMITS[0], ylim=NII_LIMITS[1], xlabel=r"log [NII]/H$\alpha$", ylabel=r"log [OIII]/H$\beta$")


def draw_sii_lines(ax) -> None:
    x = np.linspace(SII_LIMITS[0][0], bpt.KEWLEY01_SII_ASYMPTOTE - 0.01, 200)
    ax.plot(x, bpt.kewley01_sii(x), "k-", lw=1, label="Kewley+01")
    x = np.linspace(-0.31, SII_LIMITS[0][1], 50)  # Kewley+06 from where it crosses Kewley+01
    ax.plot(x, bpt.kewley06_sii(x), "k:", lw=1, label="Kewley+06")
    ax.set(xlim=SII_LIMITS[0], ylim=SII_LIMITS[1], xlabel=r"log [SII]/H$\alpha$", ylabel=r"log [OIII]/H$\beta$")


def spectrum_figure(out: dict, index: int) -> Figure:
    """Three panels for galaxy `index`: the decomposition, its residual, its [NII] BPT points.

    Top: the normalised input, w * SF, (1 - w) * AGN and their sum (w = SF fraction).
    """
    n = out["sf_fraction"].shape[0]
    if not 0 <= index < n:
        raise InputError(f"galaxy index {index} is out of range: the file holds {n} spectra")
    wavelength, w = out["wavelength"], float(out["sf_fraction"][index])
    sf_part = w * out["sf_spectrum"][index]
    agn_part = (1.0 - w) * out["agn_spectrum"][index]
    reconstruction = sf_part + agn_part
    observed = reconstruction - out["residual"][index]  # residual = reconstruction - input

    figure = new_figure((13, 6))
    grid = figure.add_gridspec(2, 2, width_ratios=(2.3, 1), height_ratios=(3, 1))
    ax_spec = figure.add_subplot(grid[0, 0])
    ax_res = figure.add_subplot(grid[1, 0], sharex=ax_spec)
    ax_bpt = figure.add_subplot(grid[:, 1])

    ax_spec.plot(wavelength, observed, color=COLORS["composite"], lw=0.8, label="input (normalised)")
    ax_spec.plot(wavelength, sf_part, color=COLORS["sf"], lw=0.8, label=f"SF part x {w:.2f}")
    ax_spec.plot(wavelength, agn_part, color=COLORS["agn"], lw=0.8, label=f"AGN part x {1 - w:.2f}")
    ax_spec.plot(wavelength, reconstruction, color=COLORS["model"], lw=0.8, ls="--", label="sum")
    ax_spec.set(title=f"Galaxy {index}: SF fraction {w:.2f}", ylabel="normalised flux")
    ax_spec.legend(loc="upper right", fontsize=8)
    ax_res.plot(wavelength, out["residual"][index], color=COLORS["composite"], lw=0.6)
    ax_res.axhline(0.0, color=COLORS["model"], lw=0.8)
    ax_res.set(title="Residual (reconstruction - input)", xlabel=r"rest wavelength ($\AA$)")

    draw_nii_lines(ax_bpt)
    ratios = out["line_ratios"][index]
    points = {name: (ratios[i, NII_HA], ratios[i, OIII_HB]) for i, name in enumerate(("composite", "sf", "agn"))}
    for name in ("sf", "agn"):
        ax_bpt.annotate("", xy=points[name], xytext=points["composite"],
                        arrowprops={"arrowstyle": "->", "color": COLORS[name], "lw": 1})
    for name, label in (("composite", "composite"), ("sf", "SF part"), ("agn", "AGN part")):
        ax_bpt.scatter(*points[name], color=COLORS[name], s=40, zorder=3, label=label)
    ax_bpt.set_title("[NII] BPT")
    ax_bpt.legend(loc="lower left", fontsize=8)
    return figure


def _bpt_panel(ax, x, y, draw_lines, title: str) -> None:
    """Composites (points, or a density when many) and each one's shift to its AGN part."""
    draw_lines(ax)
    finite = np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1)
    x, y = x[finite], y[finite]
    n = len(x)
    segments = np.stack([np.stack([x[:, COMPOSITE], y[:, COMPOSITE]], -1), np.stack([x[:, AGN], y[:, AGN]], -1)], 1)
    alpha = 0.6 if n <= DENSITY_THRESHOLD else max(0.03, 0.6 * DENSITY_THRESHOLD / n)
    ax.add_collection(LineCollection(segments, colors=COLORS["agn"], linewidths=0.6, alpha=alpha,
                                     label="shift to AGN part"))
    if n > DENSITY_THRESHOLD:
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        # vmin below one count: a single galaxy's cell is grey, not white over the curves
        ax.hexbin(x[:, COMPOSITE], y[:, COMPOSITE], gridsize=40, extent=(x0, x1, y0, y1), mincnt=1,
                  cmap="Greys", norm=LogNorm(vmin=0.3), zorder=1)
    else:
        ax.scatter(x[:, COMPOSITE], y[:, COMPOSITE], color=COLORS["composite"], s=10, zorder=3, label="composite")
    ax.scatter(x[:, AGN], y[:, AGN], color=COLORS["agn"], s=4, zorder=3, label="AGN part")
    ax.set_title(f"{title} ({n} galaxies)")
    ax.legend(loc="lower left", fontsize=8)


def bpt_figure(out: dict) -> Figure:
    """[NII] and [SII] BPT diagrams of a batch with each galaxy's composite -> AGN-part shift."""
    ratios = out["line_ratios"]
    figure = new_figure((12, 5.5))
    ax_nii, ax_sii = figure.subplots(1, 2)
    _bpt_panel(ax_nii, ratios[..., NII_HA], ratios[..., OIII_HB], draw_nii_lines, "[NII] BPT")
    _bpt_panel(ax_sii, ratios[..., SII_HA], ratios[..., OIII_HB], draw_sii_lines, "[SII] BPT")
    return figure


def plot_decomposition(out: dict, output_dir, indices=None) -> list[Path]:
    """Write `spectrum_<i>.png` for each index (default: the first three) and `bpt.png` of a
    decomposition's arrays (`decompose`'s outputs, or `load_decomposition`'s)."""
    check_decomposition(out, "the decomposition")
    n = out["sf_fraction"].shape[0]
    indices = range(min(n, 3)) if indices is None else indices
    output_dir = Path(output_dir)
    written = [save_png(spectrum_figure(out, i), output_dir / f"spectrum_{i}.png") for i in indices]
    written.append(save_png(bpt_figure(out), output_dir / "bpt.png"))
    return written


def fraction_figure(data: dict[str, np.ndarray], out: dict[str, np.ndarray]):
    """Recovered against true SF fraction of the held-out composites."""
    figure = new_figure((5, 5))
    ax = figure.subplots()
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect")
    ax.scatter(data["true_sf_fraction"], out["sf_fraction"], s=8, color="tab:blue", label="held-out composite")
    ax.set(xlim=(0, 1), ylim=(-0.02, 1.02), xlabel="true SF fraction", ylabel="recovered SF fraction",
           title="SF fraction of held-out composites")
    ax.legend(loc="upper left", fontsize=8)
    return figure


def evaluation_figure(arrays: dict[str, np.ndarray]) -> Figure:
    """`evaluate`'s figure: recovered against true SF fraction of synthetic and real composites, and
    the composite line ratios against the measured ones on real spectra (gated ones filled)."""
    figure = new_figure((14, 4.6))
    fraction, *ratios = figure.subplots(1, 3)
    fraction.plot([0, 1], [0, 1], "k--", lw=1)
    fraction.scatter(arrays["synthetic_true_sf_fraction"], arrays["synthetic_sf_fraction"], s=6, alpha=0.5,
                     color="tab:blue", label="held-out synthetic composite")
    fraction.scatter(arrays["real_composite_true_sf_fraction"], arrays["real_composite_sf_fraction"], s=24,
                     marker="D", color="tab:red", label="real composite")
    fraction.set(xlim=(0, 1), ylim=(-0.02, 1.02), xlabel="true SF fraction", ylabel="recovered SF fraction",
                 title="SF fraction")
    fraction.legend(loc="upper left", fontsize=8)
    gated = arrays["real_passes_gate"].astype(bool)
    for ax, k, label in zip(ratios, (0, 1), ("log [NII]6584/Halpha", "log [OIII]5007/Hbeta")):
        measured = arrays["real_ratio_measured"][:, k]
        x, y = arrays["real_measured_ratios"][:, k], arrays["real_predicted_ratios"][:, k]
        ax.plot([-1.5, 1.5], [-1.5, 1.5], "k--", lw=1)
        ax.scatter(x[measured & gated], y[measured & gated], color="tab:green", label="passes the gate")
        ax.scatter(x[measured & ~gated], y[measured & ~gated], facecolors="none", edgecolors="tab:gray",
                   label="fails the gate")
        ax.set(xlim=(-1.5, 1.5), ylim=(-1.5, 1.5), xlabel=f"measured {label}", ylabel=f"CNN composite {label}",
               title=f"real spectra: {label}")
        ax.legend(loc="upper left", fontsize=8)
    return figure


PREPARED_WINDOWS = ((4800.0, 5060.0), (6250.0, 6400.0), (6470.0, 6790.0))  # the line fit's, Angstrom


def prepared_figure(arrays: dict, index: int) -> Figure:
    """The fits of one prepared spectrum (`prepare`'s arrays): the whole spectrum with the
    stellar continuum and the lines, the three line windows with the residual, and the verdicts."""
    wavelength = arrays["wavelength"]
    flux, stars, gas = arrays["flux"][index], arrays["continuum"][index], arrays["line_model"][index]
    measured = arrays["mask"][index] == 0
    figure = new_figure((13, 7.5))
    grid = figure.add_gridspec(2, 3, height_ratios=(1.1, 1))
    whole = figure.add_subplot(grid[0, :])
    whole.plot(wavelength, np.where(measured, flux, np.nan), color=COLORS["composite"], lw=0.6, label="spectrum")
    whole.plot(wavelength, stars, color=COLORS["sf"], lw=0.8, label="stellar continuum (BC03 templates)")
    whole.plot(wavelength, stars + gas, color=COLORS["agn"], lw=0.6, ls="--", label="continuum + lines")
    whole.set(xlabel=r"rest wavelength ($\AA$)", ylabel="flux density")
    whole.legend(loc="upper right", fontsize=8)
    verdict = ("passes the gate" if arrays["passes_gate"][index] else
               "fails the gate: " + ", ".join(reason for reason, failed in (
                   ("S/N", not arrays["meets_snr"][index]), ("fit", not arrays["line_fit_ok"][index]),
                   ("broad Balmer", arrays["broad_balmer"][index])) if failed))
    value = {key: arrays[key][index] for key in ("z", "stellar_velocity", "stellar_sigma", "continuum_rchi2",
                                                  "line_velocity", "line_sigma", "line_fit_rchi2", "log_nii_ha",
                                                  "log_oiii_hb")}
    whole.set_title(f"{arrays['ids'][index]} (z = {value['z']:.4f}): {verdict}\n"
                    f"stars {value['stellar_velocity']:.0f} km/s, sigma {value['stellar_sigma']:.0f} km/s, "
                    f"rchi2 {value['continuum_rchi2']:.2f}; gas {value['line_velocity']:.0f} km/s, "
                    f"sigma {value['line_sigma']:.0f} km/s, rchi2 {value['line_fit_rchi2']:.2f}; "
                    f"log [NII]/Ha {value['log_nii_ha']:.2f}, log [OIII]/Hb {value['log_oiii_hb']:.2f}", fontsize=9)
    snr = dict(zip(arrays["line_names"], arrays["line_snr"][index]))
    for column, (low, high) in enumerate(PREPARED_WINDOWS):
        ax = figure.add_subplot(grid[1, column])
        inside = (wavelength >= low) & (wavelength <= high)
        ax.plot(wavelength[inside], np.where(measured, flux, np.nan)[inside], color=COLORS["composite"], lw=0.8)
        ax.plot(wavelength[inside], stars[inside], color=COLORS["sf"], lw=0.8)
        ax.plot(wavelength[inside], (stars + gas)[inside], color=COLORS["agn"], lw=0.8, ls="--")
        ax.plot(wavelength[inside], (flux - stars - gas)[inside], color=COLORS["model"], lw=0.6, label="residual")
        ax.axhline(0.0, color=COLORS["model"], lw=0.5)
        names = [n for n in arrays["line_names"] if low <= EMISSION_LINES[n] <= high]
        ax.set_title(", ".join(f"{n} S/N {snr[n]:.0f}" for n in names), fontsize=8)
        ax.set_xlabel(r"rest wavelength ($\AA$)")
    return figure


def plot_prepared(arrays: dict, output_dir) -> list[Path]:
    """`prepared_figure` of every spectrum, as output_dir/<id>.png (characters other than letters,
    digits, '.', '-' and '_' in the id become '_')."""
    output_dir = Path(output_dir)
    written = []
    for index, spectrum_id in enumerate(arrays["ids"]):
        name = re.sub(r"[^A-Za-z0-9._-]", "_", str(spectrum_id))
        written.append(save_png(prepared_figure(arrays, index), output_dir / f"{name}.png"))
    return written
