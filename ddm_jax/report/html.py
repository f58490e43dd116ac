"""`ddm-jax report`: one self-contained HTML page for a decompose run (a survey or a single galaxy).

The page holds the run's provenance, the [NII] and [SII] BPT diagrams of every spectrum (composites
coloured by SF fraction, with their shifts to the SF and AGN parts), the SF-fraction histogram, the
trust flags and a section per spectrum (the first N) with its decomposition figure. Figures are PNGs
embedded as data URIs and the style sheet is inline: the file opens anywhere, offline, with no script.

The run is read through `io.outputs.open_output` (an OUT.npz, an output folder or a FITS catalogue) a
block of rows at a time: of a survey of any size only the per-spectrum numbers and the first N
spectra are read.

    write_report("survey_ddm/", "survey_ddm_report.html", n_spectra=20)
"""

from __future__ import annotations

import base64
import datetime
import html
import io
from pathlib import Path

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from ddm_jax import __version__
from ddm_jax.constants import NII_HA, OIII_HB, SII_HA
from ddm_jax.errors import InputError
from ddm_jax.io.outputs.files import open_output
from ddm_jax.io.safe import write_text_atomic
from ddm_jax.model.bpt import CLASS_NAMES
from ddm_jax.report.plotting import (
    AGN,
    COLORS,
    COMPOSITE,
    DENSITY_THRESHOLD,
    SF,
    draw_nii_lines,
    draw_sii_lines,
    new_figure,
    spectrum_figure,
)
from ddm_jax.schema import FIGURE_KEYS, GATE_KEYS, PART_LABELS, TRUST_KEYS

