"""`ddm-jax report`: one self-contained HTML page for a decompose run."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "report", help="write one self-contained HTML page for a decompose run",
        description="The run's provenance, [NII] and [SII] BPT diagrams of every spectrum (SF fraction as colour, "
                    "with each composite's shift to its SF and AGN parts), the SF-fraction histogram, the trust "
                    "flags and a section per spectrum (the first N) with its decomposition figure. Figures are "
                    "embedded: the page opens offline, alone. Of a survey only the per-spectrum numbers and the "
                    "first N spectra are read.")
    parser.add_argument("decomposition", metavar="OUT",
                        help="a decompose output: OUT.npz, an output folder, or a FITS catalogue")
    parser.add_argument("-o", "--output", help="the HTML file (default: OUT's name + _report.html, beside it)")
    parser.add_argument("--spectra", type=int, metavar="N",
                        help="per-spectrum sections for the first N rows (default 20, report.DEFAULT_SPECTRA; 0: none)")
    parser.add_argument("--title", help="the page's title (default: 'ddm-jax report: ' + OUT's name)")
    parser.set_defaults(run=run)


def run(args) -> int:
    from ddm_jax.report.html import write_report

    print(write_report(args.decomposition, args.output, n_spectra=args.spectra, title=args.title))
    return 0
