"""`ddm-jax export OUT -o FILE`: a decompose or prepare output as a FITS catalogue, or back to .npz."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="write a decompose/prepare output as a FITS catalogue (or an .npz)",
        description="Read OUT (an .npz, a decompose output folder of any size, or a .fits catalogue) and write "
                    "FILE: a .fits catalogue (provenance header, a table of per-spectrum numbers, spectra as "
                    "images with a wavelength WCS, MaNGA maps; written a block of rows at a time, so a folder "
                    "larger than memory exports too) or an .npz (all in memory). See docs/fits.md.")
    parser.add_argument("output_in", metavar="OUT", help="decompose/prepare output: .npz, folder or .fits")
    parser.add_argument("-o", "--output", required=True, metavar="FILE", help="FILE.fits or FILE.npz")
    parser.set_defaults(run=run)


def run(args) -> int:
    from ddm_jax.io.outputs.files import export

    print(f"exported {args.output_in} -> {export(args.output_in, args.output)}")
    return 0