DEFAULT_SPECTRA = 20
BLOCK_ROWS = 65_536  # rows read at a time: a survey's line ratios never load whole
SPECTRA_BLOCK = 16  # spectra read (and drawn) at a time
SHIFT_SAMPLE = 300  # above DENSITY_THRESHOLD spectra, the shifts of this many (a fixed random sample) are drawn
DENSITY_BINS = 60  # per axis of the mean-SF-fraction map of a large survey
FRACTION_CMAP = "coolwarm_r"  # SF fraction 1 blue, 0 red: the colours of the SF and AGN parts
DPI = 80  # smaller than plotting.DPI: a page of twenty figures stays a few MB
FIGURE_KEYS = tuple(key for key in FIGURE_KEYS if key != "wavelength")  # spectrum_figure's
BPT_QUANTITIES = (NII_HA, OIII_HB, SII_HA)  # the line_ratios columns the BPT diagrams use, in this order
PARTS = tuple(PART_LABELS.values())  # axis 1 of line_ratios and bpt_class
STYLE = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 1150px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0; } td, th { border: 1px solid #ccc; padding: 0.2em 0.6em; }
th { background: #f3f3f3; text-align: left; }
img { max-width: 100%; height: auto; display: block; margin: 0.6em 0; }
.notice { background: #fff4d6; border-left: 4px solid #e0a400; padding: 0.5em 0.8em; }
section.spectrum { border-top: 1px dashed #bbb; margin-top: 1.2em; }
nav a { margin-right: 1em; } footer { color: #777; font-size: 0.85em; margin-top: 2em; }
"""


def default_report_path(source) -> Path:
    """OUT's name + `_report.html`, beside it (a file loses its suffix, a folder keeps its whole name)."""
    source = Path(source)
    stem = source.with_suffix("") if source.is_file() else source
    return stem.with_name(stem.name + "_report.html")


def write_report(source, html_path=None, n_spectra: int | None = None, title: str | None = None) -> Path:
    """Write the report of the decompose output `source` to `html_path` (default: `default_report_path`),
    with sections for the first `n_spectra` (default DEFAULT_SPECTRA), atomically: an existing page stays as
    it was unless the new one is complete. Returns the path."""
    n_spectra = DEFAULT_SPECTRA if n_spectra is None else n_spectra
    source = Path(source)
    html_path = default_report_path(source) if html_path is None else Path(html_path)
    if html_path.resolve() == source.resolve():
        raise InputError(f"{html_path}: is the output being reported on; give another name")
    with open_output(source) as reader:
        page = render_report(reader, str(source), n_spectra, title or f"ddm-jax report: {source.name}")
    return write_text_atomic(html_path, page)


def render_report(reader, source: str, n_spectra: int, title: str) -> str:
    """The page of a reader (`io.outputs.open_output`'s interface) as one HTML string."""
    if n_spectra < 0:
        raise InputError(f"the number of spectra to show must be 0 or more, got {n_spectra}")
    if "sf_fraction" not in reader.keys:
        raise InputError(f"{source}: not a decompose output (no sf_fraction)")
    if reader.rows == 0:
        raise InputError(f"{source}: holds no spectra")
    columns = read_columns(reader)
    count = min(n_spectra, reader.rows)
    sections = {
        "provenance": ("Provenance", provenance_section(reader, source)),
        "classes": ("BPT classes", classes_section(columns)),
        "bpt": ("BPT diagrams", bpt_section(columns)),
        "sf-fraction": ("SF fraction", fraction_section(columns)),
        "trust": ("Trust", trust_section(columns)),
        "spectra": (f"Spectra (the first {count} of {reader.rows})", spectra_section(reader, count)),
    }
    return page(title, sections)


def read_columns(reader) -> dict[str, np.ndarray]:
    """The per-spectrum numbers of the whole run: sf_fraction, `bpt_ratios` (B, 3, 3) = line_ratios'
    [NII]/Hα, [OIII]/Hβ, [SII]/Hα of (composite, SF part, AGN part), bpt_class and the trust and gate
    flags present."""
    wanted = ("sf_fraction", "bpt_class", *TRUST_KEYS, *GATE_KEYS)
    columns = {key: read_blocks(reader, key) for key in wanted if key in reader.keys}
    if "line_ratios" in reader.keys:
        columns["bpt_ratios"] = read_blocks(reader, "line_ratios", (slice(None), slice(None), list(BPT_QUANTITIES)))
    return columns


def read_blocks(reader, key: str, pick=()) -> np.ndarray:
    """All rows of `key`, read BLOCK_ROWS at a time, each block cut down to `pick` (an index) first."""
    return np.concatenate([reader.read(key, lo, min(lo + BLOCK_ROWS, reader.rows))[pick]
                           for lo in range(0, reader.rows, BLOCK_ROWS)])


# HTML pieces. Every string that comes from the file passes through `escape`.

def escape(value) -> str:
    return html.escape(str(value), quote=True)


def table(header, rows) -> str:
    head = "<tr>" + "".join(f"<th>{escape(name)}</th>" for name in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{escape(value)}</td>" for value in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def paragraph(words: str, notice: bool = False) -> str:
    return f'<p class="notice">{escape(words)}</p>' if notice else f"<p>{escape(words)}</p>"


def image(figure: Figure, alt: str) -> str:
    """The figure as an <img> with the PNG inside the page (a data URI)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{encoded}">'


def with_percent(count: int, total: int) -> str:
    return f"{count} ({100 * count / total:.1f} %)" if total else "0"


def number(value, digits: int = 3) -> str:
    return "NaN" if not np.isfinite(value) else f"{value:.{digits}g}"


def page(title: str, sections: dict[str, tuple[str, str]]) -> str:
    nav = "".join(f'<a href="#{anchor}">{escape(heading)}</a>' for anchor, (heading, _) in sections.items())
    body = "".join(f'<section id="{anchor}"><h2>{escape(heading)}</h2>{content}</section>'
                   for anchor, (heading, content) in sections.items())
    made = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n"
            f"<body><h1>{escape(title)}</h1><nav>{nav}</nav>\n{body}\n"
            f"<footer>Written by ddm-jax {escape(__version__)} on {made}.</footer></body></html>\n")


# The sections.

def provenance_section(reader, source: str) -> str:
    facts = [("output", source), ("spectra", reader.rows), ("keys", ", ".join(reader.keys))]
    recorded = list(reader.provenance.items())
    note = "" if recorded else paragraph("The file records no provenance (written by an older ddm-jax).", True)
    return table(None, facts + recorded) + note


def classes_section(columns) -> str:
    if "bpt_class" not in columns:
        return paragraph("The file has no bpt_class.", True)
    classes = columns["bpt_class"]
    rows = [[CLASS_NAMES[code]] + [with_percent(int((classes[:, part] == code).sum()), len(classes))
                                   for part in range(len(PARTS))] for code in sorted(CLASS_NAMES)]
    return paragraph("[NII]-BPT class of each input spectrum (the composite), its SF part and its AGN part.") + table(
        ("class", *PARTS), rows)


def bpt_section(columns) -> str:
    if "bpt_ratios" not in columns:
        return paragraph("The file has no line_ratios: no BPT diagram.", True)
    n = len(columns["sf_fraction"])
    how = (f"above {DENSITY_THRESHOLD} spectra, the composites are drawn as a map of their mean SF fraction and "
           f"the shifts of a fixed random sample of {min(SHIFT_SAMPLE, n)}" if n > DENSITY_THRESHOLD
           else "every composite is drawn")
    return (paragraph(f"Composites coloured by SF fraction, with lines to their SF part (blue) and AGN part "
                      f"(red); {how}.") + image(bpt_figure(columns["bpt_ratios"], columns["sf_fraction"]),
                                                "BPT diagrams"))


def bpt_figure(ratios: np.ndarray, sf_fraction: np.ndarray) -> Figure:
    """[NII] and [SII] BPT diagrams: composites coloured by SF fraction and their shifts to both parts.
    `ratios` is (B, 3, 3): [NII]/Hα, [OIII]/Hβ, [SII]/Hα of (composite, SF part, AGN part)."""
    figure = new_figure((13, 5.5))
    axes = figure.subplots(1, 2)
    panels = ((0, draw_nii_lines, "[NII] BPT"), (2, draw_sii_lines, "[SII] BPT"))
    for ax, (x, draw_lines, title) in zip(axes, panels):
        shading = _fraction_panel(ax, ratios[..., x], ratios[..., 1], sf_fraction, draw_lines, title)
    figure.colorbar(shading, ax=axes, label="SF fraction")
    return figure


def _fraction_panel(ax, x, y, sf_fraction, draw_lines, title: str):
    """One diagram; returns what the colour bar describes."""
    draw_lines(ax)
    finite = np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1) & np.isfinite(sf_fraction)
    x, y, w = x[finite], y[finite], sf_fraction[finite]
    n = len(x)
    shown = np.arange(n) if n <= DENSITY_THRESHOLD else np.sort(
        np.random.default_rng(0).choice(n, min(SHIFT_SAMPLE, n), replace=False))
    for part, name, label in ((SF, "sf", "SF part"), (AGN, "agn", "AGN part")):
        segments = np.stack([np.stack([x[shown, COMPOSITE], y[shown, COMPOSITE]], -1),
                             np.stack([x[shown, part], y[shown, part]], -1)], 1)
        ax.add_collection(LineCollection(segments, colors=COLORS[name], linewidths=0.5, alpha=0.35, zorder=2))
        ax.scatter(x[shown, part], y[shown, part], color=COLORS[name], s=5, zorder=2, label=label)
    if n > DENSITY_THRESHOLD:
        shading = _mean_fraction_map(ax, x[:, COMPOSITE], y[:, COMPOSITE], w)
        ax.set_title(f"{title} ({n} spectra; shifts of {len(shown)})")
    else:
        shading = ax.scatter(x[:, COMPOSITE], y[:, COMPOSITE], c=w, cmap=FRACTION_CMAP, vmin=0, vmax=1, s=24,
                             edgecolors="black", linewidths=0.4, zorder=3, label="composite")
        ax.set_title(f"{title} ({n} spectra)")
    ax.legend(loc="lower left", fontsize=8)
    return shading


def _mean_fraction_map(ax, x, y, w):
    """The mean SF fraction of the composites in each cell of a grid over the axes (empty cells blank)."""
    limits = (ax.get_xlim(), ax.get_ylim())
    counts, x_edges, y_edges = np.histogram2d(x, y, bins=DENSITY_BINS, range=limits)
    sums, _, _ = np.histogram2d(x, y, bins=DENSITY_BINS, range=limits, weights=w)
    mean = np.divide(sums, counts, out=np.full_like(sums, np.nan), where=counts > 0)
    return ax.pcolormesh(x_edges, y_edges, mean.T, cmap=FRACTION_CMAP, vmin=0, vmax=1, zorder=1)


def fraction_section(columns) -> str:
    w = columns["sf_fraction"]
    finite = w[np.isfinite(w)]
    stats = [("spectra", len(w)), ("mean", number(finite.mean()) if finite.size else "NaN"),
             ("median", number(np.median(finite)) if finite.size else "NaN"),
             ("SF fraction ≥ 0.5", with_percent(int((finite >= 0.5).sum()), len(w)))]
    return table(None, stats) + image(fraction_figure(w, columns.get("trusted")), "SF-fraction histogram")


def fraction_figure(sf_fraction: np.ndarray, trusted: np.ndarray | None) -> Figure:
    """Histogram of the SF fraction; the trusted spectra's beside all."""
    figure = new_figure((7, 3.6))
    ax = figure.subplots()
    bins = np.linspace(0.0, 1.0, 21)
    finite = np.isfinite(sf_fraction)
    ax.hist(sf_fraction[finite], bins=bins, color="0.7", label="all")
    if trusted is not None:
        ax.hist(sf_fraction[finite & trusted.astype(bool)], bins=bins, histtype="step", color="black", lw=1.5,
                label="trusted")
    ax.set(xlim=(0, 1), xlabel="SF fraction", ylabel="spectra", title=f"SF fraction ({finite.sum()} spectra)")
    ax.legend(loc="upper center", fontsize=8)
    return figure


def trust_section(columns) -> str:
    if "trusted" not in columns:
        return paragraph("The file has no trust flags (it was written before ddm-jax had them).", True)
    trusted = columns["trusted"].astype(bool)
    total, n_trusted = len(trusted), int(trusted.sum())
    parts = [table(("", "spectra"), [("trusted", with_percent(n_trusted, total)),
                                      ("not trusted", with_percent(total - n_trusted, total))])]
    scores = {key: columns[key] for key in ("ood_score", "reconstruction_chi2") if key in columns}
    if "ood_score" in scores and np.isnan(scores["ood_score"]).all():
        parts.append(paragraph("The checkpoint had no trust calibration: ood_score is NaN and no spectrum is "
                               "trusted. Calibrate it (ddm-jax calibrate) and decompose again to get trust "
                               "flags.", True))
    drawn = {key: values for key, values in scores.items() if (np.isfinite(values) & (values > 0)).any()}
    if scores:
        parts.append(table(("", "finite", "median", "99th percentile", "max"),
                           [(key, *score_summary(values)) for key, values in scores.items()]))
    if drawn:
        parts.append(image(trust_figure(drawn, trusted), "trust score distributions"))
    gates = [(key, with_percent(int(columns[key].astype(bool).sum()), total)) for key in GATE_KEYS if key in columns]
    if gates:
        parts.append(paragraph("prepare's gate, per spectrum (true counts):") + table(("flag", "true"), gates))
    return "".join(parts)


def score_summary(values: np.ndarray) -> tuple:
    finite = values[np.isfinite(values)]
    if not finite.size:
        return (0, "NaN", "NaN", "NaN")
    return (finite.size, number(np.median(finite)), number(np.percentile(finite, 99)), number(finite.max()))


def trust_figure(scores: dict[str, np.ndarray], trusted: np.ndarray) -> Figure:
    """Histograms of the finite trust scores on logarithmic bins, trusted and not trusted stacked."""
    figure = new_figure((5.5 * len(scores), 3.6))
    for ax, (key, values) in zip(np.atleast_1d(figure.subplots(1, len(scores))), scores.items()):
        finite = np.isfinite(values) & (values > 0)
        low, high = values[finite].min(), values[finite].max()
        bins = np.geomspace(low, high if high > low else low * 10, 31)
        ax.hist([values[finite & trusted], values[finite & ~trusted]], bins=bins, stacked=True,
                color=("tab:green", "tab:gray"), label=("trusted", "not trusted"))
        ax.set(xscale="log", xlabel=key, ylabel="spectra", title=f"{key} ({finite.sum()} positive, finite)")
        ax.legend(fontsize=8)
    return figure


# The facts of one spectrum: key, label, how it is written.
FACTS = (("z", "z", lambda v: f"{v:.5f}"), ("sf_fraction", "SF fraction", lambda v: f"{v:.3f}"),
         ("p_sf", "p_sf", lambda v: f"{v:.3f}"), ("p_agn", "p_agn", lambda v: f"{v:.3f}"),
         ("trusted", "trusted", lambda v: "yes" if v else "no"), ("ood_score", "ood_score", number),
         ("reconstruction_chi2", "reconstruction_chi2", number),
         ("passes_gate", "passes prepare's gate", lambda v: "yes" if v else "no"),
         ("measured_bpt_nii", "measured [NII]-BPT class", lambda v: CLASS_NAMES.get(int(v), str(v))))
FACT_KEYS = ("ids", "bpt_class", *(key for key, _, _ in FACTS))


def spectra_section(reader, count: int) -> str:
    """A section per spectrum for rows 0 .. count-1, read SPECTRA_BLOCK rows at a time."""
    if count == 0:
        return paragraph("No per-spectrum sections were asked for.")
    drawable = all(key in reader.keys for key in FIGURE_KEYS)
    note = "" if drawable else paragraph(
        f"The file lacks {', '.join(k for k in FIGURE_KEYS if k not in reader.keys)}: no decomposition figures.",
        True)
    sections = []
    for lo in range(0, count, SPECTRA_BLOCK):
        hi = min(lo + SPECTRA_BLOCK, count)
        rows = {key: reader.read(key, lo, hi) for key in (*FIGURE_KEYS, *FACT_KEYS) if key in reader.keys}
        if drawable:
            rows["wavelength"] = reader.wavelength
        sections += [spectrum_section(rows, i, lo + i, drawable) for i in range(hi - lo)]
    return note + "".join(sections)


def spectrum_section(rows: dict, index: int, row: int, drawable: bool) -> str:
    """Spectrum `index` of the block `rows` (row `row` of the run): its facts and decomposition figure."""
    name = f"row {row}" + (f": {rows['ids'][index]}" if "ids" in rows else "")
    facts = [(label, write(rows[key][index])) for key, label, write in FACTS if key in rows]
    if "bpt_class" in rows:
        facts += [(f"[NII]-BPT class, {part}", CLASS_NAMES.get(int(code), str(code)))
                  for part, code in zip(PARTS, rows["bpt_class"][index])]
    figure = ""
    if drawable:
        drawing = spectrum_figure(rows, index)
        # the row, not the index in the block; no id: a '$' in it would be read as mathtext
        drawing.axes[0].set_title(f"row {row}: SF fraction {rows['sf_fraction'][index]:.2f}")
        figure = image(drawing, f"decomposition of {name}")
    return f'<section class="spectrum" id="row-{row}"><h3>{escape(name)}</h3>{table(None, facts)}{figure}</section>'
