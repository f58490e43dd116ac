"""`ddm-jax plot`: PNG figures of a decompose output file."""

from __future__ import annotations

from pathlib import Path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "plot", help="draw figures of a decompose output (.npz or .fits) as PNG",
        description="Per galaxy: the input, the SF and AGN parts scaled by their fractions, the residual and "
                    "its [NII] BPT points. For the batch: [NII] and [SII] BPT diagrams with each galaxy's "
                    "shift from composite to AGN part.")
    parser.add_argument("decomposition", help="OUT.npz or OUT.fits written by `ddm-jax decompose`")
    parser.add_argument("-o", "--output-dir", help="folder for the PNGs (default: OUT_figures next to OUT.npz)")
    parser.add_argument("--index", type=int, action="append",
                        help="galaxy to draw (repeatable; default: the first three)")
    parser.set_defaults(run=run)


def run(args) -> int:
    from ddm_jax.report.plotting import load_decomposition, plot_decomposition

    source = Path(args.decomposition)
    output_dir = Path(args.output_dir) if args.output_dir else source.with_name(f"{source.stem}_figures")
    for path in plot_decomposition(load_decomposition(source), output_dir, args.index):
        print(path)
    return 0
