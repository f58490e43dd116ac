"""`ddm-jax merge`: join the per-host output folders of a multi-host `decompose` run."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("merge", help="merge the output folders of a multi-host decompose run",
                                   description="Concatenate OUT.share0ofN ... OUT.share{N-1}ofN (any order) "
                                               "into one output folder, or into a FITS catalogue if the output "
                                               "ends in .fits; checks they come from one job and cover every "
                                               "row once.")
    parser.add_argument("parts", nargs="+", help="the share folders")
    parser.add_argument("-o", "--output", required=True, help="merged output folder, or OUT.fits (docs/fits.md)")
    parser.set_defaults(run=run)


def run(args) -> int:
    from ddm_jax.inference.streaming import merge_folders

    print(f"merged {len(args.parts)} shares -> {merge_folders(args.parts, args.output)}")
    return 0
