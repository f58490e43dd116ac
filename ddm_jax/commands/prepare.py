"""`ddm-jax prepare INPUT... -o PREPARED.npz`: SDSS spec files or plain arrays to a checked DDM input."""

from __future__ import annotations

import argparse

from ddm_jax import bpt
from ddm_jax.prepare import pipeline


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "prepare", help="SDSS spec-*.fits or plain arrays -> rest-frame grid, line fluxes, S/N gate",
        description="Read SDSS spec-*.fits files or plain arrays (.npy, .npz, .csv; files or directories), "
                    "resample them to the DDM's rest-frame grid, measure the BPT lines, apply the S/N > 8 "
                    "gate and write PREPARED.npz. Bad files are reported and left out.",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="files or directories")
    parser.add_argument("-o", "--output", required=True, metavar="PREPARED.npz")
    parser.add_argument("--coverage", choices=pipeline.COVERAGE_POLICIES, default="refuse",
                        help="spectra not covering all of 3700-8114 A rest frame: skip them (refuse, "
                             "the default) or fill the missing bins, flagged in `mask` (fill)")
    parser.add_argument("--snr-policy", choices=pipeline.SNR_POLICIES, default="skip",
                        help="spectra with S/N <= 8 in a required line: skip them (default) or keep them "
                             "with meets_snr = False (warn)")
    parser.add_argument("--z", type=float, default=None,
                        help="redshift for every input (replaces the SDSS SPECOBJ redshift)")
    parser.add_argument("--z-table", metavar="CSV", default=None,
                        help="CSV with header id,z: redshift per spectrum id (file name without suffix)")
    parser.add_argument("--bpt-scheme", choices=bpt.SCHEMES, default="standard")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    pipeline.run(args.inputs, args.output, coverage=args.coverage, snr_policy=args.snr_policy,
                z=args.z, z_table=args.z_table, scheme=args.bpt_scheme)
    return 0
