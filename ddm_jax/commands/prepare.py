"""`ddm-jax prepare INPUT... -o PREPARED.npz`: SDSS spec files or plain arrays to a checked DDM input."""

from __future__ import annotations

import argparse

from ddm_jax.model import bpt
from ddm_jax.prepare import pipeline
from ddm_jax.spectra.instrument import RESOLUTIONS
from ddm_jax.spectra.resample import COVERAGE_POLICIES


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "prepare", help="survey spectra -> rest-frame grid, stellar continuum and line fits, gate",
        description="Read SDSS spec-*.fits, DESI coadd-*.fits (redshifts from the redrock-*.fits beside "
                    "them), MaNGA LOGCUBE/LOGRSS and DAP test-spectra files, or plain arrays (.npy, .npz, "
                    ".csv; files or directories), resample them to the DDM's rest-frame grid, fit the "
                    "stellar continuum with BC03 population templates and the emission lines on what it "
                    "leaves, apply the gate (S/N > 8 in the BPT lines, an acceptable fit, no broad Balmer "
                    "lines) and write PREPARED.npz. Bad files are reported and left out.",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="files or directories")
    parser.add_argument("-o", "--output", required=True, metavar="PREPARED.npz",
                        help="PREPARED.npz, or PREPARED.fits: a FITS catalogue with provenance (docs/fits.md)")
    parser.add_argument("--coverage", choices=COVERAGE_POLICIES, default="refuse",
                        help="spectra not covering all of 3700-8114 A rest frame: skip them (refuse, "
                             "the default) or fill the missing bins, flagged in `mask` (fill)")
    parser.add_argument("--snr-policy", choices=pipeline.SNR_POLICIES, default="skip",
                        help="spectra failing the gate (S/N <= 8 in a required line, a fit that does not "
                             "describe the data, broad Balmer lines): skip them (default) or keep them with "
                             "passes_gate = False and the reason in meets_snr, line_fit_ok, broad_balmer (warn)")
    parser.add_argument("--max-filled", type=float, default=pipeline.MAX_FILLED_SHARE, metavar="SHARE",
                        help="the gate refuses spectra with more than this share of interpolated (FILLED) bins "
                             f"(default {pipeline.MAX_FILLED_SHARE:g}), and any whose filled bins touch a line "
                             "it requires")
    parser.add_argument("--z", type=float, default=None,
                        help="redshift for every input (replaces the SPECOBJ / SPALL / spSpec header / redrock / "
                             "Z-HDU redshift)")
    parser.add_argument("--z-table", metavar="CSV", default=None,
                        help="CSV with header id,z[,ebv]: redshift (and Galactic E(B-V)) by spectrum id, or by "
                             "the part before '#' (e.g. a MaNGA plateifu) for every spectrum of a file")
    parser.add_argument("--ebv", type=float, default=None, metavar="E(B-V)",
                        help="Galactic E(B-V) (mag) for the spectra whose file (MaNGA EBVGAL, DESI FIBERMAP EBV) and "
                             "--z-table (an ebv column) give none; removed with F99, R_V = 3.1. Default: none (0)")
    parser.add_argument("--resolution", choices=RESOLUTIONS, default="manga",
                        help="convolve each spectrum to MaNGA's resolution, what the DDM was trained on, where "
                             "its instrument is sharper (manga, the default), or leave it as observed (native)")
    parser.add_argument("--plot", metavar="DIR", default=None,
                        help="also draw each written spectrum's continuum and line fits as DIR/<id>.png")
    parser.add_argument("--bpt-scheme", choices=bpt.SCHEMES, default="standard")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    pipeline.run(args.inputs, args.output, coverage=args.coverage, snr_policy=args.snr_policy,
                z=args.z, z_table=args.z_table, scheme=args.bpt_scheme, plot_dir=args.plot, ebv=args.ebv,
                resolution=args.resolution, max_filled=args.max_filled)
    return 0
